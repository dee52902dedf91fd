//! Tests of the tokenizer: quoting, delimiter sniffing, recovery from broken quotes, the size limits and
//! reading across chunk boundaries.
//!
//! In a file of their own so that the tokenizer itself stays readable at a glance.

use super::*;

type Outcome = Result<(u64, Vec<String>), (u64, RecordProblem)>;

/// Tokenizes `input` into (line, fields) for records and (line, problem) for rejections.
fn tokenize(input: &[u8], limits: Limits) -> Vec<Outcome> {
    let mut t = Tokenizer::new(input, limits).expect("no io error");
    let mut rec = Record::default();
    let mut out = Vec::new();
    loop {
        match t.next_record(&mut rec).expect("no io error") {
            Next::End => return out,
            Next::Record => out.push(Ok((
                rec.line,
                rec.fields().iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect(),
            ))),
            Next::Rejected(p) => out.push(Err((rec.line, p))),
        }
    }
}

fn ok(line: u64, fields: &[&str]) -> Outcome {
    Ok((line, fields.iter().map(|s| (*s).to_owned()).collect()))
}

#[test]
fn quotes_newlines_crlf_bom_and_blank_lines() {
    let input = b"\xEF\xBB\xBFa,b\r\n\"x, \"\"y\"\"\",\"multi\nline\"\r\n\r\n\nlast,row";
    assert_eq!(
        tokenize(input, Limits::default()),
        vec![ok(1, &["a", "b"]), ok(2, &["x, \"y\"", "multi\nline"]), ok(6, &["last", "row"])]
    );
}

#[test]
fn sniffs_semicolon_and_tab() {
    assert_eq!(tokenize(b"a;b;\"c;d\"\n1;2;3", Limits::default())[0], ok(1, &["a", "b", "c;d"]));
    assert_eq!(tokenize(b"a\tb\tc,d\n", Limits::default())[0], ok(1, &["a", "b", "c,d"]));
    assert_eq!(tokenize(b"a\tb,c\n", Limits::default())[0], ok(1, &["a\tb", "c"]), "a tie goes to the comma");
    assert_eq!(sniff_delimiter(b"\"a;b;c\",d"), b',');
    assert_eq!(sniff_delimiter(b"single"), b',');
}

#[test]
fn unterminated_quote_costs_one_row() {
    let input = b"h1,h2\n\"broken,row\nok,1\nok,2\n";
    assert_eq!(
        tokenize(input, Limits::default()),
        vec![
            ok(1, &["h1", "h2"]),
            Err((
                2,
                RecordProblem::BadQuote { kind: QuoteProblem::Unterminated, recovered: true, last_line: 2 }
            )),
            ok(3, &["ok", "1"]),
            ok(4, &["ok", "2"]),
        ]
    );
}

#[test]
fn unterminated_quote_beyond_the_record_limit_is_reported_with_its_extent() {
    let limits = Limits { max_record_bytes: 8, ..Limits::default() };
    let input = b"h\n\"abc\ndefghijkl\nmore\n";
    assert_eq!(
        tokenize(input, limits),
        vec![
            ok(1, &["h"]),
            Err((
                2,
                RecordProblem::BadQuote { kind: QuoteProblem::Unterminated, recovered: false, last_line: 4 }
            ))
        ]
    );
}

#[test]
fn a_quote_closed_mid_field_is_rejected_and_swallowed_rows_are_read_again() {
    let input = b"h1,h2\n\"stray,x\nok,1\nnext,\"q\"z,more\nlast,2\nq,\"a\"b\nend,3";
    let misplaced = |line, last_line| {
        Err((line, RecordProblem::BadQuote { kind: QuoteProblem::Misplaced, recovered: true, last_line }))
    };
    assert_eq!(
        tokenize(input, Limits::default()),
        vec![
            ok(1, &["h1", "h2"]),
            misplaced(2, 2),
            ok(3, &["ok", "1"]),
            misplaced(4, 4),
            ok(5, &["last", "2"]),
            misplaced(6, 6),
            ok(7, &["end", "3"]),
        ]
    );
}

#[test]
fn long_fields_and_many_fields_are_rejected_without_stopping() {
    let limits = Limits { max_field_bytes: 4, max_fields: 3, ..Limits::default() };
    let input = b"a,b\n12345,x\n\"123456\",y\n1,2,3,4\nz,w\n";
    assert_eq!(
        tokenize(input, limits),
        vec![
            ok(1, &["a", "b"]),
            Err((2, RecordProblem::FieldTooLong { index: 0 })),
            Err((3, RecordProblem::FieldTooLong { index: 0 })),
            Err((4, RecordProblem::TooManyFields)),
            ok(5, &["z", "w"]),
        ]
    );
}

#[test]
fn reads_across_chunk_boundaries() {
    let mut input = Vec::new();
    for i in 0..20_000 {
        input.extend_from_slice(format!("\"name {i}\",\"bio\nwith newline\"\r\n").as_bytes());
    }
    let rows = tokenize(&input, Limits::default());
    assert_eq!(rows.len(), 20_000);
    assert_eq!(rows[19_999], ok(39_999, &["name 19999", "bio\nwith newline"]));
}

#[test]
fn lone_cr_ends_a_line() {
    assert_eq!(tokenize(b"a\rb\r", Limits::default()), vec![ok(1, &["a"]), ok(2, &["b"])]);
}
