//! The routes. Each request's token is checked before anything is read: a token that does not verify, has
//! expired, or names an attempt (or service) that is no longer live is 401; a valid token on a path it does not
//! cover (another execution, a service on `/executions/…`, another target's job) is 403; a body that is not the
//! JSON the endpoint takes is 400, one over 1 MiB 413. Store calls run on the blocking pool, so a slow store or
//! client never holds up another request.

use std::sync::{Arc, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::jobs::{Job, JobProgress};
use envctl_contracts::runtime_api::{
    ApiError, Cancelled, Condition, EnqueueRequest, Enqueued, ExecutionContext, Increment, LogMessage,
    ParentOutput, SetVariable, VariableValue,
};
use serde::Deserialize;

use super::Shared;
use super::tokens::Claims;
use crate::jobs::{JobStore, NewJob, StoreError};

/// The largest body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;

type Api = Arc<Shared>;

/// Why a request is refused.
#[derive(Debug)]
pub enum Refusal {
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden(String),
    /// 400.
    BadRequest(String),
    /// 404.
    NotFound(String),
    /// 409.
    Conflict(String),
    /// 503: no store attached yet.
    Unavailable,
    /// 500.
    Internal(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, error) = match self {
            Self::Unauthorized => {
                (StatusCode::UNAUTHORIZED, "missing, forged, expired or revoked token".to_owned())
            }
            Self::Forbidden(why) => (StatusCode::FORBIDDEN, why),
            Self::BadRequest(why) => (StatusCode::BAD_REQUEST, why),
            Self::NotFound(why) => (StatusCode::NOT_FOUND, why),
            Self::Conflict(why) => (StatusCode::CONFLICT, why),
            Self::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "the job store is not open yet; try again".into())
            }
            Self::Internal(why) => (StatusCode::INTERNAL_SERVER_ERROR, why),
        };
        (status, axum::Json(ApiError { error })).into_response()
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => Self::NotFound(format!("no job `{id}`")),
            StoreError::Variable { .. } | StoreError::State { .. } => Self::Conflict(e.to_string()),
            StoreError::TargetConflict { .. } => Self::BadRequest(e.to_string()),
            StoreError::Backend { .. } => Self::Internal(e.to_string()),
        }
    }
}

/// Every route, with the body limit and the request counter.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/executions/{id}/input", get(input))
        .route("/executions/{id}/output", post(output))
        .route("/executions/{id}/context", get(context))
        .route("/executions/{id}/condition", post(condition))
        .route("/executions/{id}/variables/{key}", get(var_get).put(var_set).delete(var_delete))
        .route("/executions/{id}/variables/{key}/incr", post(var_incr))
        .route("/executions/{id}/progress", post(progress))
        .route("/executions/{id}/logs", post(log))
        .route("/jobs", post(enqueue))
        .route("/jobs/{id}", get(job))
        .route("/jobs/{id}/cancel", post(cancel))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&api), count))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(api)
}

async fn count(State(api): State<Api>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    api.metrics.request(response.status().as_u16());
    response
}

async fn blocking<T: Send + 'static>(
    api: &Api,
    f: impl FnOnce(&dyn JobStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Refusal> {
    // Held by the blocking call itself, so a client that gives up does not free it while the call still runs.
    let leave = || async {
        Arc::clone(&api.store_calls).acquire_owned().await.map_err(|e| Refusal::Internal(e.to_string()))
    };
    let store = if let Some(store) = api.store.get() {
        Arc::clone(store)
    } else {
        let open = Arc::clone(api.store_opener()?);
        let permit = leave().await?;
        let opened = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            open()
        })
        .await
        .map_err(|e| Refusal::Internal(e.to_string()))?
        .ok_or(Refusal::Unavailable)??;
        Arc::clone(api.store.get_or_init(|| opened))
    };
    let permit = leave().await?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f(store.as_ref())
    })
    .await
    .map_err(|e| Refusal::Internal(e.to_string()))?
    .map_err(Refusal::from)
}

impl Shared {
    fn store_opener(&self) -> Result<&super::Opener, Refusal> {
        self.opener.get().ok_or(Refusal::Unavailable)
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| Refusal::BadRequest(format!("malformed JSON body: {e}")))
}

/// The verified claims of the request's bearer token.
fn claims(api: &Api, headers: &HeaderMap) -> Result<Claims, Refusal> {
    let token = bearer(headers).ok_or(Refusal::Unauthorized)?;
    api.signer.verify(token).ok_or(Refusal::Unauthorized)
}

