//! The client against the fake OpenAI-compatible server over real HTTP, and the shared gate against real Redis.

use std::time::{Duration, Instant};

use leadscore_core::prompt::build_prompt;
use leadscore_core::{Intent, Lead, Offer};
use leadscore_fake_llm::{FakeConfig, FakeLlm, Fault, verdict_for};
use leadscore_llm::{Client, Gate, GateError, LlmConfig, LlmError};

fn offer() -> Offer {
    Offer::from_json(
        r#"{"name": "AI Outreach Automation", "value_props": ["24/7 outreach", "6x more meetings"],
            "ideal_use_cases": ["B2B SaaS mid-market"]}"#,
    )
    .expect("offer")
}

fn lead(bio: &str) -> Lead {
    Lead {
        name: "Ava Patel".into(),
        role: "Head of Growth".into(),
        company: "FlowMetrics".into(),
        industry: "B2B SaaS".into(),
        location: "Berlin".into(),
        linkedin_bio: bio.into(),
        external_id: None,
        attributes: Vec::new(),
    }
}

async fn fake(config: FakeConfig) -> (FakeLlm, String) {
    let fake = FakeLlm::new(config);
    let addr = fake.spawn("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
    (fake, format!("http://{addr}/v1"))
}

fn client(base: &str, model: &str, tweak: impl FnOnce(&mut LlmConfig)) -> Client {
    let mut config = LlmConfig::for_base_url(base, model);
    config.rpm = 60_000;
    config.request_timeout = Duration::from_millis(500);
    config.deadline = Duration::from_secs(20);
    tweak(&mut config);
    let gate = Gate::local(config.rpm, config.tpm);
    Client::new(config, gate).expect("client")
}

fn expected(lead: &Lead) -> Intent {
    let prompt = build_prompt(&offer(), lead);
    Intent::parse(verdict_for(&prompt.user).0).expect("intent")
}

#[tokio::test]
async fn happy_path_uses_json_schema_and_reports_usage() {
    let (fake, base) = fake(FakeConfig::default()).await;
    let c = client(&base, "gpt-4.1-mini", |_| {});
    let l = lead("Scaling outbound for a 40-person sales team");
    let a = c.classify(&build_prompt(&offer(), &l)).await;
    let verdict = a.result.expect("verdict");
    assert_eq!(verdict.intent, expected(&l));
    assert!(verdict.reasoning.starts_with("Fake assessment"));
    assert_eq!(a.calls, 1);
    let stats = fake.stats();
    assert_eq!(stats.response_formats.get("json_schema"), Some(&1));
    assert_eq!(
        (a.usage.prompt_tokens, a.usage.completion_tokens),
        (stats.prompt_tokens, stats.completion_tokens)
    );
    assert!(a.usage.prompt_tokens > 100, "{:?}", a.usage);
}

#[tokio::test]
async fn retry_after_of_a_429_is_waited_for() {
    let (fake, base) = fake(FakeConfig { retry_after_ms: 700, ..FakeConfig::default() }).await;
    fake.script([Fault::RateLimited]);
    let c = client(&base, "gpt-4.1-mini", |_| {});
    let a = c.classify(&build_prompt(&offer(), &lead("bio"))).await;
    assert!(a.result.is_ok(), "{:?}", a.result);
    let arrivals = fake.stats().arrivals_ms;
    assert_eq!(arrivals.len(), 2);
    let gap = arrivals[1] - arrivals[0];
    assert!(gap >= 700, "the second request came {gap} ms after the 429 that said retry after 700 ms");
}

#[tokio::test]
async fn server_errors_and_timeouts_are_retried_until_success() {
    let (fake, base) = fake(FakeConfig { hang_ms: 5_000, ..FakeConfig::default() }).await;
    fake.script([Fault::ServerError, Fault::Unavailable, Fault::Timeout]);
    let c = client(&base, "gpt-4.1-mini", |_| {});
    let a = c.classify(&build_prompt(&offer(), &lead("bio"))).await;
    assert!(a.result.is_ok(), "{:?}", a.result);
    assert_eq!(a.calls, 4);
    let stats = fake.stats();
    assert_eq!((stats.statuses.get("500"), stats.statuses.get("503")), (Some(&1), Some(&1)));
}

#[tokio::test]
async fn transient_failures_end_the_attempt_after_max_tries() {
    let (fake, base) = fake(FakeConfig { p500: 1.0, ..FakeConfig::default() }).await;
    let c = client(&base, "gpt-4.1-mini", |c| c.max_tries = 3);
    let a = c.classify(&build_prompt(&offer(), &lead("bio"))).await;
    match a.result {
        Err(e @ LlmError::Transient { .. }) => {
            assert!(e.retryable());
            assert!(e.to_string().contains("500") && e.to_string().contains("3 tries"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.stats().requests, 3);
}

#[tokio::test]
async fn a_malformed_reply_is_retried_once_then_fails_the_attempt() {
    let (fake, base) = fake(FakeConfig::default()).await;
    fake.script([Fault::Malformed]);
    let c = client(&base, "gpt-4.1-mini", |_| {});
    let a = c.classify(&build_prompt(&offer(), &lead("bio"))).await;
    assert!(a.result.is_ok() && a.calls == 2, "{:?}", a.result);

    fake.script([Fault::Malformed, Fault::Truncated]);
    let a = c.classify(&build_prompt(&offer(), &lead("bio"))).await;
    match a.result {
        Err(LlmError::InvalidReply(why)) => assert!(why.contains("cut off"), "{why}"),
        other => panic!("{other:?}"),
    }
    for fault in [Fault::Refusal, Fault::NoChoices] {
        fake.script([fault, fault]);
        let a = c.classify(&build_prompt(&offer(), &lead("bio"))).await;
        assert!(matches!(a.result, Err(LlmError::InvalidReply(_))), "{fault:?}: {:?}", a.result);
    }
}

#[tokio::test]
async fn a_bad_key_opens_the_breaker_and_nothing_more_is_sent() {
    let (fake, base) = fake(FakeConfig { api_key: Some("sk-right".into()), ..FakeConfig::default() }).await;
    let c = client(&base, "gpt-4.1-mini", |c| c.api_key = Some("sk-wrong".into()));
    let a = c.classify(&build_prompt(&offer(), &lead("bio"))).await;
    assert!(matches!(a.result, Err(LlmError::Fatal { status: 401, .. })), "{:?}", a.result);
    for _ in 0..5 {
        let a = c.classify(&build_prompt(&offer(), &lead("bio"))).await;
        match a.result {
            Err(LlmError::Blocked(b)) => {
                assert!(b.reason.contains("401") && b.retry_in.is_none(), "{b:?}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(fake.stats().requests, 1, "only the first request reached the provider");
    c.gate().reset().await.expect("reset");
    assert!(c.gate().blocked().await.expect("local").is_none());
}

#[tokio::test]
async fn an_unknown_model_opens_the_breaker() {
    let (_fake, base) =
        fake(FakeConfig { model: Some("gpt-4.1-mini".into()), ..FakeConfig::default() }).await;
    let c = client(&base, "gpt-3.5-turbo", |_| {});
    let a = c.classify(&build_prompt(&offer(), &lead("bio"))).await;
    assert!(matches!(a.result, Err(LlmError::Fatal { status: 404, .. })), "{:?}", a.result);
    assert!(c.gate().blocked().await.expect("local").is_some());
}

#[tokio::test]
async fn servers_without_json_schema_get_json_object() {
    let (fake, base) = fake(FakeConfig { no_json_schema: true, ..FakeConfig::default() }).await;
    let c = client(&base, "llama3.1:8b", |_| {});
    for bio in ["one", "two"] {
        let a = c.classify(&build_prompt(&offer(), &lead(bio))).await;
        assert!(a.result.is_ok(), "{:?}", a.result);
    }
    let formats = fake.stats().response_formats;
    assert_eq!((formats.get("json_schema"), formats.get("json_object")), (Some(&1), Some(&2)), "{formats:?}");
}

#[tokio::test]
async fn reasoning_models_get_no_temperature_even_when_misnamed() {
    let (fake, base) = fake(FakeConfig::default()).await;
    let c = client(&base, "o3-mini", |_| {});
    assert!(c.classify(&build_prompt(&offer(), &lead("bio"))).await.result.is_ok());
    assert_eq!(fake.stats().requests, 1, "guessed from the name");
    // A reasoning model behind a name we cannot recognise: the 400 teaches the client.
    let c = client(&base, "o3-mini", |c| c.kind = leadscore_llm::ModelKind::Chat);
    fake.reset();
    assert!(c.classify(&build_prompt(&offer(), &lead("bio"))).await.result.is_ok());
    assert_eq!(fake.stats().statuses.get("400"), Some(&1));
}

#[tokio::test]
async fn a_plain_reply_in_a_code_fence_is_accepted() {
    // A server that knows neither json_schema nor json_object: the client ends up asking in plain text and the
    // reply comes inside prose and a code fence.
    let config = FakeConfig { no_json_schema: true, no_json_object: true, ..FakeConfig::default() };
    let (fake, base) = fake(config).await;
    let c = client(&base, "llama3.1:8b", |_| {});
    let l = lead("bio");
    let a = c.classify(&build_prompt(&offer(), &l)).await;
    assert_eq!(a.result.expect("verdict").intent, expected(&l));
    assert_eq!(fake.stats().response_formats.get("none"), Some(&1));
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn prefix(test: &str) -> String {
    format!("leadscore-test:{test}:{}:", fastrand_suffix())
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[tokio::test]
async fn redis_gate_shares_one_budget_between_gates() {
    let p = prefix("budget");
    let a = Gate::redis(&redis_url(), &p, 600, 10_000_000).expect("gate");
    let b = Gate::redis(&redis_url(), &p, 600, 10_000_000).expect("gate");
    let start = Instant::now();
    let far = start + Duration::from_secs(30);
    let (ra, rb) = tokio::join!(
        async {
            for _ in 0..5 {
                a.acquire(100, far).await.expect("a");
            }
        },
        async {
            for _ in 0..5 {
                b.acquire(100, far).await.expect("b");
            }
        }
    );
    let _ = (ra, rb);
    // 10 requests at 10/s with a burst of 1: at least 0.9 s whoever asks.
    assert!(start.elapsed() >= Duration::from_millis(850), "{:?}", start.elapsed());
}

#[tokio::test]
async fn redis_breaker_is_seen_by_every_gate() {
    let p = prefix("breaker");
    let a = Gate::redis(&redis_url(), &p, 60_000, 10_000_000).expect("gate");
    let b = Gate::redis(&redis_url(), &p, 60_000, 10_000_000).expect("gate");
    let far = Instant::now() + Duration::from_secs(5);
    b.acquire(1, far).await.expect("closed");
    a.trip("401 from the provider: Incorrect API key provided.").await;
    match b.acquire(1, far).await {
        Err(GateError::Blocked(blocked)) => {
            assert!(blocked.reason.contains("401") && blocked.retry_in.is_none())
        }
        other => panic!("{other:?}"),
    }
    b.reset().await.expect("reset");
    a.acquire(1, far).await.expect("closed again");
    for _ in 0..leadscore_llm::FAILURES_TO_OPEN {
        a.failure("503 from the provider").await;
    }
    let blocked = b.blocked().await.expect("redis").expect("open for a cool-down");
    assert!(blocked.retry_in.is_some() && blocked.reason.contains("503"), "{blocked:?}");
    b.reset().await.expect("reset");
}

#[tokio::test]
async fn redis_penalty_holds_every_gate() {
    let p = prefix("penalty");
    let a = Gate::redis(&redis_url(), &p, 60_000, 10_000_000).expect("gate");
    let b = Gate::redis(&redis_url(), &p, 60_000, 10_000_000).expect("gate");
    a.penalize(Duration::from_millis(400)).await;
    let start = Instant::now();
    b.acquire(1, start + Duration::from_secs(5)).await.expect("granted");
    assert!(start.elapsed() >= Duration::from_millis(350), "{:?}", start.elapsed());
}

#[tokio::test]
async fn an_unreachable_redis_keeps_the_gate_closed() {
    // Nothing listens on port 1.
    let gate = Gate::redis("redis://127.0.0.1:1", "x:", 600, 10_000).expect("url parses");
    let start = Instant::now();
    let r = gate.acquire(1, start + Duration::from_millis(1500)).await;
    assert!(matches!(r, Err(GateError::Unavailable(_))), "{r:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(1400),
        "it waited rather than letting the request through"
    );
}

#[tokio::test]
async fn redis_cache_round_trips_batches() {
    use leadscore_core::AiVerdict;
    let cache =
        leadscore_llm::RedisCache::new(&redis_url(), &prefix("cache"), Duration::from_secs(60)).expect("url");
    let v = |i: Intent| AiVerdict { intent: i, reasoning: format!("{i:?} because") };
    cache.put_many(&[("a".into(), v(Intent::High)), ("b".into(), v(Intent::Low))]).await;
    let got = cache.get_many(&["a".into(), "missing".into(), "b".into()]).await;
    assert_eq!(got.len(), 2);
    assert_eq!((got["a"].intent, got["b"].intent), (Intent::High, Intent::Low));
    let down =
        leadscore_llm::RedisCache::new("redis://127.0.0.1:1", "x:", Duration::from_secs(1)).expect("url");
    assert!(down.get_many(&["a".into()]).await.is_empty(), "an unreachable cache is a miss, not an error");
}
