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
    /// Every field, in the order the upload report lists them.
    pub const ALL: [Field; 7] = [
        Field::Name,
        Field::Role,
        Field::Company,
        Field::Industry,
        Field::Location,
        Field::LinkedinBio,
        Field::ExternalId,
    ];
    /// The lead's own fields: a file needs a column for `name` and one for `role` or `company`; the others may be
    /// missing (every lead then has them empty, and the upload report says so).
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
        Field::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// A part of a field that CRM and prospecting exports split over several columns: first and last name make
/// `name` ("Ada Park"), city, state/region and country make `location` ("Munich, Bavaria, Germany"). A file
/// with the whole field keeps its parts as attributes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    FirstName,
    LastName,
    City,
    Region,
    Country,
}

impl Part {
    /// In the order they are joined.
    pub const ALL: [Part; 5] = [Part::FirstName, Part::LastName, Part::City, Part::Region, Part::Country];

    pub fn as_str(self) -> &'static str {
        match self {
            Part::FirstName => "first_name",
            Part::LastName => "last_name",
            Part::City => "city",
            Part::Region => "region",
            Part::Country => "country",
        }
    }

    /// The field this part is a piece of.
    pub fn field(self) -> Field {
        match self {
            Part::FirstName | Part::LastName => Field::Name,
            Part::City | Part::Region | Part::Country => Field::Location,
        }
    }

    fn from_canonical(s: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// Which columns feed which fields, as the sender says: `{"name": ["First Name", "Last Name"], "role": "Job
/// Title", "external_id": "Record ID"}`. A list is joined in its order (`, ` for `location`, a space otherwise).
/// Fields it does not name are still found from the headers, among the columns it does not use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mapping {
    fields: Vec<(Field, Vec<String>)>,
}

/// Longest mapping accepted, in characters (the API document's `maxLength`).
pub const MAX_MAPPING_CHARS: usize = 2048;

/// Most columns one field may be joined from.
const MAX_PIECES: usize = 8;

/// Why a mapping cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error(
        "the mapping must be a JSON object of field -> column or [columns], e.g. {{\"name\": [\"First Name\", \"Last Name\"], \"role\": \"Job Title\"}}: {0}"
    )]
    Malformed(String),
    #[error("the mapping names `{name}`, which is not a lead field: use {}", Field::ALL.map(Field::as_str).join(", "))]
    UnknownField { name: String },
    #[error("the mapping gives `{field}` {count} columns: 1 to {MAX_PIECES}")]
    TooManyColumns { field: &'static str, count: usize },
}

impl Mapping {
    pub fn parse(json: &str) -> Result<Mapping, MappingError> {
        if json.chars().count() > MAX_MAPPING_CHARS {
            return Err(MappingError::Malformed(format!("longer than {MAX_MAPPING_CHARS} characters")));
        }
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| MappingError::Malformed(e.to_string()))?;
        let object = value.as_object().ok_or_else(|| MappingError::Malformed("not an object".into()))?;
        let mut fields = Vec::new();
        for (name, columns) in object {
            let field = Field::from_canonical(name)
                .ok_or_else(|| MappingError::UnknownField { name: name.clone() })?;
            let columns: Vec<String> = match columns {
                serde_json::Value::String(c) => vec![c.trim().to_owned()],
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|c| c.as_str().map(|c| c.trim().to_owned()))
                    .collect::<Option<_>>()
                    .ok_or_else(|| MappingError::Malformed(format!("`{name}`: columns are strings")))?,
                _ => {
                    return Err(MappingError::Malformed(format!(
                        "`{name}`: a column name or a list of them"
                    )));
                }
            };
            if columns.iter().any(String::is_empty) {
                return Err(MappingError::Malformed(format!("`{name}`: a column name is empty")));
            }
            if columns.is_empty() || columns.len() > MAX_PIECES {
                return Err(MappingError::TooManyColumns { field: field.as_str(), count: columns.len() });
            }
            fields.push((field, columns));
        }
        Ok(Mapping { fields })
    }

    /// The column each header is by the mapping (`None`: not named by it), or which named column the file lacks.
    fn columns(&self, headers: &[String]) -> Result<Vec<Option<Column>>, HeaderError> {
        let mut columns = vec![None; headers.len()];
        for (field, named) in &self.fields {
            for (order, name) in named.iter().enumerate() {
                let index = headers
                    .iter()
                    .position(|h| h == name)
                    .or_else(|| headers.iter().position(|h| header_key(h) == header_key(name)))
                    .ok_or_else(|| HeaderError::MappedColumnMissing {
                        field: field.as_str(),
                        column: name.clone(),
                        found: headers.iter().filter(|h| !h.is_empty()).take(20).cloned().collect(),
                    })?;
                if columns[index].is_some() {
                    return Err(HeaderError::MappedTwice { column: headers[index].clone() });
                }
                columns[index] = Some(if named.len() == 1 {
                    Column::Field(*field)
                } else {
                    Column::Piece { field: *field, order: order as u8 }
                });
            }
        }
        Ok(columns)
    }
}

