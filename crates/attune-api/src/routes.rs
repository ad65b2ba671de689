//! The HTTP API: routes, the token check, and JSON errors that name the field.
//!
//! Envelopes are upstream Attune's (`crates/api/src/dto/common.rs`): a single
//! object is `{"data": ...}`; a list is `{"items": [...], "pagination":
//! {page, page_size, total_items, total_pages, has_previous, has_next}}`
//! (page size at most 100); an error is `{"error", "code", "details"}` (our
//! `field` also stands at the top level). The worker routes (claim, result)
//! and reload are this project's own.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::matching::{Context, conditions_hold, instance_rule, render};
use crate::params;
use crate::registry::Registry;
use crate::server::Limits;
use crate::store::{Execution, Report, Store, StoreError, status};
use attune_service::env;

/// Shared state of the server.
#[derive(Debug)]
pub struct AppState {
    /// The current registry; replaced whole on reload.
    pub registry: RwLock<Arc<Registry>>,
    /// Events and executions.
    pub store: Store,
    /// The bearer token.
    pub token: String,
    /// The packs volume.
    pub packs_dir: std::path::PathBuf,
    /// packs.dev.
    pub dev_dir: std::path::PathBuf,
    /// Woken when an execution is requested (claims long-poll on it).
    pub requested: Notify,
    /// Woken when an execution ends (synchronous executes wait on it).
    pub finished: Notify,
}

impl AppState {
    /// The registry now.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Loads the packs again and swaps the registry in.
    pub fn reload(&self) -> Arc<Registry> {
        let mut fresh = Registry::load(&self.packs_dir, &self.dev_dir);
        let refs: Vec<String> = fresh
            .rules()
            .map(|(_, r)| r.spec.rule_ref.clone())
            .collect();
        match self.store.rule_ids(refs.iter().map(String::as_str)) {
            Ok(ids) => fresh.rule_ids = ids,
            Err(e) => tracing::error!("cannot assign rule ids: {e:?}"),
        }
        let fresh = Arc::new(fresh);
        tracing::info!(packs = fresh.packs.len(), generation = ?fresh.generation, problems = fresh.problems.len(), "packs loaded");
        *self.registry.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        fresh
    }
}

/// An error answer: `{"error": message, "code": "NOT_FOUND", "details": {"field": name}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            field: None,
        }
    }
}

/// Upstream's error code for a status.
fn error_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "BAD_REQUEST",
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::CONFLICT => "CONFLICT",
        StatusCode::UNPROCESSABLE_ENTITY => "VALIDATION_ERROR",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::REQUEST_TIMEOUT => "REQUEST_TIMEOUT",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        _ => "INTERNAL_SERVER_ERROR",
    }
}

/// A 422 naming `field`.
fn unprocessable(field: String, message: String) -> ApiError {
    ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message,
        field: Some(field),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message, "code": error_code(self.status)});
        if let Some(f) = self.field {
            body["details"] = json!({"field": f});
            body["field"] = json!(f);
        }
        (self.status, Json(body)).into_response()
    }
}

/// `{"data": value}`, upstream's single-object envelope.
fn data(value: impl serde::Serialize) -> Json<Value> {
    Json(json!({ "data": value }))
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not found"),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            StoreError::Key(m) => {
                tracing::error!("secrets: {m}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m)
            }
            StoreError::Db(e) => {
                tracing::error!("database: {e}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("database error: {e}"),
                )
            }
        }
    }
}

type Shared = State<Arc<AppState>>;

/// A JSON request body, whatever its `Content-Type` says: the quick reference's
/// `curl -d '{...}'` sends `application/x-www-form-urlencoded`. It must arrive
/// within the body timeout (`408`) and fit the body limit (`413`) of the
/// server's [`Limits`].
#[derive(Debug)]
pub struct Body<T>(pub T);

/// The whole request body as bytes, under the server's [`Limits`].
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<axum::body::Bytes, ApiError> {
    let timeout = req
        .extensions()
        .get::<Limits>()
        .copied()
        .unwrap_or_default()
        .body_timeout;
    match tokio::time::timeout(timeout, axum::body::Bytes::from_request(req, state)).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {}s",
                timeout.as_secs()
            ),
        )),
        Ok(Err(e)) => Err(ApiError::new(
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            },
            format!("cannot read the request body: {}", e.body_text()),
        )),
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        serde_json::from_slice(&bytes).map(Body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the request body is not the expected JSON: {e}"),
            )
        })
    }
}

