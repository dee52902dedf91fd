//! `leadscore-fake-llm`: the fake OpenAI-compatible server as a process (demos, benchmarks, multi-process tests).

use std::net::SocketAddr;

use clap::Parser;
use leadscore_fake_llm::{FakeConfig, FakeLlm};

#[derive(Debug, Parser)]
#[command(version, about = "An OpenAI-compatible fake chat-completions server with fault injection")]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed on stdout).
    #[arg(long, env = "FAKE_LLM_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    #[command(flatten)]
    config: FakeConfig,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let fake = FakeLlm::new(args.config);
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return std::process::ExitCode::from(2);
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("http://{addr}/v1"),
        Err(e) => eprintln!("warning: {e}"),
    }
    if let Err(e) = axum::serve(listener, fake.router()).await {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
