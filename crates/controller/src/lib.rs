//! Ricochet's controller: the operator's configuration (VMware Avi's object model, the
//! types of `ricochet_config`) in an embedded transactional store, behind an authenticated
//! JSON REST API that the `ricochet` CLI and the service engines use.
//!
//! - [`store`]: redb tables, one write transaction per change, a global revision, events.
//! - [`api`]: the routes under `/api/v1`, the OpenAPI document, JSON errors.
//! - [`auth`]: bearer tokens (SHA-256 stored), the admin token created on first start.
//! - [`engines`]: live state of service engines (connection, last report).
//! - [`status`]: virtual services up, degraded or down from their servers' health.
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
pub mod engines;
pub mod error;
pub mod extract;
pub mod status;
pub mod store;

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
use crate::engines::Engines;
use crate::store::{Store, StoreError, STORE_FILE};

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
    /// Serving failed.
    #[error("serving the API: {0}")]
    Serve(std::io::Error),
}

/// A controller with its store open and its address bound, not serving yet.
pub struct Controller {
    listener: tokio::net::TcpListener,
    state: AppState,
    tokens: Option<Tokens>,
    shutdown: watch::Sender<bool>,
    admin_token: Option<AdminToken>,
    engine_timeout: Duration,
    /// Routes served beside the API (the web console's), see [`Controller::serve_beside`].
    beside: axum::Router,
}

impl Controller {
    /// Opens the store (creating the state directory and, on first start, the admin
    /// token) and binds the address.
    pub async fn bind(options: Options) -> Result<Controller, ControllerError> {
        let dir = options.state_dir.clone();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| ControllerError::StateDir {
                path: dir.clone(),
                source,
            })?;
        let (auth, new_token) = (options.auth, options.new_admin_token);
        let (store, tokens, admin_token) =
            tokio::task::spawn_blocking(move || -> Result<_, ControllerError> {
                let store = Store::open(&dir.join(STORE_FILE))?;
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
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|source| ControllerError::Bind {
                addr: options.listen,
                source,
            })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let state = AppState {
            store: Arc::new(store),
            config_revision: Arc::new(watch::channel(config_revision).0),
            engines: Arc::new(Engines::new(options.engine_timeout)),
            shutdown: shutdown_rx,
        };
        Ok(Controller {
            listener,
            state,
            tokens,
            shutdown,
            admin_token,
            engine_timeout: options.engine_timeout,
            beside: axum::Router::new(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The admin token's file, if authentication is on.
    pub fn admin_token_file(&self) -> Option<&Path> {
        match &self.admin_token {
            Some(AdminToken::Created(p) | AdminToken::Existing(p)) => Some(p),
            None => None,
        }
    }

    /// What the API's handlers share (store, engines), for routes served beside it.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves `public` as it is and `authenticated` behind the API's own token check (the
    /// same middleware, so every rule on tokens applies to both) on the API's address. Their
    /// paths are matched before the API's and must not be the API's.
    pub fn serve_beside(&mut self, public: axum::Router, authenticated: axum::Router<AppState>) {
        let authenticated = authenticated.with_state(self.state.clone()).layer(
            axum::middleware::from_fn_with_state(self.tokens.clone(), auth::require_token),
        );
        let beside = std::mem::replace(&mut self.beside, axum::Router::new());
        self.beside = beside.merge(public).merge(authenticated);
    }

    /// Serves until `stop` completes, then finishes the requests in progress (waiting
    /// desired-state polls return at once) and returns.
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
        info!(
            store = %self.state.store.path().display(),
            "controller listening on http://{addr} (OpenAPI document: /api/v1/openapi.json)"
        );

        let sweeper = tokio::spawn(sweep_engines(self.state.clone(), self.engine_timeout));
        let router = self
            .beside
            .merge(api::router(self.state.clone(), self.tokens));
        let shutdown = self.shutdown;
        let served = axum::serve(self.listener, router)
            .with_graceful_shutdown(async move {
                stop.await;
                info!("stopping: finishing requests in progress");
                let _ = shutdown.send(true);
            })
            .await;
        sweeper.abort();
        served.map_err(ControllerError::Serve)
    }
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
