//! The HTTP routes: point queries, hot items, posted events, metrics, status and health. Every error is
//! a JSON object `{"error": "..."}` with a status that says whose fault it is; no request can
//! panic the server.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::answers::{check_params, ApiError};
use super::{subscribe, Posting, Shared};
use crate::event::{DeadLetter, Id, Millis};
use crate::metrics::PrometheusText;
use crate::progress::settled;
use crate::results::SCORE_SCALE;
use crate::results::{ChangeRecord, ScoredItem};
use crate::source::{ForgetRequest, PostRefused, PostedRecord};

/// The `Retry-After` of a post refused because too many posted events wait, in seconds.
const POST_RETRY_AFTER_S: u32 = 1;

/// The answer to posted records the source would not take: 409 with `ended` once the input has
/// ended, 503 with `Retry-After` while too many wait, 500 when they cannot be made durable.
fn refused_post(refused: PostRefused, ended: &str) -> ApiError {
    match refused {
        PostRefused::Ended => ApiError::new(StatusCode::CONFLICT, ended),
        PostRefused::NotLogged(why) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the records could not be written to the log of posted records, so none was taken: {why}"),
        ),
        PostRefused::Full { limit } => ApiError::busy(
            format!(
                "{limit} posted records wait for the pipeline already (serve.max_queued_events); try again shortly"
            ),
            POST_RETRY_AFTER_S,
        ),
    }
}

/// The routes, sharing `shared`.
pub fn router(shared: Arc<Shared>) -> Router {
    let events = Router::new()
        .route("/v1/events", post(post_events))
        .layer(DefaultBodyLimit::max(shared.settings.max_body_bytes))
        .route_layer(middleware::from_fn(require_json))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&shared), require_token));
    let forget = Router::new()
        .route("/v1/users/{user}", delete(forget_user))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&shared), require_token));
    let reads = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/users/{user}/recommendations", get(recommendations))
        .route("/v1/hot-items", get(hot_items))
        .route("/v1/subscribe", get(subscribe::recs))
        .route("/v1/subscribe/hot-items", get(subscribe::hot_items))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&shared), require_read_token));
    Router::new()
        .route("/", get(super::dashboard::page))
        .route("/healthz", get(healthz))
        .merge(reads)
        .merge(events)
        .merge(forget)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), check_host))
        .with_state(shared)
}

/// On a loopback address, refuses requests whose `Host` names another machine: a web page whose
/// name was made to resolve to 127.0.0.1 (DNS rebinding) would otherwise read and post as if
/// it were local. A request without `Host` (HTTP/1.0) is not a browser's and goes through.
async fn check_host(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if let (Some(allowed), Some(host)) = (&shared.settings.local_hosts, request.headers().get(header::HOST)) {
        let name = host.to_str().ok().map(host_name);
        if !name.is_some_and(|name| allowed.iter().any(|a| a.eq_ignore_ascii_case(name))) {
            let message = format!(
                "Host {:?} is not this server's: on a loopback address only {} are answered",
                String::from_utf8_lossy(host.as_bytes()),
                allowed.join(", ")
            );
            return ApiError::new(StatusCode::FORBIDDEN, message).into_response();
        }
    }
    next.run(request).await
}

/// The host name of a `Host` header, without its port: `localhost:8080` is `localhost`,
/// `[::1]:8080` is `[::1]`.
fn host_name(host: &str) -> &str {
    match host.rfind(':') {
        Some(at) if !host[at..].contains(']') => &host[..at],
        _ => host,
    }
}

/// Lets a body through only as `application/json` or `application/x-ndjson`: a web page can
/// send `text/plain` (a form, or `fetch` without preflight) to any address, but not these.
async fn require_json(request: Request, next: Next) -> Response {
    let kind = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let essence = kind.map(|kind| kind.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    if !matches!(essence.as_deref(), Some("application/json" | "application/x-ndjson")) {
        let message = format!(
            "send the events as `Content-Type: application/json` or `application/x-ndjson`, not {}",
            kind.map_or("no Content-Type".to_string(), |k| format!("`{k}`"))
        );
        return ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message).into_response();
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route; see the README's Serving section")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "this route does not take that method")
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of `Authorization: Bearer T`, if the request has one.
fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

fn unauthorized(message: &str) -> Response {
    let error = ApiError::new(StatusCode::UNAUTHORIZED, message);
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], error).into_response()
}

