//! Ricochet's controller: the operator's configuration (VMware Avi's object model, the
//! types of `ricochet_config`) in an embedded transactional store, behind an authenticated
//! JSON REST API that the `ricochet` CLI and the service engines use.
//!
//! - [`store`]: redb tables, one write transaction per change, a global revision, events.
//! - [`api`]: the routes under `/api/v1`, the OpenAPI document, JSON errors.
//! - [`auth`]: bearer tokens (SHA-256 stored), the admin token created on first start.
//! - [`engines`]: live state of service engines (connection, last report).
//! - [`status`]: virtual services up, degraded or down from their servers' health.
//! - [`metrics`]: `GET /metrics` (Prometheus text format): requests, store, engines.
//!
//! ```no_run
//! # async fn run() -> Result<(), ricochet_controller::ControllerError> {
//! let options = ricochet_controller::Options::new(
//!     "127.0.0.1:8480".parse().unwrap(),
//!     "/var/lib/ricochet".into(),
//! );
//! ricochet_controller::serve(options).await // until SIGTERM or SIGINT
//! # }
//! ```
//!
//! ARCHITECTURE.md (section "The controller") explains the design.

#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod connections;
pub mod desired;
pub mod engines;
pub mod error;
pub mod extract;
pub mod index;
pub mod metrics;
pub mod poll_wakes;
pub mod status;
pub mod store;
pub mod tls;

// The API's data types live in ricochet-api (shared with the engines and the CLI).
pub use ricochet_api::{diff, kind, types};

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::api::AppState;
use crate::auth::{AdminToken, AuthSetupError, Tokens};
use crate::connections::Limits;
use crate::engines::Engines;
use crate::store::{Store, StoreError, STORE_FILE};
use crate::tls::{TlsError, TlsOptions};

/// Default address of the API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8480";
/// Default state directory (the store and the admin token).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ricochet";
/// Default time after which a silent engine is disconnected.
pub const DEFAULT_ENGINE_TIMEOUT: Duration = Duration::from_secs(15);

/// How to run the controller.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address of the API (port 0: any free port, see [`Controller::local_addr`]).
    pub listen: SocketAddr,
    /// Directory of the store (`controller.redb`) and the admin token (`admin-token`).
    pub state_dir: PathBuf,
    /// Require bearer tokens (on by default; off only for a trusted loopback setup).
    pub auth: bool,
    /// Replace the admin token with a new one (for a lost token file).
    pub new_admin_token: bool,
    /// An engine not heard from for this long is disconnected.
    pub engine_timeout: Duration,
    /// Serve the API over TLS with this certificate and key.
    pub tls: Option<TlsOptions>,
    /// Allow plain HTTP on an address other than loopback (tokens would cross the
    /// network in clear).
    pub allow_plain_http: bool,
    /// Connection limits and timeouts.
    pub limits: Limits,
}

impl Options {
    /// The defaults, at `listen` with `state_dir`.
    pub fn new(listen: SocketAddr, state_dir: PathBuf) -> Self {
        Self {
            listen,
            state_dir,
            auth: true,
            new_admin_token: false,
            engine_timeout: DEFAULT_ENGINE_TIMEOUT,
            tls: None,
            allow_plain_http: false,
            limits: Limits::default(),
        }
    }
}

/// Why the controller could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The state directory could not be created.
    #[error("cannot create the state directory {}: {source}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The state directory is not private and cannot be made so.
    #[error("{0}")]
    Insecure(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The admin token could not be created.
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Plain HTTP on an address that is not loopback, without `allow_plain_http`.
    #[error(
        "refusing plain HTTP on {0}, which is not a loopback address: tokens would cross the \
         network in clear; serve TLS (--tls-cert and --tls-key, or --tls-self-signed) or pass \
         --allow-plain-http"
    )]
    PlainHttp(SocketAddr),
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// A controller with its store open and its address bound, not serving yet.
pub struct Controller {
    listener: tokio::net::TcpListener,
    state: AppState,
    tokens: Option<Tokens>,
    shutdown: watch::Sender<bool>,
    admin_token: Option<AdminToken>,
    engine_timeout: Duration,
    tls: Option<tls::ServerTls>,
    limits: Limits,
    /// Routes served beside the API (the web console's), see [`Controller::serve_beside`].
    beside: axum::Router,
}

