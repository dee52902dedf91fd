//! Who may use the API, and from where.
//!
//! **Auth mode, decided once at start** ([`Access::decide`]): `Keys` when a key that is not revoked exists,
//! `Keyless` only when none does *and* the server listens on a loopback address. A keyless server acts in the
//! `default` workspace for requests without a key. The mode only ever tightens while running: a keyless server
//! that sees a key appear (`leadscore keys create`) requires keys from then on, until restarted; a server
//! started with keys never becomes keyless, even when every key is revoked (every request then needs a valid
//! key, so none succeeds).
//!
//! **Browser guard** ([`guard`], a layer over every route), against a web page using the visitor's browser as a
//! client:
//! - `Host` must be a loopback name (`localhost`, `127.0.0.1`, `[::1]`, any port) or a configured public host
//!   (`LEADSCORE_PUBLIC_HOSTS` / `--public-host`). This defeats DNS rebinding (a page whose name resolves to
//!   127.0.0.1 still sends its own name as `Host`). Checked always in keyless mode; in keys mode only when
//!   public hosts are configured (behind a load balancer the names are not known otherwise, and a rebound page
//!   has no key), and then not for the probes `/healthz` and `/readyz`, which orchestrators call by address.
//! - State-changing methods (POST, PUT, PATCH, DELETE) are refused when the browser says the request comes
//!   from elsewhere: `Sec-Fetch-Site: cross-site` or `same-site`, or an `Origin` that is neither the request's
//!   own host nor an allowed one (`Origin: null` included). Plain HTML forms and `text/plain` posts need no
//!   CORS preflight, so this is what stops a cross-site form post. Reads are not checked: without CORS
//!   headers the page cannot see the answer. Clients that are not browsers send neither header.
//!
//! Refusals are 403 problem+json.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use leadscore_store::{Store, StoreError};

use crate::AppState;
use crate::problem::PROBLEM_JSON;

/// Whether requests need an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Every request needs a valid key.
    Keys,
    /// Requests without a key act in the `default` workspace (loopback only; see the module documentation).
    Keyless,
}

/// Why a server may not start.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(
        "refusing to listen on {0} without API keys: only a loopback address may run keyless; create a key \
         with `leadscore keys create --name NAME`"
    )]
    KeylessOffLoopback(SocketAddr),
    #[error(
        "public host {0:?}: give a host name or address, optionally with :port (no scheme, path or user)"
    )]
    BadPublicHost(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The auth mode and the hosts a browser may address the API by. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Access {
    auth: Auth,
    /// Set when a keyless server has seen a key appear: from then on it requires keys.
    keys_appeared: Arc<AtomicBool>,
    /// Lowercase `host` or `host:port`.
    public_hosts: Arc<[String]>,
}

impl Access {
    /// The mode for a server listening on `listen`: keys when a usable key exists, keyless when none does
    /// and `listen` is a loopback address, else an error.
    pub async fn decide(
        store: &Store,
        listen: SocketAddr,
        public_hosts: &[String],
    ) -> Result<Access, AccessError> {
        if store.auth_enabled().await? {
            Access::new(Auth::Keys, public_hosts)
        } else if listen.ip().is_loopback() {
            Access::new(Auth::Keyless, public_hosts)
        } else {
            Err(AccessError::KeylessOffLoopback(listen))
        }
    }

    /// `auth` with `public_hosts` (each `host` or `host:port`), checked.
    pub fn new(auth: Auth, public_hosts: &[String]) -> Result<Access, AccessError> {
        let hosts = public_hosts.iter().map(|h| parse_public_host(h)).collect::<Result<Vec<_>, _>>()?;
        Ok(Access { auth, keys_appeared: Arc::default(), public_hosts: hosts.into() })
    }

    pub fn auth(&self) -> Auth {
        if self.keys_appeared.load(Ordering::Relaxed) { Auth::Keys } else { self.auth }
    }

    /// Whether a request without a key may go on now (as the `default` workspace). In keyless mode this looks
    /// for a key on each such request (one indexed read) so that creating one takes effect at once.
    pub async fn allows_no_key(&self, store: &Store) -> Result<bool, StoreError> {
        if self.auth() == Auth::Keys {
            return Ok(false);
        }
        if store.auth_enabled().await? {
            if !self.keys_appeared.swap(true, Ordering::Relaxed) {
                tracing::warn!("an API key now exists: this server requires keys from now on");
            }
            return Ok(false);
        }
        Ok(true)
    }

    /// Whether a browser may address the API as `host` (a `Host` header or an `Origin`'s authority).
    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let (name, _) = split_port(&host);
        is_loopback_name(name) || self.public_hosts.iter().any(|p| p == &host || p == name)
    }
}

/// Splits `host[:port]` (IPv6 in brackets) into the name, without a trailing dot, and the port.
fn split_port(host: &str) -> (&str, Option<&str>) {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, tail)) => (ip, tail.strip_prefix(':')),
            None => (host, None),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if !name.contains(':') => (name, Some(port)),
            _ => (host, None),
        }
    };
    (name.strip_suffix('.').unwrap_or(name), port)
}

fn is_loopback_name(name: &str) -> bool {
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn parse_public_host(raw: &str) -> Result<String, AccessError> {
    let host = raw.trim().to_ascii_lowercase();
    let bad = host.is_empty()
        || host.contains(['/', '@', '?', '#', ' ', ','])
        || split_port(&host).1.is_some_and(|p| p.parse::<u16>().is_err());
    if bad { Err(AccessError::BadPublicHost(raw.to_owned())) } else { Ok(host) }
}

/// `LEADSCORE_PUBLIC_HOSTS` / `--public-host`: comma-separated, blanks ignored.
pub fn split_public_hosts(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_owned).collect()
}