/// The request's bearer token, as sent.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The live attempt `id` whose token the request carries.
fn execution(api: &Api, headers: &HeaderMap, id: &str) -> Result<Job, Refusal> {
    let claims = claims(api, headers)?;
    let Some(own) = claims.execution_id.as_deref().filter(|_| claims.kind == "execution") else {
        // A valid service token (or a revoked one: 401) on an execution's path.
        return if live_service(api, &claims) {
            Err(Refusal::Forbidden("a service token reads no execution's data".into()))
        } else {
            Err(Refusal::Unauthorized)
        };
    };
    let live = api.executions.lock().unwrap_or_else(PoisonError::into_inner).get(own).map(|l| l.job.clone());
    let Some(job) = live else { return Err(Refusal::Unauthorized) };
    if own == id {
        Ok(job)
    } else {
        Err(Refusal::Forbidden(format!("this token is for execution {own}, not {id}")))
    }
}

fn live_service(api: &Api, claims: &Claims) -> bool {
    claims.kind == "service"
        && match (&claims.target, &claims.service) {
            (Some(target), Some(service)) => api
                .services
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&(target.clone(), service.clone())),
            _ => false,
        }
}

/// The target whose jobs the request may touch (`None`: any), for a live service's token or a live attempt's.
fn job_caller(api: &Api, headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let claims = claims(api, headers)?;
    if live_service(api, &claims) {
        return Ok(claims.target);
    }
    let live = claims.execution_id.as_deref().filter(|_| claims.kind == "execution").and_then(|id| {
        api.executions.lock().unwrap_or_else(PoisonError::into_inner).get(id).map(|l| l.job.target.clone())
    });
    live.ok_or(Refusal::Unauthorized)
}

fn allowed(caller: Option<&String>, target: Option<&String>, id: &str) -> Result<(), Refusal> {
    match caller {
        Some(own) if target != Some(own) => Err(Refusal::Forbidden(format!(
            "job {id} is not of target `{own}`, the only one this token may touch"
        ))),
        _ => Ok(()),
    }
}

async fn health(State(api): State<Api>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok", "worker": api.worker}))
}

async fn metrics(State(api): State<Api>) -> impl IntoResponse {
    let figures = blocking(&api, |s| Ok((s.stats()?, s.oldest_queued_age()?))).await.ok();
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        api.metrics.render(figures),
    )
}

async fn input(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let job = execution(&api, &headers, &id)?;
    Ok(axum::Json(job.input.unwrap_or(serde_json::Value::Null)).into_response())
}

