//! The admin API: HTTP + JSON on a Unix socket, versioned paths under `/v1/`.
//!
//! The server side runs inside `trafficd`; [`Client`] is the blocking client `trafficctl`
//! uses (a few lines of HTTP/1.1, no extra runtime).

use std::{
    io::{Read as _, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{config::AdminConfig, daemon::Shared};

/// Body of every error response.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

impl From<crate::daemon::DaemonError> for Failure {
    fn from(e: crate::daemon::DaemonError) -> Self {
        use crate::daemon::DaemonError as E;
        let code = match &e {
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::BadRequest(_) => StatusCode::BAD_REQUEST,
            E::Config(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(code, e.to_string())
    }
}

impl From<tokio::task::JoinError> for Failure {
    fn from(e: tokio::task::JoinError) -> Self {
        Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

/// A one-line answer to an operation.
#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    pub message: String,
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

async fn status(State(s): State<Arc<Shared>>) -> Json<crate::daemon::StatusReport> {
    Json(s.lock().status())
}

async fn counters(
    State(s): State<Arc<Shared>>,
) -> Result<Json<crate::report::CountersReport>, Failure> {
    Ok(Json(s.lock().counters()?))
}

async fn limits(
    State(s): State<Arc<Shared>>,
) -> Result<Json<crate::report::LimitsReport>, Failure> {
    Ok(Json(s.lock().limits()?))
}

#[derive(Deserialize)]
struct TopQuery {
    top: Option<usize>,
}

async fn sources(
    State(s): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<TopQuery>,
) -> Result<Json<crate::report::SourcesReport>, Failure> {
    Ok(Json(s.lock().top_sources(q.top.unwrap_or(20))?))
}

/// Answer of `POST /v1/sources/{addr}/reset`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResetAnswer {
    pub removed: usize,
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
) -> Result<Json<crate::upstream::CircuitsReport>, Failure> {
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
    Json(req): Json<crate::daemon::ChaosRequest>,
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

async fn reload(State(s): State<Arc<Shared>>) -> Result<Json<crate::daemon::Applied>, Failure> {
    let shared = s.clone();
    tokio::task::spawn_blocking(move || shared.reload())
        .await?
        .map(Json)
        .map_err(|e| Failure(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

/// Why a request to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "trafficd is not running (no admin socket at {path}); start it with `systemctl start trafficd`"
    )]
    NotRunning { path: PathBuf },
    #[error(
        "permission denied on {path}: run as root or as a member of the socket's group (`traffic` by default)"
    )]
    Permission { path: PathBuf },
    #[error("cannot reach trafficd at {path}: {source}")]
    Unreachable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("trafficd answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("unexpected answer from trafficd: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Whether the daemon could not be reached at all (exit code 3).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::NotRunning { .. } | Self::Permission { .. } | Self::Unreachable { .. }
        )
    }
}

/// A blocking admin API client.
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
            timeout: Duration::from_secs(30),
        }
    }

    /// GET a JSON document.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request("GET", path, None)
    }

    /// POST without a body, decode the JSON answer.
    pub fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request("POST", path, None)
    }

    /// POST a JSON body, decode the JSON answer.
    pub fn post_json<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_string(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.request("POST", path, Some(&body))
    }

    /// DELETE, decode the JSON answer.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request("DELETE", path, None)
    }

    fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<T, ClientError> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning {
                    path: self.socket.clone(),
                }
            }
            std::io::ErrorKind::PermissionDenied => ClientError::Permission {
                path: self.socket.clone(),
            },
            _ => ClientError::Unreachable {
                path: self.socket.clone(),
                source: e,
            },
        })?;
        let io = |e| ClientError::Unreachable {
            path: self.socket.clone(),
            source: e,
        };
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: trafficd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .map_err(io)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).map_err(io)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| ClientError::Protocol("no HTTP header".into()))?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ClientError::Protocol(format!("bad status line in {head:?}")))?;
        let chunked = head.lines().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
        });
        let body = if chunked {
            dechunk(body)?
        } else {
            body.to_owned()
        };
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<ApiError>(&body)
                .map(|e| e.error)
                .unwrap_or(body);
            return Err(ClientError::Api { status, message });
        }
        serde_json::from_str(&body).map_err(|e| ClientError::Protocol(format!("{e}: {body}")))
    }
}

fn dechunk(mut s: &str) -> Result<String, ClientError> {
    let mut out = String::new();
    loop {
        let (size, rest) = s
            .split_once("\r\n")
            .ok_or_else(|| ClientError::Protocol("bad chunk".into()))?;
        let n = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| ClientError::Protocol("bad chunk size".into()))?;
        if n == 0 {
            return Ok(out);
        }
        if rest.len() < n {
            return Err(ClientError::Protocol("short chunk".into()));
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            "abcde"
        );
        assert!(dechunk("zz\r\n").is_err());
    }

    #[test]
    fn missing_socket_is_not_running() {
        let c = Client::new(Path::new("/nonexistent/traffic/admin.sock"));
        let e = c.get::<serde_json::Value>("/v1/status").unwrap_err();
        assert!(e.is_unreachable());
        assert!(e.to_string().contains("not running"), "{e}");
    }
}