/// The layer: see the module documentation.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match refusal(&state.access, request.method(), request.uri(), request.headers()) {
        Some(detail) => forbidden(detail),
        None => next.run(request).await,
    }
}

/// Why a request is refused, if it is.
fn refusal(access: &Access, method: &Method, uri: &axum::http::Uri, headers: &HeaderMap) -> Option<String> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let probe = matches!(uri.path(), "/healthz" | "/readyz");
    let check_host = access.auth() == Auth::Keyless || (!access.public_hosts.is_empty() && !probe);
    if check_host && !access.host_allowed(host) {
        return Some(format!(
            "Host {host:?} is not a name of this server: use localhost or 127.0.0.1, or add the name to \
             LEADSCORE_PUBLIC_HOSTS"
        ));
    }
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        return None;
    }
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).unwrap_or("");
    if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
        return Some(format!("Sec-Fetch-Site: {site}: this API does not accept requests from other sites"));
    }
    let origin = headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("null"))?;
    let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
    let same_origin = !authority.is_empty() && authority.eq_ignore_ascii_case(host);
    if same_origin || (!authority.is_empty() && access.host_allowed(authority)) {
        return None;
    }
    Some(format!(
        "Origin {origin:?} may not change anything here: this API does not accept requests from other sites"
    ))
}

fn forbidden(detail: String) -> Response {
    // The problem document's fields, written out: this layer answers before any route.
    let problem = serde_json::json!({
        "type": "https://leadscore.dev/problems/forbidden",
        "title": "Refused: not addressed to this server from its own origin",
        "status": StatusCode::FORBIDDEN.as_u16(),
        "detail": detail,
    });
    let mut response = (StatusCode::FORBIDDEN, axum::Json(problem)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(auth: Auth, public: &[&str]) -> Access {
        Access::new(auth, &public.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).expect("access")
    }

    fn check(access: &Access, method: Method, path: &str, headers: &[(&'static str, &str)]) -> bool {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, v.parse().expect("header"));
        }
        refusal(access, &method, &path.parse().expect("uri"), &map).is_none()
    }

    #[test]
    fn hosts() {
        let keyless = access(Auth::Keyless, &["leads.example.com", "api.example.com:8443"]);
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "localhost.:1",
            "127.0.0.1",
            "127.0.0.1:9",
            "[::1]",
            "[::1]:8080",
            "leads.example.com:1234",
            "api.example.com:8443",
        ] {
            assert!(check(&keyless, Method::GET, "/v1/offers", &[("host", ok)]), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "api.example.com:8444",
            "10.0.0.1",
            "",
        ] {
            assert!(!check(&keyless, Method::GET, "/v1/offers", &[("host", bad)]), "{bad}");
            assert!(
                !check(&keyless, Method::GET, "/healthz", &[("host", bad)]),
                "keyless checks probes: {bad}"
            );
        }
        let keys = access(Auth::Keys, &[]);
        assert!(check(&keys, Method::GET, "/v1/offers", &[("host", "anything.example")]));
        let keys_public = access(Auth::Keys, &["leads.example.com"]);
        assert!(!check(&keys_public, Method::GET, "/v1/offers", &[("host", "evil.example")]));
        assert!(
            check(&keys_public, Method::GET, "/readyz", &[("host", "10.1.2.3:8080")]),
            "probes by address"
        );
    }

    #[test]
    fn origins_of_state_changing_requests() {
        let a = access(Auth::Keyless, &[]);
        let host = ("host", "localhost:8080");
        assert!(check(&a, Method::POST, "/v1/offers", &[host]), "no Origin: not a browser");
        assert!(check(&a, Method::POST, "/v1/offers", &[host, ("origin", "http://localhost:8080")]));
        assert!(check(&a, Method::POST, "/v1/offers", &[host, ("origin", "http://127.0.0.1:3000")]));
        assert!(check(&a, Method::POST, "/v1/offers", &[host, ("sec-fetch-site", "same-origin")]));
        assert!(check(&a, Method::POST, "/v1/offers", &[host, ("sec-fetch-site", "none")]));
        for (k, v) in [
            ("origin", "https://evil.example"),
            ("origin", "null"),
            ("origin", "http://localhost.evil.example"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
                assert!(!check(&a, m.clone(), "/v1/offers", &[host, (k, v)]), "{m} {k}: {v}");
            }
            assert!(check(&a, Method::GET, "/v1/offers", &[host, (k, v)]), "reads pass: {k}: {v}");
        }
        let keys = access(Auth::Keys, &[]);
        let far = ("host", "leads.example.com");
        assert!(check(&keys, Method::POST, "/v1/offers", &[far, ("origin", "https://leads.example.com")]));
        assert!(!check(&keys, Method::POST, "/v1/offers", &[far, ("origin", "https://evil.example")]));
    }

    #[test]
    fn public_hosts_are_checked() {
        assert!(Access::new(Auth::Keys, &["https://x.example".into()]).is_err());
        assert!(Access::new(Auth::Keys, &["x.example:99999".into()]).is_err());
        assert!(Access::new(Auth::Keys, &["u@x.example".into()]).is_err());
        assert_eq!(split_public_hosts(" a.example, ,b.example:8080,"), ["a.example", "b.example:8080"]);
    }
}
