//! `leadscore healthcheck [URL]`: a container's health check without curl in the image.

use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// The readiness endpoint to ask (a process's operations listener, or the API's own `/readyz`).
    #[arg(default_value = "http://127.0.0.1:9464/readyz")]
    url: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    timeout_secs: u64,
}

/// Exit 0 on a 2xx answer; 1 (with the status and the start of the body, or the connection error) otherwise.
pub fn run(args: &HealthcheckArgs) -> ExitCode {
    match crate::serve::block_on_result(check(args)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(why)) | Err(why) => {
            eprintln!("not ready: {why}");
            ExitCode::from(1)
        }
    }
}

async fn check(args: &HealthcheckArgs) -> Result<(), String> {
    leadscore_llm::install_crypto();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client.get(&args.url).send().await.map_err(|e| format!("{}: {e}", args.url))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    // The body says why (e.g. which dependency is down); a few hundred bytes are enough.
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(400).collect();
    Err(format!("{} answered {status}: {body}", args.url))
}