/// Lets a request through when no token is configured or it carries `Authorization: Bearer T`.
async fn require_token(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if let Some(token) = &shared.settings.token {
        if !bearer(&request).is_some_and(|given| same(given.as_bytes(), token.as_bytes())) {
            return unauthorized("this endpoint needs `Authorization: Bearer TOKEN`");
        }
    }
    next.run(request).await
}

/// Lets a read through when no read token is configured, or when it carries the read token (or
/// the write token) as `Authorization: Bearer T` or as the query parameter `access_token` (for
/// browsers' `EventSource`, which cannot set headers). The parameter is taken out of the query
/// before the route sees it.
async fn require_read_token(State(shared): State<Arc<Shared>>, mut request: Request, next: Next) -> Response {
    let Some(read_token) = &shared.settings.read_token else { return next.run(request).await };
    let from_query = take_access_token(&mut request);
    let given = bearer(&request).map(str::to_string).or(from_query);
    let grants = |given: &str| {
        same(given.as_bytes(), read_token.as_bytes())
            || shared.settings.token.as_ref().is_some_and(|token| same(given.as_bytes(), token.as_bytes()))
    };
    if !given.as_deref().is_some_and(grants) {
        return unauthorized("reading needs the read token: `Authorization: Bearer TOKEN` or `?access_token=TOKEN`");
    }
    next.run(request).await
}

/// Removes `access_token` from the request's query; its value, if it had one.
fn take_access_token(request: &mut Request) -> Option<String> {
    let query = request.uri().query()?;
    let params: HashMap<String, String> = Query::try_from_uri(request.uri()).map(|Query(p)| p).unwrap_or_default();
    let token = params.get("access_token").cloned()?;
    let rest: Vec<&str> =
        query.split('&').filter(|part| *part != "access_token" && !part.starts_with("access_token=")).collect();
    let path_and_query = if rest.is_empty() {
        request.uri().path().to_string()
    } else {
        format!("{}?{}", request.uri().path(), rest.join("&"))
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    if let Ok(uri) = axum::http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    Some(token)
}

/// `GET /healthz`: 200 with `"status": "ok"` while the run is healthy; 503 with `"status":
/// "failing"` and the fault once a fault it cannot survive is stopping it.
async fn healthz(State(shared): State<Arc<Shared>>) -> (StatusCode, Json<Value>) {
    let state = shared.state();
    let mut answer = json!({
        "status": "ok",
        "as_of": state.as_of(),
        "input_ended": state.ended(),
        "subscribers": shared.subscribers.load(Ordering::Relaxed),
    });
    match shared.metrics.fatal.get() {
        None => (StatusCode::OK, Json(answer)),
        Some(fault) => {
            // The run is stopping for a fault it cannot survive.
            answer["status"] = json!("failing");
            answer["error"] = json!(fault);
            (StatusCode::SERVICE_UNAVAILABLE, Json(answer))
        }
    }
}

/// `GET /v1/status`: the [`crate::status::Status`] document.
async fn status(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<crate::status::Status>, ApiError> {
    check_params(&params, &[])?;
    Ok(Json(shared.status()))
}

/// `GET /v1/users/{user}/recommendations?k=N[&explain=true]`: the user's current list, best
/// first, or for a user without one the popular items (`"popular": true`); with `explain`,
/// each item says why it is there.
async fn recommendations(
    State(shared): State<Arc<Shared>>,
    Path(user): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    check_params(&params, &["k", "explain"])?;
    let k = match params.get("k") {
        None => usize::MAX,
        Some(text) => match text.parse::<usize>() {
            Ok(k) if k >= 1 => k,
            _ => return Err(ApiError::bad_request(format!("k={text}: use a whole number of at least 1"))),
        },
    };
    let explain = match params.get("explain").map(String::as_str) {
        None | Some("false") => false,
        Some("true") if shared.explain => true,
        Some("true") => {
            return Err(ApiError::bad_request("explanations are off in this pipeline (serve.explain = false)"));
        }
        Some(other) => return Err(ApiError::bad_request(format!("explain={other}: use true or false"))),
    };
    let Some(id) = Id::from_key(&user) else {
        return Err(ApiError::bad_request(
            "name a user: /v1/users/{user}/recommendations (a text id that looks like a number in quotes: \"42\")",
        ));
    };
    let (record, as_of) = {
        let state = shared.state();
        (state.recs(&id).or_else(|| state.popular()), state.as_of())
    };
    let Some(record) = record else {
        let message = format!("user {user} has no recommendations, and no item is popular yet");
        return Err(ApiError::new(StatusCode::NOT_FOUND, message));
    };
    let (time, items, popular) = match &*record {
        ChangeRecord::Recs { time, items, .. } => (time, items, false),
        ChangeRecord::Popular { time, items } => (time, items, true),
        ChangeRecord::HotItems { .. } => {
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "a list of the wrong kind"));
        }
    };
    let items = &items[..items.len().min(k)];
    let mut answer = if explain {
        let explained: Vec<Value> = items.iter().map(explained_item).collect();
        json!({ "user": id, "as_of": as_of, "time": time, "items": explained })
    } else {
        json!({ "user": id, "as_of": as_of, "time": time, "items": items })
    };
    if popular {
        // A user without a list of their own gets the popular items.
        answer["popular"] = json!(true);
    }
    Ok(Json(answer))
}

