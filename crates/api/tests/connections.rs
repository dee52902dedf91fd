//! The server's bounds on clients over real TCP (issue 13): header and body timeouts, the request deadline,
//! the connection cap shedding idle connections, and shutdown draining within its deadline. Small limits, and
//! never a timing assertion beyond "finished before a generous bound".

use std::net::SocketAddr;
use std::time::Duration;

use leadscore_api::{AppState, ServerLimits, UploadLimits};
use leadscore_store::Backend;
use leadscore_store::test_support::{TestDb, seed};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far longer than any limit the tests set: reaching it means the bound did not work.
const BOUND: Duration = Duration::from_secs(15);

struct Server {
    addr: SocketAddr,
    db: TestDb,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(limits: ServerLimits) -> Server {
        let db = TestDb::new(Backend::Sqlite).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = AppState {
            store: db.store.clone(),
            upload_limits: UploadLimits::default(),
            ai: None,
            key_limits: leadscore_api::KeyLimiter::default(),
            access: leadscore_api::guard::Access::decide(&db.store, addr, &[]).await.expect("access"),
            compat: Default::default(),
        };
        let served = tokio::spawn(leadscore_api::serve_with_limits(listener, state, limits, async {
            let _ = stopped.await;
        }));
        Server { addr, db, stop: Some(stop), served }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.expect("connect")
    }

    /// A queued run (no workers run here, so its event stream stays open until it is cancelled).
    async fn queued_run(&self) -> String {
        let (offer_id, upload_id) = seed(&self.db.store, 3).await;
        let r = http()
            .post(self.url("/v1/leads/score"))
            .json(&json!({"offer_id": offer_id, "upload_id": upload_id}))
            .send()
            .await
            .expect("score");
        assert!(r.status().is_success(), "{}", r.status());
        let run: Value = r.json().await.expect("run");
        run["id"].as_str().expect("run id").to_owned()
    }
}

fn http() -> reqwest::Client {
    leadscore_llm::install_crypto();
    reqwest::Client::new()
}

fn limits() -> ServerLimits {
    ServerLimits {
        header_timeout: Duration::from_secs(30),
        body_idle_timeout: Duration::from_secs(30),
        request_deadline: Duration::from_secs(30),
        keep_alive_idle: Duration::from_secs(30),
        max_connections: Some(1000),
        drain_timeout: Duration::from_secs(30),
    }
}

/// Reads until the peer closes (or resets) the connection; what arrived before that.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closed the connection before the bound");
    all
}

