use proptest::prelude::*;

use super::*;
use crate::lead::LeadRow;

fn offer(icp: &[&str]) -> Offer {
    Offer {
        name: "AI Outreach Automation".into(),
        value_props: vec!["24/7 automated outreach".into()],
        ideal_use_cases: icp.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn lead(role: &str, industry: &str, location: &str) -> Lead {
    LeadRow {
        name: "Pat Doe",
        role,
        company: "TechCorp",
        industry,
        location,
        linkedin_bio: "15 years building enterprise SaaS platforms",
        ..Default::default()
    }
    .parse()
    .expect("valid lead")
}

fn score(role: &str, industry: &str, location: &str, icp: &[&str]) -> RuleScore {
    Rules::for_offer(&offer(icp)).score(&lead(role, industry, location))
}

#[test]
fn examples_of_the_original_service() {
    let saas = &["B2B SaaS", "Sales teams", "Marketing agencies"][..];
    let cases = [
        ("CEO", "B2B SaaS", "New York", saas, 50),
        ("Manager", "B2B SaaS", "London", saas, 40),
        ("Manager", "B2B SaaS", "", saas, 30),
        ("Analyst", "Healthcare", "London", &["B2B SaaS"][..], 10),
        ("Head of Sales", "B2B SaaS", "San Francisco", saas, 50),
        ("Manager", "Healthcare", "London", saas, 20),
    ];
    for (role, industry, location, icp, want) in cases {
        assert_eq!(score(role, industry, location, icp).score, want, "{role} / {industry} / {location:?}");
    }
    assert!(score("VP", "B2B SaaS startup", "Austin", &["B2B SaaS"]).score >= 30);
}

#[test]
fn reasons_carry_the_original_text_and_codes() {
    let s = score("CEO", "B2B SaaS", "New York", &["B2B SaaS"]);
    let texts: Vec<&str> = s.reasons.iter().map(|r| r.text).collect();
    assert_eq!(texts, ["Decision maker role (+20)", "Exact ICP match (+20)", "Complete profile (+10)"]);
    let codes: Vec<ReasonCode> = s.reasons.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [ReasonCode::DecisionMakerRole, ReasonCode::ExactIcpMatch, ReasonCode::CompleteProfile]
    );
    let s = score("Team Lead", "B2B SaaS startup", "", &["B2B SaaS"]);
    let texts: Vec<&str> = s.reasons.iter().map(|r| r.text).collect();
    assert_eq!(texts, ["Influencer role (+10)", "Adjacent industry (+10)"]);
    assert_eq!(
        serde_json::to_value(&s.reasons[0]).expect("json")["code"],
        serde_json::json!("influencer_role")
    );
}

#[test]
fn bugs_of_the_original_are_gone() {
    let icp = &["B2B SaaS"][..];
    let role_points = |role: &str| score(role, "Healthcare", "", icp).score;
    assert_eq!(role_points("Director"), 20, "a director is a decision maker on its own merit");
    assert_eq!(role_points("Lead Generation Specialist"), 0);
    assert_eq!(role_points("Executive Assistant to the CEO"), 0);
    assert_eq!(role_points("Founding Engineer"), 0);
    assert_eq!(role_points("Associate Director"), 10);
    assert_eq!(role_points("Geschaeftsfuehrer"), 20);
    assert_eq!(role_points("Geschäftsführer"), 20);
    assert_eq!(role_points("Directeur Commercial"), 20);

    let industry_points = |industry: &str, icp: &[&str]| score("Analyst", industry, "", icp).score;
    assert_eq!(industry_points("", icp), 0, "an empty industry is never adjacent");
    assert_eq!(industry_points("IT Services", &["Financial Services"]), 0);
    assert_eq!(industry_points("B2B SaaS company", icp), 20);

    assert_eq!(score("Analyst", "Healthcare", "N/A", icp).score, 0, "N/A is not a location");
    assert_eq!(score("Analyst", "Healthcare", "Berlin", icp).score, 10);
}

proptest! {
    #[test]
    fn rule_score_is_0_to_50_in_steps_of_10(
        role in "\\PC{0,40}", industry in "\\PC{0,30}", location in "\\PC{0,10}",
        icp in proptest::collection::vec("\\PC{0,20}", 1..4),
    ) {
        let icp: Vec<&str> = icp.iter().map(String::as_str).collect();
        let offer = offer(&icp);
        let lead = LeadRow { name: "x", role: &role, company: "c", industry: &industry, location: &location,
            linkedin_bio: "b", ..Default::default() }.parse();
        if let Ok(lead) = lead {
            let s = Rules::for_offer(&offer).score(&lead);
            prop_assert!(s.score <= 50 && s.score.is_multiple_of(10), "score {}", s.score);
            prop_assert_eq!(s.score, s.reasons.iter().map(|r| r.points).sum::<u8>());
        }
    }
}

#[test]
fn reason_code_names_are_what_serde_writes() {
    for code in ReasonCode::ALL {
        assert_eq!(serde_json::to_value(code).expect("serializes"), serde_json::json!(code.as_str()));
    }
}
