//! The admin API: HTTP + JSON on a Unix socket, versioned paths under `/v1/`.
//!
//! The server side, inside `trafficd`; the client is [`crate::api::client`].

use std::{
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    sync::Arc,
};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;

use super::Shared;
use crate::{
    api::{ApiError, Message, ResetAnswer},
    config::AdminConfig,
    engine::EngineError,
    ops::OpError,
};

struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

/// The one place operation errors get HTTP meanings.
impl From<OpError> for Failure {
    fn from(e: OpError) -> Self {
        let code = match &e {
            OpError::NotFound(_) => StatusCode::NOT_FOUND,
            OpError::Invalid(_) => StatusCode::BAD_REQUEST,
            OpError::Engine(EngineError::Config(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            OpError::Engine(EngineError::Dataplane(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(code, e.to_string())
    }
}

impl From<tokio::task::JoinError> for Failure {
    fn from(e: tokio::task::JoinError) -> Self {
        Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

/// Bind the admin socket: create its directory, replace a stale socket, set its mode and
/// group.
pub fn bind(cfg: &AdminConfig) -> std::io::Result<tokio::net::UnixListener> {
    if let Some(dir) = cfg.socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if cfg.socket.exists() {
        if UnixStream::connect(&cfg.socket).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another trafficd is listening on it",
            ));
        }
        std::fs::remove_file(&cfg.socket)?;
    }
    let listener = tokio::net::UnixListener::bind(&cfg.socket)?;
    std::fs::set_permissions(
        &cfg.socket,
        std::fs::Permissions::from_mode(cfg.socket_mode),
    )?;
    if let Some(group) = &cfg.socket_group {
        use std::os::unix::fs::MetadataExt as _;
        match group_id(group) {
            // Under systemd (Group=traffic) the socket is created with the group already.
            Some(gid) if std::fs::metadata(&cfg.socket)?.gid() == gid => {}
            Some(gid) => std::os::unix::fs::chown(&cfg.socket, None, Some(gid))?,
            None => tracing::warn!(
                group = %group,
                "admin socket group does not exist; only root can use trafficctl"
            ),
        }
    }
    Ok(listener)
}

fn group_id(name: &str) -> Option<u32> {
    // /etc/group is what getgrnam reads for local groups; avoid NSS in a daemon.
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.next()?;
        f.next()?.parse().ok()
    })
}

/// The API routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/counters", get(counters))
        .route("/v1/limits", get(limits))
        .route("/v1/sources", get(sources))
        .route("/v1/sources/{addr}/reset", post(reset_source))
        .route("/v1/reload", post(reload))
        .route("/v1/circuits", get(circuits))
        .route("/v1/circuits/{port}/open", post(circuit_open))
        .route("/v1/circuits/{port}/reset", post(circuit_reset))
        .route("/v1/chaos", post(chaos_start).delete(chaos_stop))
        .route("/v1/throttle", get(throttle))
        .with_state(shared)
}

/// Serve until the task is aborted.
pub async fn serve(listener: tokio::net::UnixListener, shared: Arc<Shared>) {
    if let Err(e) = axum::serve(listener, router(shared)).await {
        tracing::error!(error = %e, "admin API stopped");
    }
}

async fn status(State(s): State<Arc<Shared>>) -> Json<crate::api::StatusReport> {
    Json(s.lock().status())
}

async fn counters(
    State(s): State<Arc<Shared>>,
) -> Result<Json<crate::api::report::CountersReport>, Failure> {
    Ok(Json(s.lock().counters()?))
}

async fn limits(
    State(s): State<Arc<Shared>>,
) -> Result<Json<crate::api::report::LimitsReport>, Failure> {
    super::walks::refresh_tracked_sources(&s).await;
    Ok(Json(s.lock().limits()?))
}

#[derive(Deserialize)]
struct TopQuery {
    top: Option<usize>,
}

async fn sources(
    State(s): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<TopQuery>,
) -> Result<Json<crate::api::report::SourcesReport>, Failure> {
    Ok(Json(
        super::walks::top_sources(&s, q.top.unwrap_or(20)).await?,
    ))
}

async fn reset_source(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(addr): axum::extract::Path<String>,
) -> Result<Json<ResetAnswer>, Failure> {
    let ip: std::net::IpAddr = addr.parse().map_err(|_| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("`{addr}` is not an IP address"),
        )
    })?;
    Ok(Json(ResetAnswer {
        removed: s.lock().reset_source(ip)?,
    }))
}

async fn circuits(
    State(s): State<Arc<Shared>>,
) -> Result<Json<crate::api::circuits::CircuitsReport>, Failure> {
    Ok(Json(s.lock().circuits()?))
}

async fn circuit_open(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(port): axum::extract::Path<u16>,
) -> Result<Json<Message>, Failure> {
    Ok(Json(Message {
        message: s.lock().circuit_open(port)?,
    }))
}

async fn circuit_reset(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(port): axum::extract::Path<u16>,
) -> Result<Json<Message>, Failure> {
    Ok(Json(Message {
        message: s.lock().circuit_reset(port)?,
    }))
}

async fn chaos_start(
    State(s): State<Arc<Shared>>,
    Json(req): Json<crate::api::ChaosRequest>,
) -> Result<Json<Message>, Failure> {
    Ok(Json(Message {
        message: s.lock().chaos_start(&req)?,
    }))
}

async fn chaos_stop(State(s): State<Arc<Shared>>) -> Result<Json<Message>, Failure> {
    Ok(Json(Message {
        message: s.lock().chaos_stop()?,
    }))
}

async fn throttle(State(s): State<Arc<Shared>>) -> Json<crate::policy::throttle::ThrottleStatus> {
    let core = s.lock();
    Json(core.throttle_status())
}

async fn reload(State(s): State<Arc<Shared>>) -> Result<Json<crate::api::Applied>, Failure> {
    let shared = s.clone();
    tokio::task::spawn_blocking(move || shared.reload())
        .await?
        .map(Json)
        .map_err(|e| Failure(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}
