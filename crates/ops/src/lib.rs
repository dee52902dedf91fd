//! What `leadscore serve`, `leadscore-api` and `leadscore-worker` share to run as a service: one typed
//! configuration ([`config`]), telemetry (logs, metrics, traces) and the operations listener (`/metrics`,
//! `/healthz`, `/readyz`). The libraries below it (store, llm) know nothing of flags or environment variables.

pub mod config;
pub mod metrics;
