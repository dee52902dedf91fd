//! The injection screen against corpora written for it (tests/data): ordinary bios full of the imperatives people
//! write must not be flagged; attacks of every class must be, and a flagged lead is never High on its own text.

use leadscore_core::injection::{InjectionClass, screen};
use leadscore_core::prompt::build_prompt;
use leadscore_core::rules::RuleScore;
use leadscore_core::{AiOutcome, AiVerdict, Intent, LeadRow, Offer, Scoring};

const ORDINARY: &str = include_str!("data/bios_ordinary.txt");
const ATTACKS: &str = include_str!("data/injection_attacks.txt");

/// The meaningful lines of a corpus file, with `\n` standing for a line break.
fn lines(file: &str) -> impl Iterator<Item = String> + '_ {
    file.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.replace("\\n", "\n"))
}

/// The attacks, each with the class that must catch it (from its `[section]`).
fn attacks() -> Vec<(InjectionClass, String)> {
    let mut class = None;
    let mut out = Vec::new();
    for line in lines(ATTACKS) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            class = Some(InjectionClass::parse(name).unwrap_or_else(|| panic!("unknown class [{name}]")));
        } else {
            out.push((class.expect("attack before any [class]"), line));
        }
    }
    out
}

#[test]
fn no_ordinary_bio_is_flagged() {
    let bios: Vec<String> = lines(ORDINARY).collect();
    assert!(bios.len() >= 200, "the corpus has {} bios", bios.len());
    let flagged: Vec<String> =
        bios.iter().filter_map(|bio| screen(bio).map(|class| format!("{}: {bio}", class.as_str()))).collect();
    assert!(
        flagged.is_empty(),
        "{} of {} ordinary bios flagged:\n{}",
        flagged.len(),
        bios.len(),
        flagged.join("\n")
    );
}

#[test]
fn every_attack_is_flagged_by_its_class() {
    let attacks = attacks();
    assert!(attacks.len() >= 60, "the corpus has {} attacks", attacks.len());
    for class in [InjectionClass::Structure, InjectionClass::Verdict, InjectionClass::Imperative] {
        assert!(attacks.iter().filter(|(c, _)| *c == class).count() >= 20, "{}", class.as_str());
    }
    let missed: Vec<String> = attacks
        .iter()
        .filter(|(class, text)| screen(text).is_none() || !class.matches(text))
        .map(|(class, text)| format!("{}: {text:?}", class.as_str()))
        .collect();
    assert!(
        missed.is_empty(),
        "{} of {} attacks missed:\n{}",
        missed.len(),
        attacks.len(),
        missed.join("\n")
    );
}

/// Whatever the model answers, a lead flagged for its own text cannot reach High: its verdict is capped at Low
/// and the rule layer gives at most 50.
#[test]
fn a_flagged_lead_is_never_high() {
    let offer = Offer {
        name: "AI Outreach".into(),
        value_props: vec!["more meetings".into()],
        ideal_use_cases: vec!["B2B SaaS".into()],
    };
    let rule = RuleScore { score: 50, reasons: vec![] };
    for (_, attack) in attacks() {
        for (role, bio) in [(attack.as_str(), "Sales leader."), ("CEO", attack.as_str())] {
            let row = LeadRow {
                name: "Ann",
                role,
                company: "Acme",
                industry: "B2B SaaS",
                linkedin_bio: bio,
                ..Default::default()
            };
            let lead = row.parse().expect("valid lead");
            let prompt = build_prompt(&offer, &lead);
            let verdict = AiVerdict { intent: Intent::High, reasoning: "told so".into() };
            let scoring =
                Scoring::compose(rule.clone(), AiOutcome::Verdict { verdict, cached: false }, prompt.flags);
            assert_ne!(
                scoring.intent,
                Intent::High,
                "{attack:?} in the {}",
                if role == "CEO" { "bio" } else { "role" }
            );
        }
    }
}
