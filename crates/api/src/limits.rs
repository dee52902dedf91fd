//! Per-key limits: the request rate of each API key (a GCRA bucket from `governor`), its uploads in progress
//! (a semaphore held for the upload request's duration), and its workspace's unfinished runs (counted by the
//! store when a run is created). Each answers 429 with `Retry-After`.
//!
//! Limits apply after authentication: [`admit`] resolves the key first, so only keys the store knows (or, with
//! no key at all, the one keyless identity) ever get an entry. A client spraying random keys is refused by
//! auth and adds nothing to these maps; the entry counts are capped all the same and idle entries dropped.
//! Health, readiness and the API document are not limited (a load balancer's probes must not be throttled by
//! one busy client).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::AppState;
use crate::extract::Workspace;
use crate::problem::ApiError;

/// Identities tracked at most by each map before idle entries are dropped (there are far fewer keys).
const MAX_TRACKED: usize = 10_000;
/// The `Retry-After` of a refused upload or run: a hint only, since the limit frees when one of the key's
/// uploads or runs ends, which nothing here can foresee.
pub(crate) const BUSY_RETRY_AFTER_SECS: u64 = 5;

/// What each API key may do; 0 turns a limit off. `Default` gives the production values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimits {
    /// Requests per second, sustained.
    pub rate_per_sec: u32,
    /// Requests accepted at once above the sustained rate (the bucket's size).
    pub burst: u32,
    /// Uploads in progress at once.
    pub max_uploads: u32,
    /// Unfinished (queued, running, paused, blocked) runs of the key's workspace.
    pub max_active_runs: u32,
}

impl Default for KeyLimits {
    fn default() -> Self {
        KeyLimits { rate_per_sec: 50, burst: 100, max_uploads: 4, max_active_runs: 32 }
    }
}

impl KeyLimits {
    /// No limit at all.
    pub const OFF: KeyLimits = KeyLimits { rate_per_sec: 0, burst: 0, max_uploads: 0, max_active_runs: 0 };
}

/// Who a limit counts against: one API key (a process-local hash of it, so no secret is kept), or every
/// request of keyless mode together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Identity {
    Key(u64),
    Keyless,
}

/// The limits in force and their counters, shared by every request of the process.
#[derive(Clone)]
pub struct KeyLimiter(Arc<Inner>);

struct Inner {
    limits: KeyLimits,
    rate: Option<DefaultKeyedRateLimiter<Identity>>,
    uploads: Mutex<HashMap<Identity, Arc<Semaphore>>>,
    hasher: RandomState,
}

impl Default for KeyLimiter {
    fn default() -> Self {
        KeyLimiter::new(KeyLimits::default())
    }
}

impl std::fmt::Debug for KeyLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("KeyLimiter").field(&self.0.limits).finish()
    }
}

/// Seconds to wait, rounded up, at least 1 (`Retry-After` takes whole seconds).
fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl KeyLimiter {
    pub fn new(limits: KeyLimits) -> KeyLimiter {
        let rate = NonZeroU32::new(limits.rate_per_sec).map(|per_sec| {
            let burst = NonZeroU32::new(limits.burst.max(limits.rate_per_sec)).unwrap_or(per_sec);
            RateLimiter::keyed(Quota::per_second(per_sec).allow_burst(burst))
        });
        KeyLimiter(Arc::new(Inner {
            limits,
            rate,
            uploads: Mutex::new(HashMap::new()),
            hasher: RandomState::new(),
        }))
    }

    pub fn limits(&self) -> KeyLimits {
        self.0.limits
    }

    /// The cap handed to the store when a run is created (`None`: no cap).
    pub fn max_active_runs(&self) -> Option<u32> {
        Some(self.0.limits.max_active_runs).filter(|n| *n > 0)
    }

    /// How many identities the limiter holds state for (request buckets and upload counters).
    pub fn tracked(&self) -> usize {
        let uploads = self.0.uploads.lock().unwrap_or_else(PoisonError::into_inner).len();
        self.0.rate.as_ref().map_or(0, |r| r.len()) + uploads
    }

    fn identity(&self, headers: &HeaderMap) -> Identity {
        match bearer(headers) {
            Some(key) => Identity::Key(self.0.hasher.hash_one(key)),
            None => Identity::Keyless,
        }
    }

    /// Takes one request from the identity's bucket, or says how long until one is available.
    fn take_request(&self, id: Identity) -> Result<(), ApiError> {
        let Some(rate) = &self.0.rate else { return Ok(()) };
        let taken = rate.check_key(&id);
        if rate.len() > MAX_TRACKED {
            rate.retain_recent();
        }
        taken.map_err(|not_until| {
            let secs = whole_seconds(not_until.wait_time_from(rate.clock().now()));
            ApiError::TooManyRequests {
                detail: format!(
                    "more than {} requests per second (bursts of {}) with this API key; retry in {secs} s",
                    self.0.limits.rate_per_sec,
                    self.0.limits.burst.max(self.0.limits.rate_per_sec)
                ),
                retry_after: secs,
            }
        })
    }

    /// A place among the identity's uploads in progress, held until the permit is dropped.
    fn take_upload(&self, id: Identity) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        let max = self.0.limits.max_uploads;
        if max == 0 {
            return Ok(None);
        }
        let mut uploads = self.0.uploads.lock().unwrap_or_else(PoisonError::into_inner);
        if uploads.len() >= MAX_TRACKED && !uploads.contains_key(&id) {
            // Only the map holds a semaphore with no upload in progress.
            uploads.retain(|_, s| Arc::strong_count(s) > 1);
        }
        let slots = uploads.entry(id).or_insert_with(|| Arc::new(Semaphore::new(max as usize))).clone();
        drop(uploads);
        slots.try_acquire_owned().map(Some).map_err(|_| ApiError::TooManyRequests {
            detail: format!(
                "{max} uploads are already in progress with this API key; retry when one of them has finished"
            ),
            retry_after: BUSY_RETRY_AFTER_SECS,
        })
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case("bearer ").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Routes that are never limited: health, readiness and the API document.
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/openapi.json") || path == "/docs" || path.starts_with("/docs/")
}

