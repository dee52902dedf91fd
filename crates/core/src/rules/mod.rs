//! The rule layer (0-50 points): role relevance, industry fit and profile completeness.

mod industry;
mod role;

use serde::{Deserialize, Serialize};

pub use industry::{Adjacency, Icp, IndustryMatch};
pub use role::{RoleClass, RoleMatch, classify_role};

use crate::lead::Lead;
use crate::offer::Offer;

/// Machine-readable name of a rule that awarded points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    DecisionMakerRole,
    InfluencerRole,
    ExactIcpMatch,
    AdjacentIndustry,
    CompleteProfile,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 5] = [
        ReasonCode::DecisionMakerRole,
        ReasonCode::InfluencerRole,
        ReasonCode::ExactIcpMatch,
        ReasonCode::AdjacentIndustry,
        ReasonCode::CompleteProfile,
    ];

    /// The name it is serialized as.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::DecisionMakerRole => "decision_maker_role",
            ReasonCode::InfluencerRole => "influencer_role",
            ReasonCode::ExactIcpMatch => "exact_icp_match",
            ReasonCode::AdjacentIndustry => "adjacent_industry",
            ReasonCode::CompleteProfile => "complete_profile",
        }
    }

    pub fn points(self) -> u8 {
        match self {
            ReasonCode::DecisionMakerRole | ReasonCode::ExactIcpMatch => 20,
            ReasonCode::InfluencerRole | ReasonCode::AdjacentIndustry | ReasonCode::CompleteProfile => 10,
        }
    }

    /// The reason as the original service worded it, points included.
    pub fn text(self) -> &'static str {
        match self {
            ReasonCode::DecisionMakerRole => "Decision maker role (+20)",
            ReasonCode::InfluencerRole => "Influencer role (+10)",
            ReasonCode::ExactIcpMatch => "Exact ICP match (+20)",
            ReasonCode::AdjacentIndustry => "Adjacent industry (+10)",
            ReasonCode::CompleteProfile => "Complete profile (+10)",
        }
    }
}

/// One rule that awarded points, with what it matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleReason {
    pub code: ReasonCode,
    pub points: u8,
    pub text: &'static str,
    /// What matched, e.g. `role "vice president"` or `industry "B2B SaaS startup" contains ICP "B2B SaaS"`.
    pub detail: String,
}

impl RuleReason {
    pub fn new(code: ReasonCode, detail: String) -> Self {
        RuleReason { code, points: code.points(), text: code.text(), detail }
    }
}

/// Stored reasons are read back by code: points and text always follow from it.
impl<'de> Deserialize<'de> for RuleReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Stored {
            code: ReasonCode,
            #[serde(default)]
            detail: String,
        }
        let s = Stored::deserialize(d)?;
        Ok(RuleReason::new(s.code, s.detail))
    }
}

/// The rule layer's verdict on one lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleScore {
    /// 0 to 50 in steps of 10.
    pub score: u8,
    pub reasons: Vec<RuleReason>,
}

/// The rule layer prepared for one offer: build once, score many leads.
#[derive(Debug, Clone)]
pub struct Rules {
    icp: Icp,
}

impl Rules {
    pub fn for_offer(offer: &Offer) -> Self {
        Rules { icp: Icp::new(&offer.ideal_use_cases) }
    }

    pub fn score(&self, lead: &Lead) -> RuleScore {
        let mut reasons = Vec::with_capacity(3);
        if let Some(m) = classify_role(&lead.role) {
            let code = match m.class {
                RoleClass::DecisionMaker => ReasonCode::DecisionMakerRole,
                RoleClass::Influencer => ReasonCode::InfluencerRole,
            };
            reasons.push(RuleReason::new(code, format!("role {:?} matched {:?}", lead.role, m.matched)));
        }
        match self.icp.match_industry(&lead.industry) {
            Some(IndustryMatch::Exact { icp }) => reasons.push(RuleReason::new(
                ReasonCode::ExactIcpMatch,
                format!("industry {:?} is ICP {icp:?}", lead.industry),
            )),
            Some(IndustryMatch::Adjacent { icp, why }) => {
                let how = match why {
                    Adjacency::Contains => "overlaps".to_owned(),
                    Adjacency::Synonyms => "is a synonym of".to_owned(),
                    Adjacency::SharedWord(w) => format!("shares {w:?} with"),
                };
                reasons.push(RuleReason::new(
                    ReasonCode::AdjacentIndustry,
                    format!("industry {:?} {how} ICP {icp:?}", lead.industry),
                ));
            }
            None => {}
        }
        if lead.is_complete() {
            reasons.push(RuleReason::new(ReasonCode::CompleteProfile, "all six fields present".to_owned()));
        }
        let score = reasons.iter().map(|r| r.points).sum();
        RuleScore { score, reasons }
    }
}

#[cfg(test)]
mod tests;