/// Reads until `needle` has arrived.
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&all).contains(needle) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => panic!("closed before {needle:?}: {}", String::from_utf8_lossy(&all)),
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} before the bound: {}", String::from_utf8_lossy(&all)));
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_never_finish_are_closed_after_the_header_timeout() {
    let server = Server::start(ServerLimits { header_timeout: Duration::from_secs(1), ..limits() }).await;
    let mut slow = server.connect().await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-slow: ").await.expect("write");
    let answer = read_to_close(&mut slow).await;
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"), "{}", String::from_utf8_lossy(&answer));
    let mut silent = server.connect().await;
    read_to_close(&mut silent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_body_fails_with_408_after_the_idle_timeout() {
    let server = Server::start(ServerLimits { body_idle_timeout: Duration::from_secs(1), ..limits() }).await;
    let mut client = server.connect().await;
    client
        .write_all(
            b"POST /v1/leads/upload HTTP/1.1\r\nhost: localhost\r\ncontent-type: text/csv\r\ncontent-length: 100000\r\n\r\n\
              name,role,company,industry,location,linkedin_bio\n",
        )
        .await
        .expect("write");
    let answer = read_until(&mut client, "}").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_its_deadline_is_answered_with_a_503_problem() {
    let server = Server::start(ServerLimits { request_deadline: Duration::from_secs(1), ..limits() }).await;
    let mut client = server.connect().await;
    // The handler waits on a body that trickles in slower than the deadline, faster than the idle timeout.
    client
        .write_all(b"POST /v1/offers HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
        .await
        .expect("write");
    let answer = read_until(&mut client, "}").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("deadline"), "{answer}");
    // Clients that follow `Retry-After` (the generated ones in docs/clients.md) pause and try again.
    assert!(answer.to_ascii_lowercase().contains("\r\nretry-after: 2\r\n"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_outlives_the_request_deadline() {
    let server = Server::start(ServerLimits { request_deadline: Duration::from_secs(1), ..limits() }).await;
    let run = server.queued_run().await;
    let mut events = server.connect().await;
    let get = format!("GET /v1/runs/{run}/events HTTP/1.1\r\nhost: localhost\r\n\r\n");
    events.write_all(get.as_bytes()).await.expect("write");
    let first = read_until(&mut events, "event: status").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cancelled = http().post(server.url(&format!("/v1/runs/{run}/cancel"))).send().await;
    assert!(cancelled.expect("cancel").status().is_success());
    read_until(&mut events, "cancel").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_sheds_idle_connections_and_answers_a_new_client() {
    let server = Server::start(ServerLimits { max_connections: Some(20), ..limits() }).await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(server.connect().await);
    }
    // One that sent a request and now waits on keep-alive.
    let mut kept_alive = server.connect().await;
    kept_alive.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n").await.expect("write");
    read_until(&mut kept_alive, "\r\n\r\n").await;
    for _ in 0..5 {
        let r = tokio::time::timeout(BOUND, http().get(server.url("/healthz")).send()).await;
        assert_eq!(r.expect("answered before the bound").expect("healthz").status(), 200);
    }
    // The first connections accepted, which never spoke, were the ones closed.
    read_to_close(&mut idle[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_finish_and_cuts_an_event_stream_at_the_drain_deadline() {
    let mut server = Server::start(ServerLimits { drain_timeout: Duration::from_secs(2), ..limits() }).await;
    let run = server.queued_run().await;
    let mut events = server.connect().await;
    let get = format!("GET /v1/runs/{run}/events HTTP/1.1\r\nhost: localhost\r\n\r\n");
    events.write_all(get.as_bytes()).await.expect("write");
    read_until(&mut events, "event: status").await;
    // A request in flight when shutdown starts: its body is still on its way.
    let body = br#"{"name": "x", "value_props": [], "ideal_use_cases": ["B2B SaaS"]}"#;
    let mut in_flight = server.connect().await;
    let head = format!(
        "POST /v1/offers HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    in_flight.write_all(head.as_bytes()).await.expect("write");
    in_flight.write_all(&body[..5]).await.expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = server.stop.take().expect("stop").send(());
    tokio::time::sleep(Duration::from_millis(200)).await;
    in_flight.write_all(&body[5..]).await.expect("write");
    let answer = read_until(&mut in_flight, "}").await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let served = tokio::time::timeout(BOUND, &mut server.served).await;
    served.expect("shutdown finished before the bound").expect("join").expect("serve");
    read_to_close(&mut events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout() {
    let server = Server::start(ServerLimits { keep_alive_idle: Duration::from_secs(1), ..limits() }).await;
    let mut client = server.connect().await;
    client.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n").await.expect("write");
    let answer = read_until(&mut client, "\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    read_to_close(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_a_request_in_flight_is_never_shed() {
    let server = Server::start(ServerLimits { max_connections: Some(1), ..limits() }).await;
    let run = server.queued_run().await;
    let mut events = server.connect().await;
    let get = format!("GET /v1/runs/{run}/events HTTP/1.1\r\nhost: localhost\r\n\r\n");
    events.write_all(get.as_bytes()).await.expect("write");
    read_until(&mut events, "event: status").await;
    // The only place is taken by a live stream: a newcomer is refused, the stream goes on.
    let mut newcomer = server.connect().await;
    let refused = String::from_utf8_lossy(&read_to_close(&mut newcomer).await).into_owned();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let control = leadscore_store::Control::Cancel;
    server.db.store.control_run(leadscore_store::DEFAULT_WORKSPACE, &run, control).await.expect("cancel");
    read_until(&mut events, "cancel").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_after_the_body_idle_timeout() {
    let server = Server::start(ServerLimits { body_idle_timeout: Duration::from_secs(1), ..limits() }).await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small receive buffer");
    let mut client = socket.connect(server.addr).await.expect("connect");
    // Far more answer than the socket buffers hold, and the client reads none of it for a while.
    let requests = 500;
    let one = "GET /openapi.json HTTP/1.1\r\nhost: localhost\r\n\r\n";
    client.write_all(one.repeat(requests).as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let read = String::from_utf8_lossy(&read_to_close(&mut client).await).into_owned();
    let answered = read.matches("HTTP/1.1 200").count();
    assert!(answered < requests, "{answered} of {requests} answered: the server kept waiting on the client");
}
