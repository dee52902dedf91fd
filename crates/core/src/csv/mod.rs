//! Reading leads from CSV: a streaming tokenizer and the lead reader on top of it.

mod leads;
mod tokenizer;

pub use leads::{Column, Field, HeaderError, LeadReader, RejectedRow, Row};
pub use tokenizer::Limits;
