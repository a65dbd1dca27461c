//! `[serve]`: the HTTP/SSE server of `recflow run`, its address, tokens and limits.

use serde::{Deserialize, Deserializer, Serialize};

use super::{rejecting, Span, SpecError};

/// How long the server keeps answering after a finite input has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linger {
    /// This long (`"0s"`: the process exits with the run).
    For(Span),
    /// Until Ctrl-C or SIGTERM (`"forever"`).
    Forever,
}

impl Serialize for Linger {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Linger::For(span) => span.serialize(serializer),
            Linger::Forever => serializer.serialize_str("forever"),
        }
    }
}

impl Linger {
    /// Parses a duration such as `30s`, or `forever`.
    pub fn parse(text: &str) -> Result<Linger, String> {
        if text.trim() == "forever" {
            return Ok(Linger::Forever);
        }
        Span::parse(text).map(Linger::For).map_err(|e| format!("{e}, or \"forever\" to serve until Ctrl-C"))
    }
}

impl<'de> Deserialize<'de> for Linger {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Linger::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The `[serve]` table: the HTTP/SSE server of `recflow run` (also turned on by `--serve ADDR`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeSpec {
    /// Address to listen on, `host:port`; port 0 picks a free port (the address is printed).
    pub addr: String,
    /// Bearer token required by mutating endpoints (`POST /v1/events`, `DELETE /v1/users/{user}`);
    /// none: no token needed.
    pub token: Option<String>,
    /// Name of an environment variable holding the bearer token, instead of `token`.
    pub token_env: Option<String>,
    /// Bearer token required by reading endpoints (`/v1/...` queries and subscriptions,
    /// explanations included, `/v1/status`, `/metrics`), which also take `token`; none: reads
    /// are open. `/healthz` and the dashboard page itself are always open.
    pub read_token: Option<String>,
    /// Name of an environment variable holding the read token, instead of `read_token`.
    pub read_token_env: Option<String>,
    /// Largest accepted request body, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Update batches buffered per subscriber; a subscriber further behind is told it lagged and
    /// is disconnected.
    pub client_buffer: usize,
    /// Wall-clock interval between `progress` events on subscriptions.
    pub progress_interval: Span,
    /// How long to keep serving after a finite input ended: a duration, or `"forever"` (until
    /// Ctrl-C or SIGTERM).
    pub linger: Linger,
    /// Closed hot-items windows kept for `GET /v1/hot-items?window_end=T` (the oldest go first).
    pub hot_windows: usize,
    /// Whether `DELETE /v1/users/{user}` can forget users. Forgetting keeps every accepted event
    /// until the last window holding it closes, which costs memory; `false` turns that off.
    pub forget: bool,
    /// Whether lists keep their explanations for `GET .../recommendations?explain=true`; they cost
    /// some work and memory per list change.
    pub explain: bool,
    /// Whether an address beyond this machine may be served without a token: anyone who can
    /// reach it could then post events and forget users.
    pub allow_unauthenticated: bool,
    /// Subscribers connected at once, at most; more get 503 with `Retry-After`.
    pub max_subscribers: usize,
    /// Posted events waiting for the pipeline, at most; a post beyond gets 503 with `Retry-After`.
    pub max_queued_events: usize,
    /// HTTP connections open at once, at most (subscriptions included); one beyond gets 503 with
    /// `Retry-After` and is closed.
    pub max_connections: usize,
    /// How long a client has to send a request's whole head (request line and headers) once the
    /// server waits for it; also how long an idle keep-alive connection stays open.
    pub header_timeout: Span,
}

/// The address `--serve` and `[serve]` listen on unless told otherwise: loopback only.
pub const DEFAULT_SERVE_ADDR: &str = "127.0.0.1:8080";

impl Default for ServeSpec {
    fn default() -> Self {
        ServeSpec {
            addr: DEFAULT_SERVE_ADDR.into(),
            token: None,
            token_env: None,
            read_token: None,
            read_token_env: None,
            max_body_bytes: 1 << 20,
            client_buffer: 1024,
            progress_interval: Span(1_000),
            linger: Linger::For(Span(0)),
            hot_windows: 1024,
            forget: true,
            explain: true,
            allow_unauthenticated: false,
            max_subscribers: 10_000,
            max_queued_events: 100_000,
            max_connections: 11_000,
            header_timeout: Span(10_000),
        }
    }
}

/// Whether `addr` (`IP:PORT` or `localhost:PORT`) is reachable from this machine only.
pub fn is_loopback(addr: &str) -> bool {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => addr.rsplit_once(':').is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost")),
    }
}

impl ServeSpec {
    /// Checks `[serve]`: the address, the tokens, the limits and timeouts, a linger of at most a
    /// year.
    pub(super) fn validate(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        if self.addr.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "serve.addr",
                format!("`{}` is not an address; write IP:PORT, such as \"{DEFAULT_SERVE_ADDR}\"", self.addr),
            );
        }
        self.validate_tokens(origin)?;
        if self.max_body_bytes == 0 {
            return bad("serve.max_body_bytes", "must be at least 1, such as 1048576".into());
        }
        if self.max_queued_events == 0 {
            return bad("serve.max_queued_events", "must be at least 1, such as 100000".into());
        }
        if self.max_subscribers == 0 {
            return bad("serve.max_subscribers", "must be at least 1, such as 10000".into());
        }
        if self.max_connections <= self.max_subscribers {
            return bad(
                "serve.max_connections",
                format!(
                    "{} leaves no connection for queries once serve.max_subscribers ({}) subscribe; \
                     raise it above that, such as {}",
                    self.max_connections,
                    self.max_subscribers,
                    self.max_subscribers + 1000
                ),
            );
        }
        if self.header_timeout.millis() == 0 {
            return bad("serve.header_timeout", "must be positive, such as \"10s\"".into());
        }
        if !(1..=1_000_000).contains(&self.client_buffer) {
            return bad("serve.client_buffer", "must lie between 1 and 1000000, such as 1024".into());
        }
        if self.progress_interval.millis() == 0 {
            return bad("serve.progress_interval", "must be positive, such as \"1s\"".into());
        }
        if self.hot_windows == 0 {
            return bad("serve.hot_windows", "must be at least 1, such as 1024".into());
        }
        if let Linger::For(span) = self.linger {
            if span.millis() > 366 * 86_400_000 {
                return bad("serve.linger", "is longer than a year; write \"forever\" to serve until Ctrl-C".into());
            }
        }
        Ok(())
    }

    /// Checks the tokens: each given once (in the file or through a variable), none empty, and one
    /// required where the address is reachable beyond this machine, unless that is allowed.
    fn validate_tokens(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        for (key, token, token_env, example) in [
            ("serve.token", &self.token, &self.token_env, "RECFLOW_TOKEN"),
            ("serve.read_token", &self.read_token, &self.read_token_env, "RECFLOW_READ_TOKEN"),
        ] {
            match (token, token_env) {
                (Some(_), Some(_)) => {
                    return bad(key, format!("set either {key} or {key}_env, not both"));
                }
                (Some(token), None) if token.trim().is_empty() => {
                    return bad(key, "is empty; remove it to need no token, or set a secret".into());
                }
                (None, Some(name)) if name.trim().is_empty() || name.contains('=') => {
                    return bad(&format!("{key}_env"), format!("name an environment variable, such as \"{example}\""));
                }
                _ => {}
            }
        }
        if !is_loopback(&self.addr) && self.token.is_none() && self.token_env.is_none() && !self.allow_unauthenticated {
            return bad(
                "serve.token",
                format!(
                    "serve.addr {} is reachable beyond this machine, where anyone could post events and forget \
                     users: set serve.token or serve.token_env, listen on 127.0.0.1, or set \
                     serve.allow_unauthenticated = true if that is intended",
                    self.addr
                ),
            );
        }
        Ok(())
    }

    /// The bearer token: `token`, or the value of the variable `token_env` names.
    pub fn resolve_token(&self) -> Result<Option<String>, String> {
        resolve("serve.token_env", &self.token, &self.token_env)
    }

    /// The read token, from `read_token` or the variable `read_token_env` names.
    pub fn resolve_read_token(&self) -> Result<Option<String>, String> {
        resolve("serve.read_token_env", &self.read_token, &self.read_token_env)
    }
}

/// A secret given in the file or through the environment variable `env` names (`key`).
fn resolve(key: &str, given: &Option<String>, env: &Option<String>) -> Result<Option<String>, String> {
    match (given, env) {
        (Some(token), _) => Ok(Some(token.clone())),
        (None, Some(name)) => match std::env::var(name) {
            Ok(token) if !token.trim().is_empty() => Ok(Some(token)),
            _ => Err(format!("{key} names {name}, which is not set or empty")),
        },
        (None, None) => Ok(None),
    }
}
