//! The deterministic verdicts: a lead's intent and reasoning derived from a hash of its text alone, so tests
//! can compute the answer they should see.
//!
//! Separate so that the one rule tests depend on is easy to find and does not depend on the server.

/// FNV-1a: stable across runs and platforms, so verdicts are reproducible.
pub(crate) fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The lead part of a user message: between `<lead>` and `</lead>`, or all of it.
fn lead_text(user: &str) -> &str {
    match (user.find("<lead>"), user.find("</lead>")) {
        (Some(a), Some(b)) if a < b => &user[a + 6..b],
        _ => user,
    }
}

/// The verdict this server gives for a user message: decided by the lead's text alone, so the same lead gets
/// the same verdict under any offer wording, and tests can compute what to expect.
pub fn verdict_for(user_message: &str) -> (&'static str, String) {
    let lead = lead_text(user_message);
    let h = fnv(lead);
    let intent = ["High", "Medium", "Low"][(h % 3) as usize];
    (intent, format!("Fake assessment {:08x}: {intent} fit from the lead's role and bio.", h as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_stable_and_use_only_the_lead() {
        let a = verdict_for("<offer>\n{\"product\":\"A\"}\n</offer>\n<lead>\n{\"role\":\"CEO\"}\n</lead>");
        let b = verdict_for("<offer>\n{\"product\":\"B\"}\n</offer>\n<lead>\n{\"role\":\"CEO\"}\n</lead>");
        assert_eq!(a, b);
        let intents: std::collections::HashSet<_> =
            (0..60).map(|i| verdict_for(&format!("<lead>{i}</lead>")).0).collect();
        assert_eq!(intents.len(), 3, "all three verdicts occur");
    }
}