/// A list item with why it is there: the user's preferred items leading to it, with the short-
/// and long-term parts of the user's preference and the items' similarity, or the fallback.
fn explained_item(item: &ScoredItem) -> Value {
    let scale = SCORE_SCALE as f64;
    let mut value = json!(item);
    value["because"] = if item.fallback {
        json!("popular fallback")
    } else {
        item.because
            .iter()
            .map(|why| {
                json!({
                    "item": why.item,
                    "short_term": why.short_term as f64 / scale,
                    "long_term": why.long_term as f64 / scale,
                    "similarity": why.similarity as f64 / scale,
                    "contribution": why.contribution as f64 / scale,
                })
            })
            .collect()
    };
    value
}

/// `GET /v1/hot-items[?window_end=T]`: the lists of the latest (or the given) closed window.
async fn hot_items(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    check_params(&params, &["window_end"])?;
    let window_end = match params.get("window_end") {
        None => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("window_end={text}: use a time in the input's timestamp unit"))
        })?),
    };
    let (window, as_of) = {
        let state = shared.state();
        (state.hot_window(window_end), state.as_of())
    };
    let Some((end, records)) = window else {
        let message = match window_end {
            Some(end) => format!("no hot-items window ending at {end} is kept"),
            None => "no hot-items window has closed yet".to_string(),
        };
        return Err(ApiError::new(StatusCode::NOT_FOUND, message));
    };
    let mut window_start = None;
    let lists: Vec<Value> = records
        .iter()
        .filter_map(|record| match &**record {
            ChangeRecord::HotItems { window_start: start, category, items, .. } => {
                window_start = Some(*start);
                Some(match category {
                    Some(category) => json!({ "category": category, "items": items }),
                    None => json!({ "items": items }),
                })
            }
            ChangeRecord::Recs { .. } | ChangeRecord::Popular { .. } => None,
        })
        .collect();
    Ok(Json(json!({ "as_of": as_of, "window_start": window_start, "window_end": end, "lists": lists })))
}

/// Splits a body into numbered records: one JSON object, a JSON array of them, or JSON lines.
fn records(body: &str) -> Vec<(usize, String)> {
    let trimmed = body.trim();
    match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Array(items)) => {
            return items.iter().enumerate().map(|(i, v)| (i + 1, v.to_string())).collect();
        }
        Ok(object @ Value::Object(_)) => return vec![(1, object.to_string())],
        _ => {}
    }
    body.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| (i + 1, line.to_string()))
        .collect()
}

