//! Role relevance: decision maker (+20), influencer (+10), from the role tables in `data/`.

use std::sync::LazyLock;

use serde::Serialize;

use crate::phrase::{PhraseTable, sections};
use crate::text::words;

/// How much buying authority a title suggests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleClass {
    Influencer,
    DecisionMaker,
}

/// What a phrase of the role table means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoleTerm {
    Class(RoleClass),
    /// Covers its words so that nothing inside it matches ("lead generation").
    Mask,
    /// The part is not the person's own senior role ("assistant to", "former").
    Void,
    /// Turns the next decision-maker phrase into an influencer ("associate director").
    Demoter,
}

pub(crate) const ROLE_FILES: [&str; 2] =
    [include_str!("../../data/role_terms.txt"), include_str!("../../data/role_terms_intl.txt")];

pub(crate) fn term_of_section(section: &str) -> RoleTerm {
    match section {
        "decision_maker" => RoleTerm::Class(RoleClass::DecisionMaker),
        "influencer" => RoleTerm::Class(RoleClass::Influencer),
        "none" => RoleTerm::Mask,
        "void" => RoleTerm::Void,
        "demoter" => RoleTerm::Demoter,
        other => panic!("unknown section [{other}] in a role data file"),
    }
}

static ROLE_TABLE: LazyLock<PhraseTable<RoleTerm>> = LazyLock::new(|| {
    let mut table = PhraseTable::default();
    for file in ROLE_FILES {
        for (section, entries) in sections(file) {
            let term = term_of_section(section);
            for entry in entries {
                table.insert(entry, term);
            }
        }
    }
    table
});

/// The class a title earns and the phrase that earned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMatch {
    pub class: RoleClass,
    /// The title's words that matched, e.g. `vice president`.
    pub matched: String,
}

/// Classifies a job title. The title is split into parts at `& | , / ;` and similar separators; each part is
/// read left to right taking the longest table phrase at each word; the highest class over all parts wins.
pub fn classify_role(title: &str) -> Option<RoleMatch> {
    title.split(['&', '|', ',', '/', ';', '•', '·', '+']).filter_map(classify_part).max_by_key(|m| m.class)
}

fn classify_part(part: &str) -> Option<RoleMatch> {
    let words = words(part);
    let mut best: Option<RoleMatch> = None;
    let mut demote_next = false;
    let mut at = 0;
    while at < words.len() {
        let Some((len, term)) = ROLE_TABLE.longest_at(&words, at) else {
            at += 1;
            continue;
        };
        let class = match *term {
            // Nothing after "former", "assistant to", "intern" ... describes the person's own role.
            RoleTerm::Void => break,
            RoleTerm::Mask => None,
            RoleTerm::Demoter => {
                demote_next = true;
                at += len;
                continue;
            }
            RoleTerm::Class(RoleClass::DecisionMaker) if demote_next => Some(RoleClass::Influencer),
            RoleTerm::Class(class) => Some(class),
        };
        if let Some(class) = class
            && best.as_ref().is_none_or(|b| class > b.class)
        {
            best = Some(RoleMatch { class, matched: words[at..at + len].join(" ") });
        }
        demote_next = false;
        at += len;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const DM: Option<RoleClass> = Some(RoleClass::DecisionMaker);
    const INF: Option<RoleClass> = Some(RoleClass::Influencer);

    fn class(title: &str) -> Option<RoleClass> {
        classify_role(title).map(|m| m.class)
    }

    #[test]
    fn titles_of_the_original_examples() {
        let cases = [
            ("CEO", DM),
            ("CTO", DM),
            ("VP of Sales", DM),
            ("Director", DM),
            ("Founder", DM),
            ("Head of Marketing", DM),
            ("Head of Sales", DM),
            ("Owner", DM),
            ("Manager", INF),
            ("Lead", INF),
            ("Architect", INF),
            ("Senior", INF),
            ("Analyst", None),
        ];
        for (title, want) in cases {
            assert_eq!(class(title), want, "{title}");
        }
    }

    #[test]
    fn substring_bugs_of_the_original_are_gone() {
        let cases = [
            // "dire-cto-r" must not be a CTO; it is a director on its own merit.
            ("Director of Engineering", DM),
            ("Directory Assistant", None),
            ("Lead Generation Specialist", None),
            ("Executive Assistant to the CEO", None),
            ("Founding Engineer", None),
            ("Associate Director", INF),
            ("Leadership Coach", None),
            ("Vice-President, Sales", DM),
            ("Account Executive", None),
            ("Product Owner", None),
            ("Chief of Staff to the CEO", None),
            ("Former CEO", None),
            ("ex-CTO, now Consultant", None),
            ("Marketing Intern", None),
            ("CEO (formerly VP at Google)", DM),
        ];
        for (title, want) in cases {
            assert_eq!(class(title), want, "{title}");
        }
    }

    #[test]
    fn precedence_between_several_matches() {
        let cases = [
            ("Senior Vice President", DM),
            ("Senior Manager", INF),
            ("Co-Founder & CEO", DM),
            ("Engineering Manager | Tech Lead", INF),
            ("Deputy Managing Director", INF),
            ("Assistant Vice President", INF),
            ("Associate Director / Founder", DM),
            ("Assistant Manager", INF),
            ("Senior Associate", INF),
            ("Lead Generation Manager", INF),
            ("Channel Partner Manager", INF),
            ("Managing Partner", DM),
        ];
        for (title, want) in cases {
            assert_eq!(class(title), want, "{title}");
        }
    }

    #[test]
    fn non_english_titles() {
        let cases = [
            ("Geschaeftsfuehrer", DM),
            ("Geschäftsführer", DM),
            ("GESCHÄFTSFÜHRERIN", DM),
            ("Directeur Commercial", DM),
            ("Directrice Marketing", DM),
            ("Director General", DM),
            ("Jefe de Ventas", DM),
            ("Gerente de Ventas", INF),
            ("Directeur Adjoint", INF),
            ("Stellvertretender Geschäftsführer", INF),
            ("Président-Directeur Général", DM),
            ("Praktikant Vertrieb", None),
        ];
        for (title, want) in cases {
            assert_eq!(class(title), want, "{title}");
        }
    }

    #[test]
    fn reports_the_phrase_that_matched() {
        let m = classify_role("Senior Vice-President of Sales").expect("a match");
        assert_eq!(m.matched, "vice president");
        assert_eq!(class(""), None);
    }

    /// Every entry of both role files does what its section says.
    #[test]
    fn every_role_table_entry() {
        for file in ROLE_FILES {
            for (section, entries) in sections(file) {
                for entry in entries {
                    let got = class(entry);
                    match term_of_section(section) {
                        RoleTerm::Class(want) => assert_eq!(got, Some(want), "[{section}] {entry}"),
                        RoleTerm::Mask => assert_eq!(got, None, "[{section}] {entry}"),
                        RoleTerm::Void => {
                            assert_eq!(class(&format!("{entry} CEO")), None, "[{section}] {entry} CEO");
                            assert_eq!(class(&format!("CEO ({entry} x)")), DM, "[{section}] CEO ({entry} x)");
                        }
                        RoleTerm::Demoter => {
                            assert_eq!(class(&format!("{entry} Director")), INF, "[{section}] {entry}");
                            assert_eq!(got, None, "[{section}] {entry} alone");
                        }
                    }
                }
            }
        }
    }
}
