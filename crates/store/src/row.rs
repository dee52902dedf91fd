//! Reading columns the same way from a Postgres and a SQLite row.

use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::Result;

pub(crate) trait DbRow {
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn int(&self, col: &str) -> Result<i64>;
    fn time(&self, col: &str) -> Result<OffsetDateTime>;
    fn opt_time(&self, col: &str) -> Result<Option<OffsetDateTime>>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    fn opt_float(&self, col: &str) -> Result<Option<f64>>;
    fn json<T: DeserializeOwned>(&self, col: &str) -> Result<T>;
}

macro_rules! impl_db_row {
    ($row:ty) => {
        impl DbRow for $row {
            fn text(&self, col: &str) -> Result<String> {
                Ok(self.try_get::<String, _>(col)?)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>> {
                Ok(self.try_get::<Option<String>, _>(col)?)
            }
            fn int(&self, col: &str) -> Result<i64> {
                Ok(self.try_get::<i64, _>(col)?)
            }
            fn time(&self, col: &str) -> Result<OffsetDateTime> {
                Ok(self.try_get::<OffsetDateTime, _>(col)?)
            }
            fn opt_time(&self, col: &str) -> Result<Option<OffsetDateTime>> {
                Ok(self.try_get::<Option<OffsetDateTime>, _>(col)?)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>> {
                Ok(self.try_get::<Option<i64>, _>(col)?)
            }
            fn opt_float(&self, col: &str) -> Result<Option<f64>> {
                Ok(self.try_get::<Option<f64>, _>(col)?)
            }
            fn json<T: DeserializeOwned>(&self, col: &str) -> Result<T> {
                Ok(self.try_get::<Json<T>, _>(col)?.0)
            }
        }
    };
}

impl_db_row!(PgRow);
impl_db_row!(SqliteRow);
