//! Reading leads from CSV: a streaming tokenizer and the lead reader on top of it.

pub mod encoding;
mod leads;
mod tokenizer;

pub use leads::{
    Column, Field, FieldSource, HeaderError, LeadReader, Mapping, MappingError, Part, RejectedRow, Row,
    SourceReport,
};
pub use tokenizer::Limits;
