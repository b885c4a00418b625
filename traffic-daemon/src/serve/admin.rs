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

pub(super) struct Failure(pub(super) StatusCode, pub(super) String);

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

/// Bind the admin socket: create its directory, replace a stale socket of ours, set its
/// mode and group.
pub fn bind(cfg: &AdminConfig) -> std::io::Result<tokio::net::UnixListener> {
    if let Some(dir) = cfg.socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    remove_stale_socket(&cfg.socket)?;
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

/// Remove what is at `path` only if it is a stale socket of ours: a socket (not a file, a
/// directory or a link to one), owned by this process's user, that refuses connections
/// (ECONNREFUSED: nobody listens). Anything else is refused with an error that says what is
/// there, and left in place: a typo in `socket` must never delete an operator's file.
fn remove_stale_socket(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    let refuse = |what: String| {
        Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{what}; refusing to remove it (remove it yourself, or set [admin] socket)"),
        ))
    };
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    if !meta.file_type().is_socket() {
        return refuse(format!("{} exists and is not a socket", path.display()));
    }
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return refuse(format!(
            "{} is a socket of uid {}, not ours",
            path.display(),
            meta.uid()
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another trafficd is listening on it",
        )),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => std::fs::remove_file(path),
        Err(e) => refuse(format!(
            "{} is a socket that cannot be probed ({e})",
            path.display()
        )),
    }
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

/// Who may change things: root, and members of `control_group` (resolved at start).
#[derive(Clone, Debug)]
pub struct Access {
    pub control_group: Option<String>,
    pub control_gid: Option<u32>,
}

impl Access {
    pub fn from_config(cfg: &AdminConfig) -> Self {
        let control_gid = cfg.control_group.as_deref().and_then(group_id);
        if let (Some(g), None) = (&cfg.control_group, control_gid) {
            tracing::warn!(
                group = %g,
                "admin control group does not exist; only root can change things through trafficctl"
            );
        }
        Self {
            control_group: cfg.control_group.clone(),
            control_gid,
        }
    }
}

/// Reads (GET) are open to whoever reached the socket (its mode and group decide that);
/// anything else needs root or the control group. Denials and allowed changes are logged
/// with the caller's uid, gid and pid.
async fn authorise(
    State(access): State<Arc<Access>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::Method;
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<Arc<super::listener::Peer>>()
        .cloned();
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let (uid, gid, pid) = peer
        .as_ref()
        .map_or((None, None, None), |p| (Some(p.uid), Some(p.gid), p.pid));
    if peer.is_some_and(|p| p.is_root_or_in(access.control_gid)) {
        tracing::info!(?uid, ?gid, ?pid, %method, %path, "admin: control request allowed");
        return next.run(req).await;
    }
    tracing::warn!(?uid, ?gid, ?pid, %method, %path, "admin: control request denied");
    let who = match &access.control_group {
        Some(g) => format!("root or a member of group `{g}`"),
        None => "root".to_owned(),
    };
    Failure(
        StatusCode::FORBIDDEN,
        format!("{method} {path} changes the daemon: only {who} may (reading is open to the socket's group)"),
    )
    .into_response()
}

/// The API routes, behind [`authorise`].
pub fn router(shared: Arc<Shared>, access: Access) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/counters", get(counters))
        .route("/v1/limits", get(limits))
        .route("/v1/sources", get(sources))
        .route("/v1/sources/{addr}/reset", post(reset_source))
        .route("/v1/reload", post(reload))
        .route("/v1/circuits", get(circuits))
        .route("/v1/circuits/{upstream}/open", post(circuit_open))
        .route("/v1/circuits/{upstream}/reset", post(circuit_reset))
        .route("/v1/chaos", post(chaos_start).delete(chaos_stop))
        .route("/v1/throttle", get(throttle))
        .route("/v1/suggest", get(suggest))
        .route(
            "/v1/bans",
            get(super::bans::list)
                .post(super::bans::add)
                .delete(super::bans::remove),
        )
        .route("/v1/feeds", get(feeds))
        .route("/v1/feeds/refresh", post(feeds_refresh))
        .route("/v1/watch", get(super::watch::watch))
        .route("/v1/fleet", get(super::fleet::view))
        .with_state(shared)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(access),
            authorise,
        ))
}