/// `POST /v1/events`: validates each record with the pipeline's JSON decoder and feeds the valid
/// ones into the running source. `ts` may be left out: the event then gets the pipeline's
/// current event time. Any bad record makes the answer 400, naming its line; the good ones count.
async fn post_events(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let sender = match &shared.inlets.events {
        Posting::Open(sender) => sender,
        Posting::Unsupported(why) => return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, *why)),
    };
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the body is larger than serve.max_body_bytes = {}", shared.settings.max_body_bytes)
        } else {
            rejection.body_text()
        };
        ApiError::new(status, message)
    })?;
    let text = std::str::from_utf8(&body).map_err(|e| ApiError::bad_request(format!("the body is not UTF-8: {e}")))?;
    let numbered = records(text);
    if numbered.is_empty() {
        return Err(ApiError::bad_request("the body holds no events; send a JSON object or JSON lines"));
    }
    let mut posted = Vec::with_capacity(numbered.len());
    let mut rejected = Vec::new();
    for (line, record) in numbered {
        match decode(&shared, &record) {
            Ok((event, ts_given)) => posted.push(PostedRecord::Event { event, ts_given }),
            Err(reason) => {
                rejected.push(json!({ "line": line, "reason": reason.code(), "detail": reason.to_string() }));
                let origin = format!("http:/v1/events:{line}");
                posted.push(PostedRecord::Rejected(DeadLetter::new(reason, origin, record.into_bytes())));
            }
        }
    }
    let accepted = posted.len() - rejected.len();
    sender
        .send(posted)
        .map_err(|refused| refused_post(refused, "the input has ended; events can no longer be posted"))?;
    // With checkpoints the records are on disk by now, and a restart takes them again.
    let durable = sender.durable();
    if rejected.is_empty() {
        Ok((StatusCode::OK, Json(json!({ "accepted": accepted, "durable": durable }))))
    } else {
        Ok((StatusCode::BAD_REQUEST, Json(json!({ "accepted": accepted, "durable": durable, "rejected": rejected }))))
    }
}

/// The longest `DELETE /v1/users/{user}?wait=` a client may ask for.
const MAX_FORGET_WAIT: Duration = Duration::from_secs(300);

/// How long the source may take to pick a forget request up before the server gives up on it.
const FORGET_TAKEN_WITHIN: Duration = Duration::from_secs(30);

/// `DELETE /v1/users/{user}[?wait=DURATION]`: forgets every event of the user read so far. The
/// answer says at which time (`complete_at`, the input's unit) every result is as if the user's
/// events had never been read: 200 once the output has got there (waiting up to `wait`), else 202.
async fn forget_user(
    State(shared): State<Arc<Shared>>,
    Path(user): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_params(&params, &["wait"])?;
    let wait = match params.get("wait") {
        None => Duration::ZERO,
        Some(text) => match crate::spec::Span::parse(text) {
            Ok(span) if Duration::from_millis(span.millis()) <= MAX_FORGET_WAIT => Duration::from_millis(span.millis()),
            Ok(_) => return Err(ApiError::bad_request(format!("wait={text}: at most 5m"))),
            Err(e) => return Err(ApiError::bad_request(format!("wait={text}: {e}"))),
        },
    };
    let sender = match &shared.inlets.forget {
        Posting::Open(sender) => sender,
        Posting::Unsupported(why) => return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, *why)),
    };
    let Some(id) = Id::from_key(&user) else {
        return Err(ApiError::bad_request("name a user: DELETE /v1/users/{user}"));
    };
    // `42` is the number and `"42"` the text: distinct users, as everywhere.
    let (reply, answer) = oneshot::channel();
    let request = PostedRecord::Forget(ForgetRequest { user: id.clone(), reply, post: None });
    sender
        .send(vec![request])
        .map_err(|refused| refused_post(refused, "the input has ended; nothing is read any more to forget"))?;
    let retracted_at: Millis = match tokio::time::timeout(FORGET_TAKEN_WITHIN, answer).await {
        Ok(Ok(time)) => time,
        Ok(Err(_)) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "the input ended before the request was taken"));
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the pipeline did not take the request within 30 s; try again",
            ));
        }
    };
    shared.forgets.fetch_add(1, Ordering::Relaxed);
    // Recommendations are re-scored once the similarity table has taken the retraction in.
    let complete = shared.refresh.map_or(retracted_at, |refresh| settled(retracted_at, refresh));
    let deadline = tokio::time::Instant::now() + wait;
    let done = loop {
        let progressed = shared.progressed.notified();
        tokio::pin!(progressed);
        progressed.as_mut().enable();
        if shared.state().complete_at(complete) {
            break true;
        }
        if tokio::time::timeout_at(deadline, progressed).await.is_err() {
            break false;
        }
    };
    let (unit, as_of) = {
        let state = shared.state();
        (state.unit(), state.as_of())
    };
    let body = json!({
        "user": id,
        "retracted_at": retracted_at.div_ceil(unit),
        "complete_at": complete.div_ceil(unit),
        "complete": done,
        "as_of": as_of,
    });
    Ok((if done { StatusCode::OK } else { StatusCode::ACCEPTED }, Json(body)))
}