/// A query string, refused as a JSON error naming what is wrong.
#[derive(Debug)]
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Q(q))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

/// Path parameters, refused as a JSON error naming what is wrong.
#[derive(Debug)]
pub struct P<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S>
    for P<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| P(p))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The router: `/health` open, everything under `/api/v1` behind the token;
/// request bodies under `limits`.
pub fn router(state: Arc<AppState>, limits: Limits) -> Router {
    let api = Router::new()
        .route("/packs", get(list_packs))
        .route("/packs/reload", post(reload))
        .route("/packs/{pack_ref}", get(get_pack))
        .route("/actions", get(|s, q| list_components(s, q, "actions")))
        .route("/triggers", get(|s, q| list_components(s, q, "triggers")))
        .route("/sensors", get(|s, q| list_components(s, q, "sensors")))
        .route("/rules", get(|s, q| list_components(s, q, "rules")))
        .route("/triggers/{trigger_ref}/rules", get(rules_of_trigger))
        .route("/events", post(post_event).get(list_events))
        .route("/events/{id}", get(get_event))
        .route("/executions", post(create_execution).get(list_executions))
        .route("/executions/execute", post(execute))
        .route("/executions/claim", post(claim))
        .route("/executions/{id}", get(get_execution))
        .route("/executions/{id}/result", post(report))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .route("/api-spec/openapi.json", get(openapi))
        .nest("/api/v1", api)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such route; the API lives under /api/v1",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(limits.body_limit))
        .layer(axum::Extension(limits))
        .with_state(state)
}

async fn require_token(State(s): Shared, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(s.token.as_bytes())) && !given.is_empty() {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "missing or wrong bearer token; send `Authorization: Bearer ${}`",
                env::API_TOKEN
            ),
        )
        .into_response()
    }
}

/// The OpenAPI document of what this API serves (upstream serves its own,
/// generated, at the same path).
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

async fn health(State(s): Shared) -> Json<Value> {
    let r = s.registry();
    Json(json!({"status": "ok", "packs": r.packs.len(), "generation": r.generation}))
}

/// `page`, `page_size` and the filters of list endpoints.
#[derive(Debug, Deserialize)]
struct ListQuery {
    page: Option<i64>,
    page_size: Option<i64>,
    #[serde(flatten)]
    filters: HashMap<String, String>,
}

impl ListQuery {
    /// (page, page size, offset); the offset saturates, so a huge page is
    /// simply past the end.
    fn window(&self) -> (i64, i64, i64) {
        let page = self.page.unwrap_or(1).max(1);
        let size = self.page_size.unwrap_or(50).clamp(1, MAX_PAGE_SIZE);
        (page, size, (page - 1).saturating_mul(size))
    }
}

/// The largest page, as upstream.
const MAX_PAGE_SIZE: i64 = 100;

/// Upstream's pagination block.
fn pagination(total: i64, page: i64, size: i64) -> Value {
    let pages = (total + size - 1) / size;
    json!({
        "page": page, "page_size": size, "total_items": total, "total_pages": pages,
        "has_previous": page > 1, "has_next": page < pages,
    })
}

fn page_of(items: Vec<Value>, total: i64, page: i64, size: i64) -> Json<Value> {
    Json(json!({"items": items, "pagination": pagination(total, page, size)}))
}

async fn list_packs(State(s): Shared) -> Json<Value> {
    let r = s.registry();
    let items = r.summaries();
    let total = items.len() as i64;
    Json(json!({
        "items": items,
        "pagination": pagination(total, 1, total.max(1)),
        "problems": r.problems,
        "generation": r.generation,
    }))
}

async fn get_pack(State(s): Shared, P(pack_ref): P<String>) -> ApiResult<Json<Value>> {
    let r = s.registry();
    match r.packs.get(&pack_ref) {
        Some(reg) => Ok(data(json!({"source": reg.source, "pack": reg.pack}))),
        None => {
            let dirs: Vec<String> = r.dirs.iter().map(|d| d.display().to_string()).collect();
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "pack `{pack_ref}` not found in {}; POST /api/v1/packs/reload after adding it",
                    dirs.join(" or ")
                ),
            ))
        }
    }
}

