//! The client against servers that misbehave at the HTTP level: a redirect (never followed, the prompt stays
//! home) and an endless body (read up to a cap). Each is a few lines of raw HTTP on a local socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use leadscore_core::prompt::build_prompt;
use leadscore_core::{Lead, Offer};
use leadscore_llm::{Client, Gate, LlmConfig, LlmError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves every connection with `head` followed by `body_bytes` bytes of `x`; counts the connections.
async fn raw_server(head: String, body_bytes: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let head = head.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 64 * 1024];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(head.as_bytes()).await;
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = body_bytes;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if socket.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    (format!("http://{addr}/v1"), hits)
}

fn client(base: &str) -> Client {
    let mut config = LlmConfig::for_base_url(base, "gpt-4.1-mini");
    config.request_timeout = Duration::from_secs(5);
    config.deadline = Duration::from_secs(10);
    config.max_tries = 2;
    let gate = Gate::local(config.rpm, config.tpm);
    Client::new(config, gate).expect("client")
}

fn prompt() -> leadscore_core::prompt::Prompt {
    let offer = Offer::from_json(r#"{"name": "x", "ideal_use_cases": ["B2B SaaS"]}"#).expect("offer");
    let lead = Lead {
        name: "Ava".into(),
        role: "CEO".into(),
        company: "Acme".into(),
        industry: "B2B SaaS".into(),
        location: "Berlin".into(),
        linkedin_bio: "secret bio".into(),
        external_id: None,
        attributes: Vec::new(),
    };
    build_prompt(&offer, &lead)
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_names_its_status() {
    let (elsewhere, elsewhere_hits) =
        raw_server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".into(), 0).await;
    let head = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {elsewhere}/chat/completions\r\nContent-Length: 0\r\n\r\n"
    );
    let (base, hits) = raw_server(head, 0).await;
    let attempt = client(&base).classify(&prompt()).await;
    match attempt.result {
        Err(LlmError::Fatal { status: 307, message }) => {
            assert!(message.contains("307") && message.contains("not followed"), "{message}");
        }
        other => panic!("expected a fatal 307, got {other:?}"),
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "asked once");
    assert_eq!(elsewhere_hits.load(Ordering::SeqCst), 0, "the prompt never went where the redirect pointed");
}

#[tokio::test]
async fn an_endless_body_is_cut_off_at_the_cap() {
    let big = 64 * 1024 * 1024;
    for head in [
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {big}\r\n\r\n"),
        // No length announced: the cap is enforced while reading.
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n".to_owned(),
    ] {
        let (base, _) = raw_server(head, big).await;
        let attempt = client(&base).classify(&prompt()).await;
        match attempt.result {
            Err(LlmError::Transient { message, .. }) => {
                assert!(message.contains(&leadscore_llm::MAX_RESPONSE_BYTES.to_string()), "{message}");
            }
            other => panic!("expected a transient failure, got {other:?}"),
        }
    }
}