impl Controller {
    /// Opens the store (creating the state directory and, on first start, the admin
    /// token) and binds the address.
    pub async fn bind(options: Options) -> Result<Controller, ControllerError> {
        if options.tls.is_none() && !options.allow_plain_http && !options.listen.ip().is_loopback()
        {
            return Err(ControllerError::PlainHttp(options.listen));
        }
        match connections::raise_fd_limit() {
            Ok((before, now)) if before != now => {
                info!("raised the open-file limit from {before} to {now}")
            }
            Ok((_, now)) => info!("open-file limit: {now}"),
            Err(e) => warn!("cannot read or raise the open-file limit: {e}"),
        }
        let mut limits = options.limits;
        limits.max_connections = connections::effective_max_connections(limits.max_connections);
        if limits.max_connections < options.limits.max_connections {
            warn!(
                "at most {} connections (not {}): the open-file limit leaves no room for more",
                limits.max_connections, options.limits.max_connections
            );
        }
        let tls = match &options.tls {
            Some(t) => {
                let t2 = t.clone();
                let server = tokio::task::spawn_blocking(move || tls::server_tls(&t2))
                    .await
                    .expect("setting up TLS does not panic")?;
                if server.generated {
                    info!(
                        "generated a self-signed TLS certificate {} (key {}) for {}",
                        t.cert.display(),
                        t.key.display(),
                        t.names.join(", ")
                    );
                }
                Some(server)
            }
            None => None,
        };
        let dir = options.state_dir.clone();
        private_dir(&dir)?;
        let (auth, new_token) = (options.auth, options.new_admin_token);
        let (store, tokens, admin_token) =
            tokio::task::spawn_blocking(move || -> Result<_, ControllerError> {
                let file = dir.join(STORE_FILE);
                let store = Store::open(&file)?;
                private_file(&file)?;
                let migrated = store.migrate_token_roles()?;
                if !migrated.is_empty() {
                    info!(
                        "store migrated: {} token(s) from before roles became admin tokens: {}",
                        migrated.len(),
                        migrated.join(", ")
                    );
                }
                if !auth {
                    return Ok((store, None, None));
                }
                let admin = auth::ensure_admin_token(&store, &dir, new_token)?;
                let tokens = Tokens::load(&store)?;
                Ok((store, Some(tokens), Some(admin)))
            })
            .await
            .expect("opening the store does not panic")?;
        let (_, config_revision) = store.revisions()?;
        let listener = listen(options.listen).map_err(|source| ControllerError::Bind {
            addr: options.listen,
            source,
        })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let state = AppState {
            store: Arc::new(store),
            polls: Arc::new(poll_wakes::PollWakes::new(config_revision)),
            engines: Arc::new(Engines::new(options.engine_timeout)),
            shutdown: shutdown_rx,
            metrics: Arc::default(),
            desired: Arc::new(desired::DesiredCache::default()),
        };
        Ok(Controller {
            listener,
            state,
            tokens,
            shutdown,
            admin_token,
            engine_timeout: options.engine_timeout,
            tls,
            limits,
            beside: axum::Router::new(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Creates (or replaces) the engine token named `engine-<engine>`, for the engine
    /// `engine` to use: the token itself, known only to the caller (the all-in-one
    /// process hands it to its engine in memory). `None` when authentication is off.
    pub fn engine_token(&self, engine: &str) -> Result<Option<String>, ControllerError> {
        let Some(tokens) = &self.tokens else {
            return Ok(None);
        };
        let name = format!("engine-{engine}");
        let token = auth::generate().map_err(|e| AuthSetupError::Random(e.to_string()))?;
        let store = &self.state.store;
        store.revoke_token(&name, "replaced by a new token for the all-in-one engine")?;
        let record = store::TokenRecord {
            name,
            created_at: store::now(),
            role: Some(types::Role::Engine),
            engine: Some(engine.to_owned()),
        };
        store.create_token(record, &auth::hash(&token), "all-in-one start")?;
        tokens.reload(store)?;
        Ok(Some(token))
    }

    /// The admin token's file, if authentication is on.
    pub fn admin_token_file(&self) -> Option<&Path> {
        match &self.admin_token {
            Some(AdminToken::Created(p) | AdminToken::Existing(p)) => Some(p),
            None => None,
        }
    }

    /// The SHA-256 fingerprint of the TLS certificate, if the API is served over TLS.
    pub fn tls_fingerprint(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.fingerprint.as_str())
    }

    /// What the API's handlers share (store, engines), for routes served beside it.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves `public` as it is and `authenticated` behind the API's own authorization
    /// (the same middleware and tokens, so every rule on tokens and roles applies to both),
    /// each of its routes with the access `access` declares, on the API's address. Their
    /// paths are matched before the API's and must not be the API's.
    pub fn serve_beside(
        &mut self,
        public: axum::Router,
        authenticated: axum::Router<AppState>,
        access: &'static [auth::RouteAccess],
    ) {
        let authenticated = authenticated
            .route_layer(axum::middleware::from_fn(connections::mark_authenticated))
            .route_layer(axum::middleware::from_fn_with_state(
                auth::AuthState {
                    tokens: self.tokens.clone(),
                    routes: access,
                },
                auth::authorize,
            ))
            .with_state(self.state.clone());
        let beside = std::mem::replace(&mut self.beside, axum::Router::new());
        self.beside = beside.merge(public).merge(authenticated);
    }

    /// Serves until `stop` completes, then finishes the requests in progress (waiting
    /// desired-state polls return at once) and returns, within
    /// [`connections::SHUTDOWN_GRACE`] (connections still open then are dropped).
    pub async fn run(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ControllerError> {
        let addr = self.local_addr();
        match &self.admin_token {
            Some(AdminToken::Created(path)) => info!(
                "created the admin token: it is in {} (send it as \"Authorization: Bearer <token>\"; \
                 the CLI reads it from there)",
                path.display()
            ),
            Some(AdminToken::Existing(path)) if !path.exists() => warn!(
                "the admin token file {} is missing; restart with --new-admin-token to create a new token",
                path.display()
            ),
            Some(AdminToken::Existing(path)) => {
                info!("the admin token is in {}", path.display())
            }
            None => warn!("authentication is OFF: anyone who can reach {addr} can change the configuration"),
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        info!(
            store = %self.state.store.path().display(),
            "controller listening on {scheme}://{addr} (OpenAPI document: /api/v1/openapi.json); \
             at most {} connections, header timeout {:?}, idle timeout {:?}",
            self.limits.max_connections,
            self.limits.header_timeout,
            self.limits.idle_timeout
        );
        if let Some(tls) = &self.tls {
            info!(
                "TLS certificate SHA-256 fingerprint: {} (clients may pin it with --fingerprint)",
                tls.fingerprint
            );
        }

        let sweeper = tokio::spawn(sweep_engines(self.state.clone(), self.engine_timeout));
        let pacer = tokio::spawn({
            let polls = Arc::clone(&self.state.polls);
            async move { polls.pace().await }
        });
        let router = self
            .beside
            .merge(api::router(self.state.clone(), self.tokens));
        let shutdown = self.shutdown;
        connections::serve(
            self.listener,
            router,
            self.tls.map(|t| t.acceptor),
            self.limits,
            async move {
                stop.await;
                info!("stopping: finishing requests in progress");
                let _ = shutdown.send(true);
            },
        )
        .await;
        sweeper.abort();
        pacer.abort();
        Ok(())
    }
}

/// A listener with a backlog of 4,096 (tokio's default is 1,024): a burst of
/// connections beyond the backlog would be dropped by the kernel before the accept loop
/// sees them, and the connection limit could not choose whom to keep.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Creates the state directory 0700, or makes an existing one 0700: it holds the admin
/// token and the store. A directory owned by another user is refused rather than changed.
fn private_dir(dir: &Path) -> Result<(), ControllerError> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let error = |source| ControllerError::StateDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(error)?;
    let meta = std::fs::metadata(dir).map_err(error)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid {
        return Err(ControllerError::Insecure(format!(
            "the state directory {} has mode {mode:o} and belongs to uid {}, not to this \
             process (uid {uid}): others could read the admin token; make it 0700 and owned \
             by the controller's user",
            dir.display(),
            meta.uid()
        )));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(error)?;
    warn!(
        "the state directory {} had mode {mode:o}: made it 0700 (it holds the admin token)",
        dir.display()
    );
    Ok(())
}

/// Makes `file` 0600 (redb creates its file with the process's umask).
fn private_file(file: &Path) -> Result<(), ControllerError> {
    use std::os::unix::fs::PermissionsExt as _;
    let error = |source| ControllerError::StateDir {
        path: file.to_owned(),
        source,
    };
    let mode = std::fs::metadata(file).map_err(error)?.permissions().mode() & 0o777;
    if mode != 0o600 {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).map_err(error)?;
        if mode & 0o077 != 0 {
            warn!("{} had mode {mode:o}: made it 0600", file.display());
        }
    }
    Ok(())
}

/// Marks silent engines disconnected, several times per timeout.
async fn sweep_engines(state: AppState, timeout: Duration) {
    let period = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let events = state.engines.sweep();
        for e in &events {
            info!(subject = %e.subject, "{}: {}", e.state, e.reason);
        }
        if !events.is_empty() {
            let store = Arc::clone(&state.store);
            let recorded = tokio::task::spawn_blocking(move || store.record(events)).await;
            if let Ok(Err(e)) = recorded {
                tracing::error!("recording engine events: {e}");
            }
        }
    }
}

/// Runs the controller until SIGTERM or SIGINT.
pub async fn serve(options: Options) -> Result<(), ControllerError> {
    let controller = Controller::bind(options).await?;
    controller.run(stop_signal()).await
}

/// Completes on SIGTERM or SIGINT.
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop the controller with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
}
