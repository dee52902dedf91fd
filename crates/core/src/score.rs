//! The final score: rule layer + AI layer, the intent label, and the rules-only fallback.

use serde::{Deserialize, Serialize};

use crate::rules::RuleScore;

/// High / Medium / Low: both the AI's verdict and the final label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Intent {
    Low,
    Medium,
    High,
}

impl Intent {
    pub const ALL: [Intent; 3] = [Intent::High, Intent::Medium, Intent::Low];

    /// Points the AI layer gives for this verdict.
    pub fn ai_points(self) -> u8 {
        match self {
            Intent::High => 50,
            Intent::Medium => 30,
            Intent::Low => 10,
        }
    }

    /// The label of a final score: High >= 70, Medium >= 40, else Low.
    pub fn of_score(score: u8) -> Intent {
        match score {
            70.. => Intent::High,
            40.. => Intent::Medium,
            _ => Intent::Low,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Intent::High => "High",
            Intent::Medium => "Medium",
            Intent::Low => "Low",
        }
    }

    pub fn parse(s: &str) -> Option<Intent> {
        Intent::ALL.into_iter().find(|i| i.as_str() == s)
    }
}

/// What happened in the AI layer for one lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AiStatus {
    /// The model answered with a valid verdict.
    Ok,
    /// A verdict for identical input came from the cache; no call was made.
    Cached,
    /// No AI call was attempted (no provider configured, or `--no-ai`).
    Skipped,
    /// Every attempt failed; the result is rules-only and can be retried.
    Failed,
}

impl AiStatus {
    pub const ALL: [AiStatus; 4] = [AiStatus::Ok, AiStatus::Cached, AiStatus::Skipped, AiStatus::Failed];

    pub fn parse(s: &str) -> Option<AiStatus> {
        AiStatus::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AiStatus::Ok => "ok",
            AiStatus::Cached => "cached",
            AiStatus::Skipped => "skipped",
            AiStatus::Failed => "failed",
        }
    }
}

/// Whether the final score combines both layers or stands on the rules alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreBasis {
    Hybrid,
    RulesOnly,
}

impl ScoreBasis {
    pub const ALL: [ScoreBasis; 2] = [ScoreBasis::Hybrid, ScoreBasis::RulesOnly];

    pub fn parse(s: &str) -> Option<ScoreBasis> {
        ScoreBasis::ALL.into_iter().find(|b| b.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ScoreBasis::Hybrid => "hybrid",
            ScoreBasis::RulesOnly => "rules_only",
        }
    }
}

/// Something noteworthy about a lead, kept with its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// The lead's text looks like an attempt to instruct the model; its AI verdict is capped at Low.
    PromptInjection,
}

impl Flag {
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::PromptInjection => "prompt_injection",
        }
    }
}

/// The model's verdict, validated by [`crate::reply::parse_reply`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AiVerdict {
    pub intent: Intent,
    pub reasoning: String,
}

/// The AI layer's outcome as the score composition sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AiOutcome {
    /// A verdict, fresh (`cached: false`) or from the cache.
    Verdict {
        verdict: AiVerdict,
        cached: bool,
    },
    Skipped,
    Failed {
        error: String,
    },
}

/// A scored lead: both layers, the final score and label, and the reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scoring {
    pub rule: RuleScore,
    pub ai_intent: Option<Intent>,
    pub ai_score: Option<u8>,
    pub ai_reasoning: Option<String>,
    pub ai_status: AiStatus,
    pub score_basis: ScoreBasis,
    pub final_score: u8,
    pub intent: Intent,
    pub flags: Vec<Flag>,
}

impl Scoring {
    /// Composes the final score. With a verdict: rule + AI (`hybrid`); a lead flagged for prompt injection has
    /// its verdict capped at Low. Without one: 2 x the rule score (`rules_only`), as the original did on an AI
    /// error. A missing verdict never pretends to be "Low".
    pub fn compose(rule: RuleScore, ai: AiOutcome, flags: Vec<Flag>) -> Scoring {
        let (ai_intent, ai_reasoning, ai_status) = match ai {
            AiOutcome::Verdict { verdict, cached } => {
                let status = if cached { AiStatus::Cached } else { AiStatus::Ok };
                let mut intent = verdict.intent;
                let mut reasoning = verdict.reasoning;
                if flags.contains(&Flag::PromptInjection) && intent > Intent::Low {
                    reasoning =
                        format!("{reasoning} (capped at Low: the lead's text tries to instruct the model)");
                    intent = Intent::Low;
                }
                (Some(intent), Some(reasoning), status)
            }
            AiOutcome::Skipped => (None, None, AiStatus::Skipped),
            AiOutcome::Failed { error } => {
                (None, Some(format!("AI layer failed: {error}")), AiStatus::Failed)
            }
        };
        let ai_score = ai_intent.map(Intent::ai_points);
        let (final_score, score_basis) = match ai_score {
            Some(points) => (rule.score + points, ScoreBasis::Hybrid),
            None => ((rule.score * 2).min(100), ScoreBasis::RulesOnly),
        };
        Scoring {
            intent: Intent::of_score(final_score),
            rule,
            ai_intent,
            ai_score,
            ai_reasoning,
            ai_status,
            score_basis,
            final_score,
            flags,
        }
    }