/// Reloads the packs. The request body is read (and ignored): hyper closes a
/// keep-alive connection whose request body was left unread, and a client that
/// sent `{}` would then find its pooled connection gone on the next request.
async fn reload(State(s): Shared, req: Request) -> ApiResult<Json<Value>> {
    read_body(req, &()).await?;
    let r = s.reload();
    Ok(data(
        json!({"packs": r.packs.keys().collect::<Vec<_>>(), "problems": r.problems, "generation": r.generation}),
    ))
}

async fn list_components(
    State(s): Shared,
    Q(q): Q<ListQuery>,
    kind: &'static str,
) -> ApiResult<Json<Value>> {
    if let Some(v) = q.filters.get("enabled")
        && v != "true"
        && v != "false"
    {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("`enabled` is `{v}`; it is `true` or `false`"),
            field: Some("enabled".into()),
        });
    }
    let (page, size, offset) = q.window();
    let items: Vec<Value> = s
        .registry()
        .components(kind)
        .into_iter()
        .filter(|c| {
            q.filters.iter().all(|(k, want)| match k.as_str() {
                "trigger_ref" | "pack_ref" | "runner_type" | "action_ref" => {
                    c.get(k).and_then(Value::as_str) == Some(want.as_str())
                }
                "enabled" => {
                    c.get("enabled")
                        .and_then(Value::as_bool)
                        .map(|b| b.to_string())
                        .as_deref()
                        == Some(want.as_str())
                }
                _ => true,
            })
        })
        .collect();
    let total = items.len() as i64;
    let window = items
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(size as usize)
        .collect();
    Ok(page_of(window, total, page, size))
}

/// Upstream's `GET /api/v1/triggers/{ref}/rules`: the rules of one trigger type.
async fn rules_of_trigger(
    State(s): Shared,
    P(trigger_ref): P<String>,
    Q(mut q): Q<ListQuery>,
) -> ApiResult<Json<Value>> {
    q.filters.insert("trigger_ref".into(), trigger_ref);
    list_components(State(s), Q(q), "rules").await
}

#[derive(Debug, Deserialize)]
struct EventIn {
    trigger_ref: String,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    trigger_instance_id: Option<String>,
}

async fn post_event(
    State(s): Shared,
    Body(e): Body<EventIn>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    // Rules render the payload into parameters, and answers wrap it deeper.
    params::check_depth("payload", &e.payload)
        .map_err(|bad| unprocessable(bad.field, format!("`payload` {}", bad.message)))?;
    let event =
        s.store
            .insert_event(&e.trigger_ref, &e.payload, e.trigger_instance_id.as_deref())?;
    let r = s.registry();
    let only = instance_rule(e.trigger_instance_id.as_deref()).map(|id| r.rule_of_instance(id));
    let mut created = vec![];
    for (reg, rule) in r.rules() {
        let spec = &rule.spec;
        if spec.trigger_ref != e.trigger_ref
            || !Registry::rule_enabled(reg, rule)
            || only.as_ref().is_some_and(|id| *id != spec.rule_ref)
        {
            continue;
        }
        let Some((_, action)) = r.action(&spec.action_ref) else {
            tracing::warn!(rule = %spec.rule_ref, action = %spec.action_ref, "rule names an action that is not registered");
            continue;
        };
        let ctx = Context::new(
            event.id,
            &e.trigger_ref,
            &e.payload,
            &event.created_at,
            reg.pack.meta.config.as_ref(),
        );
        match conditions_hold(spec.conditions.as_ref(), &ctx) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(why) => {
                tracing::warn!(rule = %spec.rule_ref, event = event.id, "the rule's conditions cannot be evaluated, so it does not fire: {why}");
                continue;
            }
        }
        let rendered = render(&json!(spec.action_params), &ctx);
        match params::check(&action.spec, &rendered) {
            Ok(p) => {
                let (public, secrets) = params::split_secrets(&action.spec, &p);
                let x = s.store.create_execution(
                    &spec.action_ref,
                    &public,
                    secrets.as_ref(),
                    Some(&spec.rule_ref),
                    Some(event.id),
                )?;
                created.push(x.id);
            }
            Err(bad) => {
                tracing::warn!(rule = %spec.rule_ref, field = %bad.field, "rule parameters invalid: {}", bad.message)
            }
        }
    }
    if !created.is_empty() {
        s.requested.notify_waiters();
    }
    Ok((
        StatusCode::CREATED,
        data(json!({"id": event.id, "executions": created})),
    ))
}

