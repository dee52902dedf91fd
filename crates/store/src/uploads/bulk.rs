//! The text of bulk statements: the placeholders of multi-row `VALUES` lists and the CSV rows fed to
//! PostgreSQL's `COPY`.
//!
//! Separate from the writer because these are pure functions of their inputs, tested without a database.

use leadscore_core::Lead;

use crate::{Result, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placeholders {
    /// `$1, $2, ...` (Postgres).
    Numbered,
    /// `?, ?, ...`: for SQLite, which looks named parameters up one by one while preparing a statement (quadratic
    /// in their number: thousands per bulk insert).
    Positional,
}

/// `prefix ($1, ..., $n), ($n+1, ...), ...` for `rows` rows of `cols` parameters.
pub(super) fn values_sql(prefix: &str, cols: usize, rows: usize, style: Placeholders) -> String {
    let mut sql = String::with_capacity(prefix.len() + rows * cols * 6);
    sql.push_str(prefix);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            match style {
                Placeholders::Numbered => {
                    sql.push('$');
                    sql.push_str(&(r * cols + c + 1).to_string());
                }
                Placeholders::Positional => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql
}

/// One row of `COPY ... (format csv)`: text always quoted (an unquoted empty field would be NULL), NULL as an
/// empty unquoted field.
pub(super) fn copy_row(
    buf: &mut Vec<u8>,
    id: &str,
    workspace: &str,
    upload: &str,
    line: u64,
    lead: &Lead,
) -> Result<()> {
    let quoted = |buf: &mut Vec<u8>, s: &str| {
        buf.push(b'"');
        for b in s.bytes() {
            if b == b'"' {
                buf.push(b'"');
            }
            buf.push(b);
        }
        buf.push(b'"');
    };
    for s in [id, workspace, upload] {
        quoted(buf, s);
        buf.push(b',');
    }
    buf.extend_from_slice(line.to_string().as_bytes());
    buf.push(b',');
    if let Some(ext) = &lead.external_id {
        quoted(buf, ext);
    }
    for s in [&lead.name, &lead.role, &lead.company, &lead.industry, &lead.location, &lead.linkedin_bio] {
        buf.push(b',');
        quoted(buf, s);
    }
    buf.push(b',');
    let attributes =
        serde_json::to_string(&lead.attributes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    quoted(buf, &attributes);
    buf.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_multi_row_values() {
        assert_eq!(
            values_sql("insert into t values ", 2, 2, Placeholders::Numbered),
            "insert into t values ($1, $2), ($3, $4)"
        );
        assert_eq!(values_sql("v ", 2, 2, Placeholders::Positional), "v (?, ?), (?, ?)");
    }

    #[test]
    fn copy_rows_quote_text_and_leave_null_unquoted() {
        let lead = Lead {
            external_id: None,
            name: "A \"B\"".into(),
            role: String::new(),
            company: "x,y".into(),
            industry: "i".into(),
            location: "l".into(),
            linkedin_bio: "multi\nline".into(),
            attributes: vec![],
        };
        let mut buf = Vec::new();
        copy_row(&mut buf, "id", "ws", "up", 7, &lead).expect("row");
        assert_eq!(
            String::from_utf8(buf).expect("utf8"),
            "\"id\",\"ws\",\"up\",7,,\"A \"\"B\"\"\",\"\",\"x,y\",\"i\",\"l\",\"multi\nline\",\"[]\"\n"
        );
    }
}