/// Serve within `limits` until the task is aborted.
pub async fn serve(
    listener: tokio::net::UnixListener,
    shared: Arc<Shared>,
    limits: super::listener::Limits,
) {
    let stats = shared.listeners.admin.clone();
    let access = Access::from_config(&shared.lock().config.admin);
    super::listener::serve(listener, "admin", router(shared, access), limits, stats).await;
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

#[derive(Deserialize)]
struct SuggestQuery {
    class: Option<String>,
    quantile: Option<f64>,
    headroom: Option<f64>,
}

async fn suggest(
    State(s): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<SuggestQuery>,
) -> Result<Json<crate::policy::baseline::suggest::SuggestReport>, Failure> {
    let req = crate::policy::baseline::suggest::SuggestRequest {
        class: q.class,
        quantile: q.quantile.unwrap_or(0.999),
        headroom: q.headroom.unwrap_or(2.0),
    };
    Ok(Json(s.lock().suggest(&req)?))
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
    axum::extract::Path(upstream): axum::extract::Path<String>,
) -> Result<Json<Message>, Failure> {
    Ok(Json(Message {
        message: s.lock().circuit_open(&upstream)?,
    }))
}

async fn circuit_reset(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(upstream): axum::extract::Path<String>,
) -> Result<Json<Message>, Failure> {
    Ok(Json(Message {
        message: s.lock().circuit_reset(&upstream)?,
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

async fn feeds(State(s): State<Arc<Shared>>) -> Json<crate::feeds::FeedsReport> {
    Json(s.lock().feeds.report())
}

/// `POST /v1/feeds/refresh[?name=NAME]`: refresh one feed (or all) now; answers at once.
async fn feeds_refresh(
    State(s): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::BTreeMap<String, String>>,
) -> Result<Json<Message>, Failure> {
    let name = q.get("name").map(String::as_str);
    if s.lock().feeds.request(name) {
        Ok(Json(Message {
            message: format!("refresh of {} requested", name.unwrap_or("every feed")),
        }))
    } else {
        Err(OpError::NotFound(format!("no feed named `{}`", name.unwrap_or_default())).into())
    }
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use axum::{body::Body, http::Request};

    use super::*;
    use crate::{config::Config, dataplane::fake::Fake, engine::Core, serve::listener::Peer};

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("trf-admin-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn only_a_stale_socket_of_ours_is_removed() {
        let dir = scratch("stale");
        let file = dir.join("admin.sock");
        std::fs::write(&file, b"an operator's file").unwrap();
        let e = remove_stale_socket(&file).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"an operator's file");

        let sock = dir.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        remove_stale_socket(&sock).unwrap();
        assert!(!sock.exists());

        let live = dir.join("live.sock");
        let _l = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let e = remove_stale_socket(&live).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        assert!(live.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    async fn call(router: &Router, method: &str, path: &str, peer: Option<Peer>) -> StatusCode {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        if let Some(p) = peer {
            req.extensions_mut().insert(Arc::new(p));
        }
        let mut r = router.clone();
        tower_service::Service::call(&mut r, req)
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn readers_read_and_only_root_or_the_control_group_changes() {
        let text = "[daemon]\ninterfaces = [\"veth0\"]\n[classes.default]\n";
        let config = Config::parse(Path::new("t.toml"), text).unwrap();
        let core = Core::new(config, Box::new(Fake::default())).unwrap();
        let shared = Arc::new(Shared {
            core: std::sync::Mutex::new(core),
            config_path: "/nonexistent/traffic.toml".into(),
            listeners: Default::default(),
            fleet: None,
        });
        let access = Access {
            control_group: Some("traffic-admin".into()),
            control_gid: Some(990),
        };
        let router = router(shared, access);
        let reader = Peer {
            uid: 1000,
            gid: 1000,
            pid: Some(42),
            groups: vec![1000, 989],
        };
        let operator = Peer {
            groups: vec![1000, 990],
            ..reader.clone()
        };
        let root = Peer {
            uid: 0,
            gid: 0,
            pid: None,
            groups: vec![],
        };
        let mutate = "/v1/circuits/9/reset";
        assert_eq!(
            call(&router, "GET", "/v1/status", Some(reader.clone())).await,
            StatusCode::OK
        );
        assert_eq!(
            call(&router, "POST", mutate, Some(reader)).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call(&router, "DELETE", "/v1/chaos", None).await,
            StatusCode::FORBIDDEN
        );
        // Allowed through: the route's own answer (no such upstream).
        assert_eq!(
            call(&router, "POST", mutate, Some(operator)).await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(&router, "POST", mutate, Some(root)).await,
            StatusCode::NOT_FOUND
        );
    }
}