async fn get_event(State(s): Shared, P(id): P<i64>) -> ApiResult<Json<Value>> {
    match s.store.event(id) {
        Ok(e) => Ok(data(e)),
        Err(StoreError::NotFound) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("event {id} does not exist"),
        )),
        Err(other) => Err(other.into()),
    }
}

async fn list_events(State(s): Shared, Q(q): Q<ListQuery>) -> ApiResult<Json<Value>> {
    let (page, size, offset) = q.window();
    let (rows, total) = s.store.events(offset, size)?;
    Ok(page_of(
        rows.into_iter().map(|e| json!(e)).collect(),
        total,
        page,
        size,
    ))
}

#[derive(Debug, Deserialize)]
struct ExecutionIn {
    action_ref: String,
    #[serde(default)]
    parameters: Value,
}

fn request_execution(s: &AppState, body: &ExecutionIn) -> ApiResult<Execution> {
    let r = s.registry();
    let Some((reg, action)) = r.action(&body.action_ref) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "action `{}` is not registered; GET /api/v1/actions lists the actions",
                body.action_ref
            ),
        ));
    };
    if !action.spec.enabled || !reg.pack.meta.enabled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("action `{}` is disabled", body.action_ref),
        ));
    }
    let p = params::check(&action.spec, &body.parameters).map_err(|bad| {
        let message = format!("parameter `{}` {}", bad.field, bad.message);
        unprocessable(bad.field, message)
    })?;
    let (public, secrets) = params::split_secrets(&action.spec, &p);
    let x = s
        .store
        .create_execution(&body.action_ref, &public, secrets.as_ref(), None, None)?;
    s.requested.notify_waiters();
    Ok(x)
}

async fn create_execution(
    State(s): Shared,
    Body(body): Body<ExecutionIn>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    Ok((StatusCode::CREATED, data(request_execution(&s, &body)?)))
}

/// Requests an execution and waits for it to end (up to its timeout and a margin).
async fn execute(
    State(s): Shared,
    Body(body): Body<ExecutionIn>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let x = request_execution(&s, &body)?;
    let timeout = s
        .registry()
        .action(&body.action_ref)
        .and_then(|(_, a)| a.spec.timeout)
        .unwrap_or(60);
    // An action's timeout may be any u64: saturate; past what an Instant
    // holds, wait a year.
    let now = tokio::time::Instant::now();
    let deadline = now
        .checked_add(Duration::from_secs(timeout.saturating_add(30)))
        .unwrap_or(now + Duration::from_secs(365 * 86_400));
    loop {
        let notified = s.finished.notified();
        let now = s.store.execution(x.id)?;
        if status::FINAL.contains(&now.status.as_str()) {
            return Ok((StatusCode::OK, data(now)));
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Ok((StatusCode::ACCEPTED, data(s.store.execution(x.id)?)));
        }
    }
}

async fn list_executions(State(s): Shared, Q(q): Q<ListQuery>) -> ApiResult<Json<Value>> {
    let (page, size, offset) = q.window();
    let st = q.filters.get("status").map(String::as_str);
    let action = q.filters.get("action_ref").map(String::as_str);
    let (rows, total) = s.store.executions(st, action, offset, size)?;
    Ok(page_of(
        rows.into_iter().map(|e| json!(e)).collect(),
        total,
        page,
        size,
    ))
}

async fn get_execution(State(s): Shared, P(id): P<i64>) -> ApiResult<Json<Value>> {
    s.store.execution(id).map(data).map_err(|e| match e {
        StoreError::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("execution {id} does not exist"),
        ),
        other => other.into(),
    })
}

/// The longest a claim waits for an execution.
const MAX_CLAIM_WAIT_MS: u64 = 30_000;

#[derive(Debug, Deserialize)]
struct ClaimIn {
    worker: String,
    #[serde(default)]
    wait_ms: u64,
    /// The runner types the worker's container runs (`shell`, `python`,
    /// `node`, `native`); absent: any (workers before runtimes were sent).
    #[serde(default)]
    runtimes: Option<Vec<String>>,
}

