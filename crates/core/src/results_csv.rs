//! The results CSV (one layout for `leadscore score -o`, `results.csv` and `/v1/results.csv`): RFC 4180,
//! UTF-8, a header row, and cells a spreadsheet would execute defused.

use std::io::{self, Write};

use crate::lead::Lead;
use crate::score::Scoring;

pub const RESULT_COLUMNS: [&str; 19] = [
    "lead_id",
    "external_id",
    "name",
    "role",
    "company",
    "industry",
    "location",
    "intent",
    "score",
    "rule_score",
    "ai_score",
    "ai_intent",
    "score_basis",
    "ai_status",
    "flags",
    "reasoning",
    "run_id",
    "offer_id",
    "scored_at",
];

/// One result to write.
#[derive(Debug, Clone, Copy)]
pub struct ResultRow<'a> {
    pub lead_id: &'a str,
    pub lead: &'a Lead,
    pub scoring: &'a Scoring,
    pub run_id: &'a str,
    pub offer_id: &'a str,
    /// RFC 3339.
    pub scored_at: &'a str,
}

/// Writes result rows; the caller buffers `out` as it sees fit.
#[derive(Debug)]
pub struct ResultsCsv<W: Write> {
    out: W,
    extra_columns: Vec<String>,
    line: String,
}

impl<W: Write> ResultsCsv<W> {
    /// Writes the header: the fixed columns, then the extra columns of the upload in their order.
    pub fn new(out: W, extra_columns: Vec<String>) -> io::Result<Self> {
        let mut w = ResultsCsv { out, extra_columns: Vec::new(), line: String::with_capacity(512) };
        w.write_cells(RESULT_COLUMNS.iter().copied().chain(extra_columns.iter().map(String::as_str)))?;
        w.extra_columns = extra_columns;
        Ok(w)
    }

    /// A writer that continues a file whose header was already written (e.g. the next page of an export).
    pub fn without_header(out: W, extra_columns: Vec<String>) -> Self {
        ResultsCsv { out, extra_columns, line: String::with_capacity(512) }
    }

    pub fn write(&mut self, row: &ResultRow<'_>) -> io::Result<()> {
        let (lead, s) = (row.lead, row.scoring);
        let opt = |v: Option<u8>| v.map(|v| v.to_string()).unwrap_or_default();
        let flags = s.flags.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(";");
        let fixed = [
            row.lead_id.to_owned(),
            lead.external_id.clone().unwrap_or_default(),
            lead.name.clone(),
            lead.role.clone(),
            lead.company.clone(),
            lead.industry.clone(),
            lead.location.clone(),
            s.intent.as_str().to_owned(),
            s.final_score.to_string(),
            s.rule.score.to_string(),
            opt(s.ai_score),
            s.ai_intent.map(|i| i.as_str().to_owned()).unwrap_or_default(),
            s.score_basis.as_str().to_owned(),
            s.ai_status.as_str().to_owned(),
            flags,
            s.reasoning(),
            row.run_id.to_owned(),
            row.offer_id.to_owned(),
            row.scored_at.to_owned(),
        ];
        let extras: Vec<&str> = self
            .extra_columns
            .iter()
            .map(|name| lead.attributes.iter().find(|a| &a.name == name).map_or("", |a| a.value.as_str()))
            .collect();
        let cells: Vec<&str> = fixed.iter().map(String::as_str).chain(extras).collect();
        self.write_cells(cells.into_iter())
    }

    fn write_cells<'c>(&mut self, cells: impl Iterator<Item = &'c str>) -> io::Result<()> {
        self.line.clear();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                self.line.push(',');
            }
            push_cell(&mut self.line, cell);
        }
        self.line.push_str("\r\n");
        self.out.write_all(self.line.as_bytes())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Appends one cell, defused (see [`is_formula`]) with a leading `'` so spreadsheets show it instead of running
