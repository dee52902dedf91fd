pub mod health;
pub mod leads;
pub mod offers;
pub mod runs;
pub mod uploads;