/// A refusal in the shape of the route: the seed-compatible `/api/...` routes answer `{"error": ...}` like
/// every other error of theirs, the rest problem+json.
fn refuse(path: &str, e: ApiError) -> Response {
    if path.starts_with("/api/") {
        crate::compat::CompatError::Api(e).into_response()
    } else {
        e.into_response()
    }
}

/// What [`admit`] leaves on an admitted request for the route layers after it.
#[derive(Clone)]
struct Admitted {
    limiter: KeyLimiter,
    id: Identity,
}

/// The outer layer: authenticates the request (every route it sees needs a key, or keyless mode), takes one
/// request from its key's bucket, and leaves the workspace (so the handler does not look the key up again)
/// and the key's identity on the request. Without a valid key the request is refused before any limit counts
/// it; an unknown path is then a 401 too, so routes are not probed without a key.
pub async fn admit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let workspace = match Workspace::from_request_parts(&mut parts, &state).await {
        Ok(workspace) => workspace,
        // Refused here rather than by the handler, so an unknown key costs one lookup, not two.
        Err(e) => return refuse(parts.uri.path(), e),
    };
    let limiter = state.key_limits.clone();
    let id = limiter.identity(&parts.headers);
    if let Err(e) = limiter.take_request(id) {
        return refuse(parts.uri.path(), e);
    }
    parts.extensions.insert(workspace);
    parts.extensions.insert(Admitted { limiter, id });
    next.run(Request::from_parts(parts, body)).await
}

/// The layer of the upload routes: holds a place among the key's uploads in progress until the upload has
/// been answered (it has read the whole body by then).
pub async fn upload_slot(req: Request, next: Next) -> Response {
    let Some(Admitted { limiter, id }) = req.extensions().get::<Admitted>().cloned() else {
        return next.run(req).await;
    };
    match limiter.take_upload(id) {
        Ok(permit) => {
            let response = next.run(req).await;
            drop(permit);
            response
        }
        Err(e) => refuse(req.uri().path(), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).expect("header"));
        h
    }

    #[test]
    fn bearer_tokens_in_any_case() {
        assert_eq!(bearer(&headers("Bearer abc ")), Some("abc"));
        assert_eq!(bearer(&headers("bEaReR abc")), Some("abc"));
        assert_eq!(bearer(&headers("Basic abc")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn buckets_are_per_key() {
        let limiter = KeyLimiter::new(KeyLimits { rate_per_sec: 1, burst: 2, ..KeyLimits::OFF });
        let (a, b) = (limiter.identity(&headers("Bearer a")), limiter.identity(&headers("Bearer b")));
        assert!(limiter.take_request(a).is_ok() && limiter.take_request(a).is_ok());
        match limiter.take_request(a) {
            Err(ApiError::TooManyRequests { retry_after, .. }) => assert_eq!(retry_after, 1),
            other => panic!("{other:?}"),
        }
        assert!(limiter.take_request(b).is_ok());
        assert_eq!(limiter.identity(&headers("bearer a")), a);
        // Keyless requests (no `Authorization`) share one bucket.
        assert_eq!(limiter.identity(&HeaderMap::new()), Identity::Keyless);
    }

    #[test]
    fn upload_places_are_given_back() {
        let limiter = KeyLimiter::new(KeyLimits { max_uploads: 1, ..KeyLimits::OFF });
        let id = Identity::Keyless;
        let held = limiter.take_upload(id).expect("first");
        assert!(limiter.take_upload(id).is_err());
        drop(held);
        assert!(limiter.take_upload(id).is_ok());
    }
}
