//! The columns a completion writes into `results`, named once for both backends: the PostgreSQL batch
//! (`unnest` of one array per column) and the SQLite insert are both generated from [`VALUES`], and so is the
//! upsert that replaces an earlier result of the same job (`version + 1`).

use super::{ClaimedJob, NewResult};
use crate::{Result, StoreError};

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A result's own columns after the job's key, in the order [`ResultRow::values`] gives them, with their
/// PostgreSQL array element type.
pub(super) const VALUES: [(&str, Kind); 16] = [
    ("rule_score", Kind::Int),
    ("rule_reasons", Kind::Json),
    ("ai_intent", Kind::Text),
    ("ai_score", Kind::Int),
    ("ai_reasoning", Kind::Text),
    ("ai_status", Kind::Text),
    ("score_basis", Kind::Text),
    ("final_score", Kind::Int),
    ("intent", Kind::Text),
    ("flags", Kind::Json),
    ("model", Kind::Text),
    ("prompt_version", Kind::Text),
    ("prompt_tokens", Kind::Int),
    ("completion_tokens", Kind::Int),
    ("cost_usd", Kind::Float),
    ("latency_ms", Kind::Int),
];

/// How a column travels: text, JSON text (cast to `jsonb` on PostgreSQL), integer or float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Text,
    Json,
    Int,
    Float,
}

impl Kind {
    pub(super) fn pg_array(self) -> &'static str {
        match self {
            Kind::Text | Kind::Json => "text[]",
            Kind::Int => "bigint[]",
            Kind::Float => "float8[]",
        }
    }
}

/// One value of [`VALUES`].
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Float(Option<f64>),
}

/// A result as the row it becomes.
pub(super) struct ResultRow<'a> {
    pub job: &'a ClaimedJob,
    pub result: &'a NewResult,
}

impl ResultRow<'_> {
    /// The values of [`VALUES`], in order.
    pub(super) fn values(&self) -> Result<[Value; 16]> {
        let (s, r) = (&self.result.scoring, self.result);
        let text = |v: &str| Value::Text(Some(v.to_owned()));
        let json = |v: String| Value::Text(Some(v));
        Ok([
            Value::Int(Some(i64::from(s.rule.score))),
            json(to_json(&s.rule.reasons)?),
            Value::Text(s.ai_intent.map(|i| i.as_str().to_owned())),
            Value::Int(s.ai_score.map(i64::from)),
            Value::Text(s.ai_reasoning.clone()),
            text(s.ai_status.as_str()),
            text(s.score_basis.as_str()),
            Value::Int(Some(i64::from(s.final_score))),
            text(s.intent.as_str()),
            json(to_json(&s.flags)?),
            Value::Text(r.model.clone()),
            Value::Text(r.prompt_version.clone()),
            Value::Int(r.prompt_tokens),
            Value::Int(r.completion_tokens),
            Value::Float(r.cost_usd),
            Value::Int(r.latency_ms),
        ])
    }
}

/// `results` columns of an insert: the key, the run's workspace and offer, the version, [`VALUES`], the time.
pub(super) fn insert_columns() -> String {
    let values: Vec<&str> = VALUES.iter().map(|(name, _)| *name).collect();
    format!("run_id, lead_id, workspace_id, offer_id, version, {}, created_at", values.join(", "))
}

/// What a conflicting insert (a retried job) does: the new values replace the old ones, `version + 1`.
pub(super) fn upsert() -> String {
    let set: Vec<String> = VALUES
        .iter()
        .map(|(name, _)| format!("{name} = excluded.{name}"))
        .chain(["created_at = excluded.created_at".to_owned()])
        .collect();
    format!("on conflict (run_id, lead_id) do update set version = results.version + 1, {}", set.join(", "))
}

/// `expr` as the column `name` is stored on PostgreSQL (JSON text becomes `jsonb`).
pub(super) fn pg_cast(expr: &str, kind: Kind) -> String {
    match kind {
        Kind::Json => format!("{expr}::jsonb"),
        _ => expr.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_kinds_their_columns_declare() {
        let lead = ClaimedJob { run_id: "r".into(), lead_id: "l".into(), attempts: 1, max_attempts: 5 };
        let scoring = leadscore_core::Scoring::compose(
            leadscore_core::RuleScore { score: 20, reasons: vec![] },
            leadscore_core::AiOutcome::Skipped,
            vec![],
        );
        let result = NewResult::without_model(scoring);
        let values = ResultRow { job: &lead, result: &result }.values().expect("values");
        for ((name, kind), value) in VALUES.iter().zip(&values) {
            let ok = matches!(
                (kind, value),
                (Kind::Text | Kind::Json, Value::Text(_))
                    | (Kind::Int, Value::Int(_))
                    | (Kind::Float, Value::Float(_))
            );
            assert!(ok, "{name}: declared {kind:?}, given {value:?}");
        }
    }

    #[test]
    fn the_upsert_replaces_every_value_column() {
        let upsert = upsert();
        for (name, _) in VALUES {
            assert!(upsert.contains(&format!("{name} = excluded.{name}")), "{name}");
        }
        assert!(insert_columns().ends_with("latency_ms, created_at"));
    }
}