/// What a recognised header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    Field(Field),
    Part(Part),
}

impl Target {
    fn as_str(self) -> &'static str {
        match self {
            Target::Field(f) => f.as_str(),
            Target::Part(p) => p.as_str(),
        }
    }
}

const HEADER_ALIASES: &str = include_str!("../../data/header_aliases.txt");

static ALIASES: LazyLock<HashMap<String, Target>> = LazyLock::new(|| {
    let mut map = HashMap::new();
    for line in data_lines(HEADER_ALIASES) {
        let (name, aliases) = line.split_once(':').expect("header_aliases.txt: `field: alias, ...`");
        let target = Field::from_canonical(name.trim())
            .map(Target::Field)
            .or_else(|| Part::from_canonical(name.trim()).map(Target::Part))
            .expect("header_aliases.txt: unknown field");
        for alias in aliases.split(',') {
            let previous = map.insert(header_key(alias), target);
            assert!(previous.is_none_or(|p| p == target), "header_aliases.txt: `{alias}` names two fields");
        }
        map.insert(header_key(target.as_str()), target);
    }
    map
});

/// A header cell in comparable form: lower case, `_ - . /` and runs of white space as one space
/// (HubSpot's `Country/Region` is `country region`).
fn header_key(cell: &str) -> String {
    cell.to_lowercase()
        .split(|c: char| c.is_whitespace() || matches!(c, '_' | '-' | '.' | '/'))
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The header could not be used: nothing in the file can be read as leads.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error(
        "the file is empty: expected a header row with a name column and a role or company column, such as {}",
        required_list()
    )]
    Empty,
    #[error(
        "missing required column{}: {}. Found: {}. A lead needs a `name` column (or first and last name columns) \
         and a `role` or `company` column; {} are read when present (aliases such as `title`, `Job Title` or \
         `bio` are accepted)",
        if missing.len() > 1 { "s" } else { "" }, missing.join(", "), found_list(found), optional_list()
    )]
    MissingColumns { missing: Vec<&'static str>, found: Vec<String> },
    #[error(
        "the mapping names the column `{column}` for `{field}`, but the file has no such column. Found: {}",
        found_list(found)
    )]
    MappedColumnMissing { field: &'static str, column: String, found: Vec<String> },
    #[error("the mapping uses the column `{column}` twice")]
    MappedTwice { column: String },
    #[error("column `{field}` appears twice in the header: as `{first}` and as `{second}`")]
    DuplicateColumn { field: &'static str, first: String, second: String },
    #[error("the header row is not valid UTF-8: save the file as UTF-8 (\"CSV UTF-8\" in Excel)")]
    NotUtf8,
    #[error(transparent)]
    Encoding(#[from] super::encoding::EncodingError),
    #[error("the header row could not be read: {0}")]
    Unreadable(String),
    #[error("reading the file failed: {0}")]
    Io(#[from] io::Error),
}

fn required_list() -> String {
    Field::REQUIRED.map(Field::as_str).join(",")
}

fn optional_list() -> String {
    [Field::Industry, Field::Location, Field::LinkedinBio, Field::ExternalId].map(Field::as_str).join(", ")
}

fn found_list(found: &[String]) -> String {
    if found.is_empty() {
        "no columns".to_owned()
    } else {
        found.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
    }
}

/// How a file was read: its encoding, its delimiter, and which of its columns fed each field. Stored with the
/// upload and shown in its report.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SourceReport {
    /// `csv`, or `xlsx` for an Excel workbook; empty for uploads stored before it was recorded.
    pub format: String,
    /// The sheet read, for a workbook.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
    /// The encoding's WHATWG name (`UTF-8`, `UTF-16LE`, `windows-1252`, ...).
    pub encoding: String,
    /// `,` `;` or a tab.
    pub delimiter: String,
    /// Every field with the headers that fed it, in [`Field::ALL`] order; an empty list means no column did.
    pub fields: Vec<FieldSource>,
}

/// The columns one field was read from.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldSource {
    pub field: String,
    pub columns: Vec<String>,
}

impl SourceReport {
    pub fn new<R: Read>(encoding: &str, reader: &LeadReader<R>) -> SourceReport {
        SourceReport {
            format: "csv".to_owned(),
            sheet: None,
            encoding: encoding.to_owned(),
            delimiter: (reader.delimiter() as char).to_string(),
            fields: reader
                .sources()
                .into_iter()
                .map(|(field, columns)| FieldSource { field: field.as_str().to_owned(), columns })
                .collect(),
        }
    }
}

/// What one column of the upload holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    Field(Field),
    /// A piece of a field the file splits (first and last name, city and country, or the columns a mapping
    /// lists for one field): joined into the field in `order`, and also kept as an attribute under its header.
    Piece {
        field: Field,
        order: u8,
    },
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
        Self::with_mapping(src, limits, None)
    }

    /// Like [`LeadReader::new`], with the columns the sender named for some fields.
    pub fn with_mapping(src: R, limits: Limits, mapping: Option<&Mapping>) -> Result<Self, HeaderError> {
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
        let columns = map_columns(&headers, mapping)?;
        Ok(LeadReader { tokenizer, record, columns, headers, seen: HashMap::new(), limits, done: false })
    }

    /// The columns in file order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Names of the columns kept as attributes, in file order: written back on export under these headers.
    /// Extra columns, the parts of composed fields, and a CRM's record id column (`Record ID`, `Lead ID`), which
    /// is also the lead's `external_id`, so a re-import into the CRM finds its own header.
    pub fn extra_columns(&self) -> Vec<String> {
        self.columns
            .iter()
            .zip(&self.headers)
            .filter(|(c, header)| kept_as_attribute(c, header))
            .map(|(_, header)| header.clone())
            .collect()
    }

    /// Which of the file's columns fed each field, in [`Field::ALL`] order: one header, the headers of its parts
    /// in joining order, or none (every lead has the field empty).
    pub fn sources(&self) -> Vec<(Field, Vec<String>)> {
        Field::ALL
            .into_iter()
            .map(|field| {
                let mut parts: Vec<(u8, &String)> = self
                    .columns
                    .iter()
                    .zip(&self.headers)
                    .filter_map(|(c, h)| match *c {
                        Column::Field(f) if f == field => Some((0, h)),
                        Column::Piece { field: f, order } if f == field => Some((order, h)),
                        _ => None,
                    })
                    .collect();
                parts.sort();
                (field, parts.into_iter().map(|(_, h)| h.clone()).collect())
            })
            .collect()
    }

    /// The delimiter the file uses (`,` `;` or tab), as found on its first line.
    pub fn delimiter(&self) -> u8 {
        self.tokenizer.delimiter()
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
                            "not valid UTF-8: the start of the file is, this row is not. If the file was saved by Excel \
                             as \"CSV\" on Windows, upload it again with encoding=windows-1252 (--encoding); or save it \
                             as \"CSV UTF-8\""
                                .to_owned(),
                        );
                    }
                }
            }
            if cells.iter().all(|c| c.trim().is_empty()) {
                continue; // a line of only delimiters is a blank line
            }
            let mut row = LeadRow::default();
            // No allocation unless the file has pieces.
            let mut pieces: Vec<(Field, u8, &str)> = Vec::new();
            for ((column, cell), header) in self.columns.iter().zip(&cells).zip(&self.headers) {
                match column {
                    Column::Field(field) => {
                        set_field(&mut row, *field, cell);
                        if kept_as_attribute(column, header) {
                            row.attributes.push((header.as_str(), cell));
                        }
                    }
                    Column::Piece { field, order } => {
                        pieces.push((*field, *order, cell));
                        row.attributes.push((header.as_str(), cell));
                    }
                    Column::Extra(name) => row.attributes.push((name.as_str(), cell)),
                }
            }
            let composed: Vec<(Field, String)> = if pieces.is_empty() {
                Vec::new()
            } else {
                Field::ALL.into_iter().filter_map(|f| compose(&mut pieces, f).map(|v| (f, v))).collect()
            };
            for (field, value) in &composed {
                set_field(&mut row, *field, value);
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

    /// The header to name in a row's error about `field`: its column, or its parts' (`First Name + Last Name`).
    fn header_of(&self, field: Field) -> String {
        let (_, headers) =
            self.sources().into_iter().find(|(f, _)| *f == field).unwrap_or((field, Vec::new()));
        if headers.is_empty() { field.as_str().to_owned() } else { headers.join(" + ") }
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

fn set_field<'a>(row: &mut LeadRow<'a>, field: Field, value: &'a str) {
    match field {
        Field::Name => row.name = value,
        Field::Role => row.role = value,
        Field::Company => row.company = value,
        Field::Industry => row.industry = value,
        Field::Location => row.location = value,
        Field::LinkedinBio => row.linkedin_bio = value,
        Field::ExternalId => row.external_id = Some(value),
    }
}

/// Whether a column's cells are also kept as attributes under its header.
fn kept_as_attribute(column: &Column, header: &str) -> bool {
    match column {
        Column::Extra(_) | Column::Piece { .. } => true,
        Column::Field(Field::ExternalId) => header_key(header) != "external id",
        Column::Field(_) => false,
    }
}

fn map_columns(headers: &[String], mapping: Option<&Mapping>) -> Result<Vec<Column>, HeaderError> {
    let mapped = match mapping {
        Some(m) => m.columns(headers)?,
        None => vec![None; headers.len()],
    };
    let mapped_field = |f: Field| mapped.iter().flatten().any(|c| column_field(c) == Some(f));
    let mut targets = Vec::with_capacity(headers.len());
    let mut seen: HashMap<Target, &str> = HashMap::new();
    for (h, m) in headers.iter().zip(&mapped) {
        // A column the mapping names, or one that would feed a field the mapping sets, is not guessed.
        let target = match m {
            Some(_) => None,
            None => ALIASES.get(&header_key(h)).copied().filter(|t| match *t {
                Target::Field(f) => !mapped_field(f),
                Target::Part(p) => !mapped_field(p.field()),
            }),
        };
        // A second column for a field is ambiguous (which is the role?); a second record id or a second part
        // (`State` beside `Region`) is not: the first one is used, the others stay attributes.
        let target = match target {
            Some(t)
                if seen.contains_key(&t)
                    && matches!(t, Target::Part(_) | Target::Field(Field::ExternalId)) =>
            {
                None
            }
            other => other,
        };
        if let Some(t) = target
            && let Some(first) = seen.insert(t, h)
        {
            return Err(HeaderError::DuplicateColumn {
                field: t.as_str(),
                first: first.to_owned(),
                second: h.clone(),
            });
        }
        targets.push(target);
    }
    let has = |f: Field| seen.contains_key(&Target::Field(f));
    let columns = targets
        .into_iter()
        .zip(headers)
        .zip(mapped)
        .map(|((t, h), m)| match (m, t) {
            (Some(column), _) => column,
            (None, Some(Target::Field(f))) => Column::Field(f),
            // The whole field wins over its parts, which stay attributes.
            (None, Some(Target::Part(p))) if !has(p.field()) => {
                Column::Piece { field: p.field(), order: p as u8 }
            }
            (None, Some(Target::Part(_)) | None) => Column::Extra(h.clone()),
        })
        .collect::<Vec<_>>();
    let fed = |f: Field| columns.iter().any(|c| column_field(c) == Some(f));
    let mut missing = Vec::new();
    if !fed(Field::Name) {
        missing.push(Field::Name.as_str());
    }
    if !fed(Field::Role) && !fed(Field::Company) {
        missing.extend([Field::Role.as_str(), Field::Company.as_str()]);
    }
    if missing.is_empty() {
        Ok(columns)
    } else {
        Err(HeaderError::MissingColumns {
            missing,
            found: headers.iter().filter(|h| !h.is_empty()).take(20).cloned().collect(),
        })
    }
}

/// The field a column feeds, whole or in part.
fn column_field(c: &Column) -> Option<Field> {
    match *c {
        Column::Field(f) | Column::Piece { field: f, .. } => Some(f),
        Column::Extra(_) => None,
    }
}

/// The field `field` joined from the row's pieces of it, in order (`None` when the file has no piece of it,
/// or when every piece is blank, so that the row's own checks name what is missing).
fn compose(pieces: &mut [(Field, u8, &str)], field: Field) -> Option<String> {
    pieces.sort_by_key(|(f, order, _)| (Field::ALL.iter().position(|x| x == f), *order));
    let separator = if field == Field::Location { ", " } else { " " };
    let mut out = String::new();
    for (_, _, cell) in pieces.iter().filter(|(f, _, _)| *f == field) {
        let cell = cell.trim();
        if crate::text::is_blank(cell) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(separator);
        }
        out.push_str(cell);
    }
    (!out.is_empty()).then_some(out)
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
