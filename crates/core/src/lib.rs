//! leadscore's pure scoring core: domain types (offer, lead), CSV reading, the rule layer, the prompt and the
//! reply parser, score composition and the results CSV layout. No network, database or async runtime here:
//! everything is a function of its inputs, so it is tested without mocks.

pub mod csv;
pub mod injection;
pub mod lead;
pub mod offer;
mod phrase;
pub mod prompt;
pub mod redact;
pub mod reply;
pub mod results_csv;
pub mod rules;
pub mod score;
pub mod state;
pub mod text;

pub use lead::{Attribute, Lead, LeadError, LeadRow};
pub use offer::{FieldError, Offer, OfferError, OfferInput};
pub use rules::{RuleReason, RuleScore, Rules};
pub use score::{AiOutcome, AiStatus, AiVerdict, Flag, Intent, ScoreBasis, Scoring};
pub use state::{JobEvent, JobStatus, Refused, RunEvent, RunStatus, StopReason};