async fn output(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Refusal> {
    let job = execution(&api, &headers, &id)?;
    let value: serde_json::Value = parse(&body)?;
    blocking(&api, move |s| s.set_output(&job.id, &value)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn context(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let job = execution(&api, &headers, &id)?;
    let parents = job.parents.clone();
    let parents = blocking(&api, move |s| {
        Ok(parents
            .iter()
            .map(|p| match s.get(p) {
                Ok(parent) => {
                    ParentOutput { id: p.clone(), status: Some(parent.status), output: parent.output }
                }
                Err(_) => ParentOutput { id: p.clone(), status: None, output: None },
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(axum::Json(ExecutionContext {
        schema_version: SCHEMA_VERSION,
        execution_id: id,
        job_id: job.id,
        job_type: job.job_type,
        target: job.target,
        attempt: job.attempts,
        max_attempts: job.max_attempts,
        repository: api.repository.clone(),
        worker: api.worker.clone(),
        parents,
    })
    .into_response())
}

async fn condition(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Refusal> {
    let job = execution(&api, &headers, &id)?;
    let Condition { condition } = parse(&body)?;
    blocking(&api, move |s| s.set_condition(&job.id, condition)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?target=`: a variable of one target instead of the repository's.
#[derive(Debug, Deserialize)]
struct Scope {
    target: Option<String>,
}

/// What every variable endpoint checks first: the token is this execution's, the key is a valid name, and the
/// target asked for is one it may reach ([`variable_target`]); returns that target.
fn variable_scope(
    api: &Api,
    headers: &HeaderMap,
    id: &str,
    key: &str,
    scope: Scope,
) -> Result<Option<String>, Refusal> {
    let job = execution(api, headers, id)?;
    check_key(key)?;
    variable_target(&job, scope.target)
}

/// The variables' target a request may use: a target's job reaches its own target's (and the repository's)
/// only, as with the job endpoints; a target that is no target name (a tab would reach into another variable's
/// field) is 400.
fn variable_target(job: &Job, asked: Option<String>) -> Result<Option<String>, Refusal> {
    if let Some(t) = &asked {
        crate::targets::validate_name(t).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        if let Some(own) = &job.target
            && own != t
        {
            return Err(Refusal::Forbidden(format!(
                "this token is for a job of target `{own}`; it reaches no variable of target `{t}`"
            )));
        }
    }
    Ok(asked)
}

fn check_key(key: &str) -> Result<(), Refusal> {
    if key.is_empty() || key.len() > 256 || key.contains('\t') {
        return Err(Refusal::BadRequest(format!("variable name `{key}`: 1 to 256 bytes, no tab")));
    }
    Ok(())
}

async fn var_get(
    State(api): State<Api>,
    Path((id, key)): Path<(String, String)>,
    Query(scope): Query<Scope>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let target = variable_scope(&api, &headers, &id, &key, scope)?;
    let (k, t) = (key.clone(), target.clone());
    match blocking(&api, move |s| s.var_get(t.as_deref(), &k)).await? {
        Some(value) => Ok(axum::Json(VariableValue { key, target, value }).into_response()),
        None => Err(Refusal::NotFound(format!("no variable `{key}`"))),
    }
}

async fn var_set(
    State(api): State<Api>,
    Path((id, key)): Path<(String, String)>,
    Query(scope): Query<Scope>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Refusal> {
    let target = variable_scope(&api, &headers, &id, &key, scope)?;
    let SetVariable { value } = parse(&body)?;
    blocking(&api, move |s| s.var_set(target.as_deref(), &key, &value)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn var_delete(
    State(api): State<Api>,
    Path((id, key)): Path<(String, String)>,
    Query(scope): Query<Scope>,
    headers: HeaderMap,
) -> Result<StatusCode, Refusal> {
    let target = variable_scope(&api, &headers, &id, &key, scope)?;
    let k = key.clone();
    if blocking(&api, move |s| s.var_delete(target.as_deref(), &k)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Refusal::NotFound(format!("no variable `{key}`")))
    }
}

async fn var_incr(
    State(api): State<Api>,
    Path((id, key)): Path<(String, String)>,
    Query(scope): Query<Scope>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let target = variable_scope(&api, &headers, &id, &key, scope)?;
    let Increment { by } =
        if body.iter().all(u8::is_ascii_whitespace) { Increment::default() } else { parse(&body)? };
    let (k, t) = (key.clone(), target.clone());
    let value = blocking(&api, move |s| s.var_incr(t.as_deref(), &k, by.unwrap_or(1))).await?;
    Ok(axum::Json(VariableValue { key, target, value: value.to_string() }).into_response())
}

async fn progress(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Refusal> {
    let job = execution(&api, &headers, &id)?;
    let progress: JobProgress = parse(&body)?;
    if progress.percent.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
        return Err(Refusal::BadRequest("percent is 0 to 100".into()));
    }
    blocking(&api, move |s| s.progress(&job.id, &progress)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn log(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Refusal> {
    let job = execution(&api, &headers, &id)?;
    let LogMessage { message } = parse(&body)?;
    // The caller's own token, logged by mistake, is kept out of the job's log.
    let token = bearer(&headers).unwrap_or_default();
    let lines: Vec<String> =
        message
            .lines()
            .map(|l| {
                if token.is_empty() { l.to_owned() } else { l.replace(token, crate::state::redact::REDACTED) }
            })
            .collect();
    blocking(&api, move |s| s.log(&job.id, &lines)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn enqueue(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Result<Response, Refusal> {
    let caller = job_caller(&api, &headers)?;
    let request: EnqueueRequest = parse(&body)?;
    let target = request.target.clone().or_else(|| caller.clone());
    allowed(caller.as_ref(), target.as_ref(), "to enqueue")?;
    if let Some(t) = &target {
        crate::targets::validate_name(t).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    }
    let job = NewJob {
        job_type: request.job_type,
        target,
        payload: request.payload.unwrap_or_else(|| serde_json::json!({})),
        priority: request.priority.unwrap_or_default(),
        max_attempts: request.max_attempts.unwrap_or(3),
        delay: None,
        input: request.input,
        after: request.after,
    };
    if let (Some(own), Ok(Some(named))) = (caller.as_ref(), job.resolved_target()) {
        allowed(Some(own), Some(&named.to_owned()), "to enqueue")?;
    }
    // A parent's output is in its child's context: a token of one target waits on its own target's jobs only.
    if caller.is_some() && !job.after.is_empty() {
        let after = job.after.clone();
        let parents =
            blocking(&api, move |s| after.iter().map(|id| s.get(id)).collect::<Result<Vec<_>, _>>()).await?;
        for parent in &parents {
            allowed(caller.as_ref(), parent.target.as_ref(), &parent.id)?;
        }
    }
    let mut ids = blocking(&api, move |s| s.enqueue(&[job])).await?;
    let id = ids.pop().unwrap_or_default();
    Ok((StatusCode::CREATED, axum::Json(Enqueued { id })).into_response())
}

/// Job `id`, when the caller's token may see it (a service's: only its own target's jobs).
async fn permitted_job(
    api: &Api,
    id: &str,
    headers: &HeaderMap,
) -> Result<envctl_contracts::jobs::Job, Refusal> {
    let caller = job_caller(api, headers)?;
    let found = {
        let id = id.to_owned();
        blocking(api, move |s| s.get(&id)).await?
    };
    allowed(caller.as_ref(), found.target.as_ref(), id)?;
    Ok(found)
}

async fn job(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    Ok(axum::Json(permitted_job(&api, &id, &headers).await?).into_response())
}

async fn cancel(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    permitted_job(&api, &id, &headers).await?;
    let status = blocking(&api, move |s| s.cancel(&id)).await?;
    Ok(axum::Json(Cancelled { status }).into_response())
}