    /// Rule reasons and the AI's reason in one line, in the original's shape:
    /// `[Rule: Decision maker role (+20), Complete profile (+10)] [AI: ...]`.
    pub fn reasoning(&self) -> String {
        let rules = if self.rule.reasons.is_empty() {
            "no rule points".to_owned()
        } else {
            self.rule.reasons.iter().map(|r| r.text).collect::<Vec<_>>().join(", ")
        };
        let ai = match (self.ai_status, &self.ai_reasoning) {
            (AiStatus::Skipped, _) => "not used; score is 2 x rule score".to_owned(),
            (AiStatus::Failed, Some(r)) => format!("{r}; score is 2 x rule score"),
            (_, Some(r)) => r.clone(),
            (_, None) => String::new(),
        };
        format!("[Rule: {rules}] [AI: {ai}]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{ReasonCode, RuleReason};

    fn rule(score: u8) -> RuleScore {
        let reasons = match score {
            0 => vec![],
            _ => vec![RuleReason {
                code: ReasonCode::CompleteProfile,
                points: score,
                text: "Complete profile (+10)",
                detail: String::new(),
            }],
        };
        RuleScore { score, reasons }
    }

    fn verdict(intent: Intent) -> AiOutcome {
        AiOutcome::Verdict { verdict: AiVerdict { intent, reasoning: "fits".into() }, cached: false }
    }

    #[test]
    fn thresholds() {
        let cases = [
            (100, Intent::High),
            (70, Intent::High),
            (69, Intent::Medium),
            (40, Intent::Medium),
            (39, Intent::Low),
            (0, Intent::Low),
        ];
        for (score, want) in cases {
            assert_eq!(Intent::of_score(score), want, "{score}");
        }
    }

    #[test]
    fn hybrid_is_rule_plus_ai() {
        let cases = [
            (50, Intent::High, 100, Intent::High),
            (50, Intent::Medium, 80, Intent::High),
            (20, Intent::Medium, 50, Intent::Medium),
            (0, Intent::Low, 10, Intent::Low),
            (30, Intent::Low, 40, Intent::Medium),
        ];
        for (r, ai, want, label) in cases {
            let s = Scoring::compose(rule(r), verdict(ai), vec![]);
            assert_eq!(
                (s.final_score, s.intent, s.score_basis, s.ai_status),
                (want, label, ScoreBasis::Hybrid, AiStatus::Ok)
            );
        }
    }

    #[test]
    fn rules_only_doubles_the_rule_score_and_never_claims_an_ai_verdict() {
        let s = Scoring::compose(rule(40), AiOutcome::Skipped, vec![]);
        assert_eq!(
            (s.final_score, s.intent, s.score_basis, s.ai_intent, s.ai_score),
            (80, Intent::High, ScoreBasis::RulesOnly, None, None)
        );
        let s = Scoring::compose(rule(10), AiOutcome::Failed { error: "429".into() }, vec![]);
        assert_eq!((s.final_score, s.ai_status, s.ai_intent), (20, AiStatus::Failed, None));
        assert_eq!(
            s.reasoning(),
            "[Rule: Complete profile (+10)] [AI: AI layer failed: 429; score is 2 x rule score]"
        );
    }

    #[test]
    fn injection_caps_the_verdict_at_low() {
        let s = Scoring::compose(rule(50), verdict(Intent::High), vec![Flag::PromptInjection]);
        assert_eq!((s.ai_intent, s.final_score, s.intent), (Some(Intent::Low), 60, Intent::Medium));
        assert!(s.reasoning().contains("capped at Low"));
    }

    #[test]
    fn cached_verdicts_are_marked() {
        let ai = AiOutcome::Verdict {
            verdict: AiVerdict { intent: Intent::High, reasoning: "r".into() },
            cached: true,
        };
        assert_eq!(Scoring::compose(rule(0), ai, vec![]).ai_status, AiStatus::Cached);
    }

    #[test]
    fn reasoning_reads_like_the_original() {
        let s = Scoring::compose(rule(0), AiOutcome::Skipped, vec![]);
        assert_eq!(s.reasoning(), "[Rule: no rule points] [AI: not used; score is 2 x rule score]");
    }
}
