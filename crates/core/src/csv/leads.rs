//! From CSV bytes to leads: header normalisation, the required-column check and the row rules.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::sync::LazyLock;

use super::tokenizer::{Limits, Next, QuoteProblem, Record, RecordProblem, Tokenizer};
use crate::lead::{Lead, LeadRow};
use crate::text::data_lines;

/// The fields a lead is made of, as CSV columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Name,
    Role,
    Company,
    Industry,
    Location,
    LinkedinBio,
    ExternalId,
}

impl Field {
    pub const REQUIRED: [Field; 6] =
        [Field::Name, Field::Role, Field::Company, Field::Industry, Field::Location, Field::LinkedinBio];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Role => "role",
            Field::Company => "company",
            Field::Industry => "industry",
            Field::Location => "location",
            Field::LinkedinBio => "linkedin_bio",
            Field::ExternalId => "external_id",
        }
    }

    fn from_canonical(s: &str) -> Option<Field> {
        [Field::ExternalId].into_iter().chain(Field::REQUIRED).find(|f| f.as_str() == s)
    }
}

const HEADER_ALIASES: &str = include_str!("../../data/header_aliases.txt");

static ALIASES: LazyLock<HashMap<String, Field>> = LazyLock::new(|| {
    let mut map = HashMap::new();
    for line in data_lines(HEADER_ALIASES) {
        let (field, aliases) = line.split_once(':').expect("header_aliases.txt: `field: alias, ...`");
        let field = Field::from_canonical(field.trim()).expect("header_aliases.txt: unknown field");
        for alias in aliases.split(',') {
            map.insert(header_key(alias), field);
        }
        map.insert(header_key(field.as_str()), field);
    }
    map
});

/// A header cell in comparable form: lower case, `_ - .` and runs of white space as one space.
fn header_key(cell: &str) -> String {
    cell.to_lowercase()
        .split(|c: char| c.is_whitespace() || matches!(c, '_' | '-' | '.'))
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The header could not be used: nothing in the file can be read as leads.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("the file is empty: expected a header row with the columns {}", required_list())]
    Empty,
    #[error(
        "missing required column{}: {}. Found: {}. Expected the columns {} (aliases such as `title` or `bio` are accepted)",
        if missing.len() > 1 { "s" } else { "" }, missing.join(", "), found_list(found), required_list()
    )]
    MissingColumns { missing: Vec<&'static str>, found: Vec<String> },
    #[error("column `{field}` appears twice in the header: as `{first}` and as `{second}`")]
    DuplicateColumn { field: &'static str, first: String, second: String },
    #[error("the header row is not valid UTF-8: save the file as UTF-8 (\"CSV UTF-8\" in Excel)")]
    NotUtf8,
    #[error("the header row could not be read: {0}")]
    Unreadable(String),
    #[error("reading the file failed: {0}")]
    Io(#[from] io::Error),
}

fn required_list() -> String {
    Field::REQUIRED.map(Field::as_str).join(",")
}

fn found_list(found: &[String]) -> String {
    if found.is_empty() {
        "no columns".to_owned()
    } else {
        found.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
    }
}

/// What one column of the upload holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    Field(Field),
    /// Not one of ours: kept with the lead as an attribute under this name.
    Extra(String),
}

/// A row that did not become a lead, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    /// Line the row starts on (the header is line 1).
    pub line: u64,
    /// The column at fault, as named in the file's header, when one is.
    pub column: Option<String>,
    pub message: String,
}

/// One data row's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    Accepted { line: u64, lead: Lead },
    Rejected(RejectedRow),
}

/// Reads leads from a CSV byte stream, one row at a time; never holds the whole file.
///
/// The first non-blank line is the header. Rows are checked against the row rules; a bad row is rejected with
/// its line and reason and reading goes on. Only an I/O error ends the iteration early.
#[derive(Debug)]
pub struct LeadReader<R> {
    tokenizer: Tokenizer<R>,
    record: Record,
    columns: Vec<Column>,
    headers: Vec<String>,
    /// Hash of each accepted lead -> its line, to reject exact duplicates.
    seen: HashMap<u64, u64>,
    limits: Limits,
    done: bool,
}

