//! The lead: one accepted CSV row.

use serde::{Deserialize, Serialize};

use crate::text::is_blank;

/// A column of the upload that is not one of ours, kept with the lead.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attribute {
    pub name: String,
    pub value: String,
}

/// A validated lead. Empty fields are `""`: placeholders such as `N/A` were turned into `""` on the way in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lead {
    pub external_id: Option<String>,
    pub name: String,
    pub role: String,
    pub company: String,
    pub industry: String,
    pub location: String,
    pub linkedin_bio: String,
    pub attributes: Vec<Attribute>,
}

impl Lead {
    /// All six profile fields present: worth the completeness points.
    pub fn is_complete(&self) -> bool {
        [&self.name, &self.role, &self.company, &self.industry, &self.location, &self.linkedin_bio]
            .iter()
            .all(|f| !f.is_empty())
    }
}

/// Why a row cannot become a lead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeadError {
    #[error("name is required")]
    MissingName,
    #[error("a role or a company is required")]
    MissingRoleAndCompany,
}

impl LeadError {
    /// The column at fault, for error reports.
    pub fn column(&self) -> &'static str {
        match self {
            LeadError::MissingName => "name",
            LeadError::MissingRoleAndCompany => "role",
        }
    }
}

/// The raw cells of one row, by field.
#[derive(Debug, Clone, Default)]
pub struct LeadRow<'a> {
    pub external_id: Option<&'a str>,
    pub name: &'a str,
    pub role: &'a str,
    pub company: &'a str,
    pub industry: &'a str,
    pub location: &'a str,
    pub linkedin_bio: &'a str,
    pub attributes: Vec<(&'a str, &'a str)>,
}

impl LeadRow<'_> {
    /// Turns raw cells into a lead: trims, blanks placeholders, removes control characters (NUL and friends
    /// break databases and terminals), and checks that the row names someone we can score.
    pub fn parse(&self) -> Result<Lead, LeadError> {
        let lead = Lead {
            external_id: Some(clean(self.external_id.unwrap_or(""))).filter(|s| !s.is_empty()),
            name: clean(self.name),
            role: clean(self.role),
            company: clean(self.company),
            industry: clean(self.industry),
            location: clean(self.location),
            linkedin_bio: clean(self.linkedin_bio),
            attributes: self
                .attributes
                .iter()
                .map(|(name, value)| Attribute { name: (*name).to_owned(), value: clean(value) })
                .collect(),
        };
        if lead.name.is_empty() {
            Err(LeadError::MissingName)
        } else if lead.role.is_empty() && lead.company.is_empty() {
            Err(LeadError::MissingRoleAndCompany)
        } else {
            Ok(lead)
        }
    }
}

fn clean(cell: &str) -> String {
    let cell = cell.trim();
    if is_blank(cell) {
        return String::new();
    }
    if cell.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        let kept: String = cell.chars().filter(|c| !c.is_control() || *c == '\n' || *c == '\t').collect();
        return kept.trim().to_owned();
    }
    cell.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(name: &'a str, role: &'a str, company: &'a str) -> LeadRow<'a> {
        LeadRow {
            name,
            role,
            company,
            industry: "SaaS",
            location: "Berlin",
            linkedin_bio: "bio",
            ..Default::default()
        }
    }

    #[test]
    fn needs_a_name_and_a_role_or_company() {
        assert!(row("Ann", "CEO", "").parse().is_ok());
        assert!(row("Ann", "", "Acme").parse().is_ok());
        assert_eq!(row(" ", "CEO", "Acme").parse(), Err(LeadError::MissingName));
        assert_eq!(row("N/A", "CEO", "Acme").parse(), Err(LeadError::MissingName));
        assert_eq!(row("Ann", "n/a", "-").parse(), Err(LeadError::MissingRoleAndCompany));
    }

    #[test]
    fn placeholders_cost_completeness() {
        let mut r = row("Ann", "CEO", "Acme");
        assert!(r.parse().expect("ok").is_complete());
        r.location = "N/A";
        let lead = r.parse().expect("ok");
        assert_eq!(lead.location, "");
        assert!(!lead.is_complete());
    }

    #[test]
    fn strips_control_characters_and_trims() {
        let lead = row(" A\u{0}nn\u{7} ", "CEO\r", "Acme").parse().expect("ok");
        assert_eq!(lead.name, "Ann");
        assert_eq!(lead.role, "CEO");
    }
}