/// Decodes one posted record; a missing `ts` is filled in later by the source.
fn decode(shared: &Shared, record: &str) -> Result<(crate::event::Event, bool), crate::event::RejectReason> {
    if let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(record) {
        if matches!(object.get(&shared.ts_field), None | Some(Value::Null)) {
            object.insert(shared.ts_field.clone(), Value::from(shared.min_timestamp));
            return shared.decoder.decode(&Value::Object(object).to_string()).map(|event| (event, false));
        }
    }
    shared.decoder.decode(record).map(|event| (event, true))
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let (as_of, ended, users, windows) = {
        let state = shared.state();
        (state.as_of(), state.ended(), state.users(), state.hot_windows())
    };
    let mut out = PrometheusText::default();
    shared.metrics.write_prometheus(&mut out);
    out.single(
        "recflow_output_as_of",
        "gauge",
        "Output frontier: every change up to this time (input's unit) is served.",
        as_of.map_or(f64::NAN, |t| t as f64),
    );
    out.single(
        "recflow_input_ended",
        "gauge",
        "1 once a finite input has ended and the results are final.",
        f64::from(u8::from(ended)),
    );
    out.single(
        "recflow_subscribers",
        "gauge",
        "Open subscriptions.",
        shared.subscribers.load(Ordering::Relaxed) as f64,
    );
    out.single(
        "recflow_http_connections",
        "gauge",
        "Open HTTP connections.",
        shared.connections.open.load(Ordering::Relaxed) as f64,
    );
    out.single(
        "recflow_http_connections_refused_total",
        "counter",
        "Connections refused with 503 beyond serve.max_connections.",
        shared.connections.refused.load(Ordering::Relaxed) as f64,
    );
    if let Posting::Open(events) = &shared.inlets.events {
        out.single(
            "recflow_posted_events_waiting",
            "gauge",
            "Posted events waiting for the pipeline to take them (at most serve.max_queued_events).",
            events.waiting() as f64,
        );
    }
    out.single(
        "recflow_forget_requests_total",
        "counter",
        "Users forgotten through DELETE /v1/users/{user}.",
        shared.forgets.load(Ordering::Relaxed) as f64,
    );
    out.single("recflow_served_users", "gauge", "Users with a served recommendation list.", users as f64);
    out.single("recflow_served_hot_windows", "gauge", "Hot-items windows kept for queries.", windows as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out.into_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_split_into_numbered_records() {
        let numbered = |body: &str| records(body).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(numbered("{\"user\": 1,\n \"item\": 2}"), vec![1], "one pretty-printed object");
        assert_eq!(numbered("[{\"user\": 1}, {\"user\": 2}]"), vec![1, 2], "an array, by element");
        assert_eq!(numbered("{\"user\": 1}\n\n{oops\n{\"user\": 3}\n"), vec![1, 3, 4], "lines, blank ones skipped");
        assert!(records("  \n").is_empty());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3cre"));
        assert!(!same(b"s3cret", b"s3creT"));
    }
}
