//! Log output (text for now; replaced by the telemetry module with JSON logs and OTLP traces).

use crate::config::TelemetryArgs;

pub fn init(args: &TelemetryArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