impl<R: Read> LeadReader<R> {
    pub fn new(src: R, limits: Limits) -> Result<Self, HeaderError> {
        let mut tokenizer = Tokenizer::new(src, limits)?;
        let mut record = Record::default();
        match tokenizer.next_record(&mut record)? {
            Next::End => return Err(HeaderError::Empty),
            Next::Rejected(p) => return Err(HeaderError::Unreadable(describe(&p, &[], limits, record.line))),
            Next::Record => {}
        }
        let headers = record
            .fields()
            .iter()
            .map(|f| std::str::from_utf8(f).map(|s| s.trim().to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| HeaderError::NotUtf8)?;
        let columns = map_columns(&headers)?;
        Ok(LeadReader { tokenizer, record, columns, headers, seen: HashMap::new(), limits, done: false })
    }

    /// The columns in file order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Names of the extra columns, in file order: kept as attributes and written back on export.
    pub fn extra_columns(&self) -> Vec<String> {
        self.columns
            .iter()
            .filter_map(|c| match c {
                Column::Extra(name) => Some(name.clone()),
                Column::Field(_) => None,
            })
            .collect()
    }

    /// Bytes read from the source so far.
    pub fn bytes_read(&self) -> u64 {
        self.tokenizer.bytes_read()
    }

    fn next_row(&mut self) -> io::Result<Option<Row>> {
        loop {
            let next = self.tokenizer.next_record(&mut self.record)?;
            let line = self.record.line;
            let reject = |column: Option<String>, message: String| {
                Ok(Some(Row::Rejected(RejectedRow { line, column, message })))
            };
            match next {
                Next::End => return Ok(None),
                Next::Rejected(p) => {
                    let column = match p {
                        RecordProblem::FieldTooLong { index } => self.headers.get(index).cloned(),
                        _ => None,
                    };
                    return reject(column, describe(&p, &self.headers, self.limits, line));
                }
                Next::Record => {}
            }
            let fields = self.record.fields();
            let width = self.columns.len();
            // Trailing empty cells (a spreadsheet's stray commas) are not a wrong field count.
            let mut real = fields.len();
            while real > width && fields[real - 1].is_empty() {
                real -= 1;
            }
            if real != width {
                return reject(None, format!("expected {width} fields, found {}", fields.len()));
            }
            let mut cells = Vec::with_capacity(width);
            for (i, f) in fields[..width].iter().enumerate() {
                match std::str::from_utf8(f) {
                    Ok(s) => cells.push(s),
                    Err(_) => {
                        return reject(
                            Some(self.headers[i].clone()),
                            "not valid UTF-8: save the file as UTF-8 (\"CSV UTF-8\" in Excel)".to_owned(),
                        );
                    }
                }
            }
            if cells.iter().all(|c| c.trim().is_empty()) {
                continue; // a line of only delimiters is a blank line
            }
            let mut row = LeadRow::default();
            for (column, cell) in self.columns.iter().zip(&cells) {
                match column {
                    Column::Field(Field::Name) => row.name = cell,
                    Column::Field(Field::Role) => row.role = cell,
                    Column::Field(Field::Company) => row.company = cell,
                    Column::Field(Field::Industry) => row.industry = cell,
                    Column::Field(Field::Location) => row.location = cell,
                    Column::Field(Field::LinkedinBio) => row.linkedin_bio = cell,
                    Column::Field(Field::ExternalId) => row.external_id = Some(cell),
                    Column::Extra(name) => row.attributes.push((name.as_str(), cell)),
                }
            }
            let lead = match row.parse() {
                Ok(lead) => lead,
                Err(e) => {
                    let column = Field::from_canonical(e.column()).map(|f| self.header_of(f));
                    return reject(column, e.to_string());
                }
            };
            let mut h = DefaultHasher::new();
            lead.hash(&mut h);
            let first = *self.seen.entry(h.finish()).or_insert(line);
            if first != line {
                return reject(None, format!("duplicate of line {first}"));
            }
            return Ok(Some(Row::Accepted { line, lead }));
        }
    }

    fn header_of(&self, field: Field) -> String {
        self.columns
            .iter()
            .position(|c| *c == Column::Field(field))
            .map_or_else(|| field.as_str().to_owned(), |i| self.headers[i].clone())
    }
}

impl<R: Read> Iterator for LeadReader<R> {
    type Item = io::Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_row().transpose();
        if matches!(item, None | Some(Err(_))) {
            self.done = true;
        }
        item
    }
}

fn map_columns(headers: &[String]) -> Result<Vec<Column>, HeaderError> {
    let mut columns = Vec::with_capacity(headers.len());
    let mut seen: HashMap<Field, &str> = HashMap::new();
    for h in headers {
        match ALIASES.get(&header_key(h)) {
            Some(&field) => {
                if let Some(first) = seen.insert(field, h) {
                    return Err(HeaderError::DuplicateColumn {
                        field: field.as_str(),
                        first: first.to_owned(),
                        second: h.clone(),
                    });
                }
                columns.push(Column::Field(field));
            }
            None => columns.push(Column::Extra(h.clone())),
        }
    }
    let missing: Vec<&'static str> =
        Field::REQUIRED.into_iter().filter(|f| !seen.contains_key(f)).map(Field::as_str).collect();
    if missing.is_empty() {
        Ok(columns)
    } else {
        Err(HeaderError::MissingColumns {
            missing,
            found: headers.iter().filter(|h| !h.is_empty()).take(20).cloned().collect(),
        })
    }
}

fn describe(p: &RecordProblem, headers: &[String], limits: Limits, line: u64) -> String {
    match p {
        RecordProblem::FieldTooLong { index } => {
            let name =
                headers.get(*index).map_or_else(|| format!("field {}", index + 1), |h| format!("`{h}`"));
            format!("{name} is longer than {} bytes", limits.max_field_bytes)
        }
        RecordProblem::TooManyFields => format!("more than {} fields", limits.max_fields),
        RecordProblem::BadQuote { kind, recovered, last_line } => {
            let what = match kind {
                QuoteProblem::Unterminated => {
                    "unterminated quote: a quoted field opened on this line never closes"
                }
                QuoteProblem::Misplaced => {
                    "misplaced quote: a quoted field is followed by more text before the next delimiter (quotes inside a field must be doubled)"
                }
            };
            if *recovered {
                format!("{what}; the lines after it were read as rows of their own")
            } else {
                format!("{what}, so lines {line}-{last_line} (the rest of the file) could not be read")
            }
        }
    }
}

#[cfg(test)]
mod tests;