impl ClaimIn {
    /// Whether this worker can run an execution of `action_ref`. One whose
    /// action is gone, or of a runner type no worker runs, goes to any
    /// worker, which fails it with the reason: it must not wait forever.
    fn can_run(&self, r: &crate::registry::Registry, action_ref: &str) -> bool {
        let Some(runtimes) = &self.runtimes else {
            return true;
        };
        match r.action(action_ref) {
            None => true,
            Some((_, a)) => {
                a.spec.runner_type == attune_pack::RunnerType::Other
                    || runtimes.iter().any(|n| n == a.spec.runner_type.as_str())
            }
        }
    }
}

/// The largest claim answer, as JSON: 8 MiB, below the 10 MB the worker's
/// HTTP client reads of one answer. Parameters are bounded far below it
/// ([`params::MAX_PARAMETERS_BYTES`]); this also bounds the action definition
/// that travels with them.
pub const MAX_CLAIM_BYTES: usize = 8 << 20;

/// The claim answer of `x` and the seconds to lease it for; or why no
/// worker could run it (it is then failed with that reason, never handed
/// out again): its action is gone, its parameters break the [`params::limits`]
/// (rows stored before them), or the answer would be too large to read.
fn claim_answer(s: &AppState, x: &Execution) -> Result<(Value, u64), String> {
    let r = s.registry();
    let Some((reg, action)) = r.action(&x.action_ref) else {
        return Err(format!("action `{}` is no longer registered", x.action_ref));
    };
    params::limits(&x.parameters).map_err(|bad| {
        format!(
            "parameter `{}` {}; a worker could not read its claim, so it was not run",
            bad.field, bad.message
        )
    })?;
    let mut execution = json!(x);
    // The worker names the rule and trigger to the action (ATTUNE_RULE, ATTUNE_TRIGGER).
    if let Some(event) = x.event_id.and_then(|id| s.store.event(id).ok()) {
        execution["trigger_ref"] = json!(event.trigger_ref);
    }
    let body = json!({"execution": execution, "action": action.spec, "pack_ref": reg.pack.meta.pack_ref, "source": reg.source});
    let size = serde_json::to_vec(&body).map_or(usize::MAX, |b| b.len());
    if size > MAX_CLAIM_BYTES {
        return Err(format!(
            "its claim would take {size} bytes, over the {MAX_CLAIM_BYTES} a worker reads; not run"
        ));
    }
    // The worker kills the action at its timeout and reports; a minute
    // more covers a brief API outage before the execution is requeued.
    Ok((body, action.spec.timeout.unwrap_or(600).saturating_add(60)))
}

/// Gives the oldest requested execution to a worker, with what it needs to run
/// it; waits up to `wait_ms` for one; 204 when there is none. An execution no
/// worker could run is failed with the reason on the way ([`claim_answer`]).
async fn claim(State(s): Shared, Body(c): Body<ClaimIn>) -> ApiResult<Response> {
    if c.wait_ms > MAX_CLAIM_WAIT_MS {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("`wait_ms` is at most {MAX_CLAIM_WAIT_MS}"),
            field: Some("wait_ms".into()),
        });
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(c.wait_ms);
    loop {
        let notified = s.requested.notified();
        loop {
            let claim = {
                let r = s.registry();
                s.store.claim_where(&c.worker, |a| c.can_run(&r, a))?
            };
            if claim.ended > 0 {
                s.finished.notify_waiters();
            }
            let Some(x) = claim.execution else { break };
            match claim_answer(&s, &x) {
                Ok((body, lease)) => {
                    s.store.lease(x.id, lease)?;
                    return Ok(Json(body).into_response());
                }
                Err(reason) => {
                    tracing::error!(execution = x.id, action = %x.action_ref, "failed at its claim: {reason}");
                    if s.store.fail(x.id, &reason)? {
                        s.finished.notify_waiters();
                    }
                }
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
}

async fn report(
    State(s): Shared,
    P(id): P<i64>,
    Body(rep): Body<Report>,
) -> ApiResult<Json<Value>> {
    let x = s.store.execution(id)?;
    let format = s
        .registry()
        .action(&x.action_ref)
        .map_or(attune_pack::OutputFormat::Text, |(_, a)| {
            a.spec.output_format
        });
    let result = crate::output::parse(format, &rep.stdout);
    let done = s.store.finish(id, &rep, result.as_ref())?;
    s.finished.notify_waiters();
    Ok(data(done))
}
