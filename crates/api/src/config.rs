//! The API's settings from the typed configuration (`leadscore_ops::config`).

use leadscore_ops::config::{DrainArgs, HttpArgs};
use leadscore_store::Store;

use crate::compat::{BadPublicUrl, CompatConfig};
use crate::{AiSettings, AppState, KeyLimiter, KeyLimits, ServerLimits, guard};

/// How long the server waits on clients and how many it keeps.
pub fn server_limits(http: &HttpArgs, drain: &DrainArgs) -> ServerLimits {
    use std::time::Duration;
    ServerLimits {
        header_timeout: Duration::from_secs(http.header_timeout_secs),
        body_idle_timeout: Duration::from_secs(http.body_idle_timeout_secs),
        request_deadline: Duration::from_secs(http.request_deadline_secs),
        keep_alive_idle: Duration::from_secs(http.keep_alive_secs),
        max_connections: http.max_connections.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        drain_timeout: drain.drain(),
    }
}

/// What each API key may do.
pub fn key_limits(http: &HttpArgs) -> KeyLimits {
    KeyLimits {
        rate_per_sec: http.key_rate_per_sec,
        burst: http.key_burst,
        max_uploads: http.key_max_uploads,
        max_active_runs: http.key_max_active_runs,
    }
}

impl AppState {
    /// Everything the handlers need, from the configuration read at start.
    pub fn new(
        store: Store,
        http: &HttpArgs,
        ai: Option<AiSettings>,
        access: guard::Access,
    ) -> Result<AppState, BadPublicUrl> {
        Ok(AppState {
            store,
            upload_limits: http.upload_limits(),
            ai,
            key_limits: KeyLimiter::new(key_limits(http)),
            access,
            compat: CompatConfig::new(http.public_url.as_deref(), http.compat_wait_max_leads)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use leadscore_ops::config::ApiCli;

    use super::*;

    /// The flags' defaults and the libraries' `Default`s are the production values twice: they must agree.
    #[test]
    fn the_defaults_of_the_flags_are_the_libraries_defaults() {
        let cli =
            ApiCli::try_parse_from(["leadscore-api", "--database-url", "sqlite://x.db"]).expect("parses");
        assert_eq!(server_limits(&cli.http, &cli.drain), ServerLimits::default());
        assert_eq!(key_limits(&cli.http), KeyLimits::default());
        assert_eq!(cli.http.compat_wait_max_leads, crate::compat::COMPAT_WAIT_MAX_LEADS);
        let uploads = cli.http.upload_limits();
        let d = leadscore_store::UploadLimits::default();
        assert_eq!(
            (uploads.max_bytes, uploads.max_rows, uploads.max_field_bytes),
            (d.max_bytes, d.max_rows, d.max_field_bytes)
        );
    }
}