/// it, and quoted when it holds a delimiter, quote or line break.
pub fn push_cell(line: &mut String, cell: &str) {
    let defuse = is_formula(cell);
    let quote = cell.contains([',', '"', '\n', '\r']);
    if quote {
        line.push('"');
    }
    if defuse {
        line.push('\'');
    }
    if quote {
        line.push_str(&cell.replace('"', "\"\""));
        line.push('"');
    } else {
        line.push_str(cell);
    }
}

/// Whether a spreadsheet could read `cell` as a formula (OWASP "CSV Injection"): it starts with `= + - @`, a tab
/// or a carriage return, or with one of the signs after leading whitespace (spreadsheets trim it), or with a
/// full-width sign (`＝ ＋ － ＠`, which some spreadsheets fold to ASCII).
pub fn is_formula(cell: &str) -> bool {
    const SIGNS: [char; 8] = ['=', '+', '-', '@', '\u{FF1D}', '\u{FF0B}', '\u{FF0D}', '\u{FF20}'];
    if cell.starts_with(['\t', '\r']) {
        return true;
    }
    cell.trim_start().starts_with(SIGNS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lead::LeadRow;
    use crate::offer::Offer;
    use crate::rules::Rules;
    use crate::score::AiOutcome;

    #[test]
    fn writes_the_documented_layout() {
        let lead = LeadRow {
            external_id: Some("crm-7"),
            name: "=HYPERLINK(\"http://x\")",
            role: "CEO",
            company: "Acme, Inc.",
            industry: "B2B SaaS",
            location: "Berlin",
            linkedin_bio: "-2 years\nat Acme",
            attributes: vec![("Deal Size", "+50k")],
        }
        .parse()
        .expect("valid");
        let offer = Offer { name: "x".into(), value_props: vec![], ideal_use_cases: vec!["B2B SaaS".into()] };
        let scoring = Scoring::compose(Rules::for_offer(&offer).score(&lead), AiOutcome::Skipped, vec![]);
        let mut w = ResultsCsv::new(Vec::new(), vec!["Deal Size".into()]).expect("header");
        let row = ResultRow {
            lead_id: "l1",
            lead: &lead,
            scoring: &scoring,
            run_id: "r1",
            offer_id: "o1",
            scored_at: "2026-11-25T10:00:00Z",
        };
        w.write(&row).expect("row");
        let out = String::from_utf8(w.into_inner()).expect("utf8");
        let header = "lead_id,external_id,name,role,company,industry,location,intent,score,rule_score,ai_score,\
                      ai_intent,score_basis,ai_status,flags,reasoning,run_id,offer_id,scored_at,Deal Size";
        let row = "l1,crm-7,\"'=HYPERLINK(\"\"http://x\"\")\",CEO,\"Acme, Inc.\",B2B SaaS,Berlin,High,100,50,,,\
                   rules_only,skipped,,\"[Rule: Decision maker role (+20), Exact ICP match (+20), Complete profile \
                   (+10)] [AI: not used; score is 2 x rule score]\",r1,o1,2026-11-25T10:00:00Z,'+50k";
        assert_eq!(out, format!("{header}\r\n{row}\r\n"));
    }

    #[test]
    fn defuses_formula_cells() {
        let cell = |c: &str| {
            let mut s = String::new();
            push_cell(&mut s, c);
            s
        };
        assert_eq!(cell("=1+1"), "'=1+1");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("-5,3"), "\"'-5,3\"");
        assert_eq!(cell("a\"b"), "\"a\"\"b\"");
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell(" =1+1"), "' =1+1");
        assert_eq!(cell("\n\n@x"), "\"'\n\n@x\"");
        assert_eq!(cell("\u{3000}+1"), "'\u{3000}+1", "ideographic space");
        for sign in ['\u{FF1D}', '\u{FF0B}', '\u{FF0D}', '\u{FF20}'] {
            assert_eq!(cell(&format!("{sign}SUM(A1)")), format!("'{sign}SUM(A1)"));
        }
        assert_eq!(cell("a=b"), "a=b", "a sign inside a cell is harmless");
        assert_eq!(cell("   "), "   ");
    }
}
