//! `ricochet all-in-one`: the controller and an engine following it, in one process —
//! the embedded default, with no external service.
//!
//! The controller serves on a tokio runtime in its own thread; the engine runs in the
//! main thread exactly as `ricochet engine --controller` does, through the same HTTP API
//! (so the all-in-one exercises what a multi-host installation does, and other engines
//! can register with the same controller). SIGTERM/SIGINT stop the engine, then the
//! controller, which ends its waiting polls at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use tracing::info;

use ricochet_daemon::source::controller::{engine_name, hostname};
use ricochet_daemon::{Control, ControllerOptions, Options, Source};

use crate::daemon::{self, DataPlaneArgs};

#[derive(Args, Debug)]
pub struct AllInOneArgs {
    /// Address of the controller's REST API.
    #[arg(long, env = "RICOCHET_LISTEN", default_value = ricochet_controller::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Directory of the controller's store and admin token.
    #[arg(long, env = "RICOCHET_CONTROLLER_STATE_DIR", default_value = ricochet_controller::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Directory of the engine's state file (read by `ricochet status`) and of the last
    /// configuration it applied.
    #[arg(long, env = "RICOCHET_STATE_DIR", default_value = daemon::DEFAULT_STATE_DIR)]
    pub engine_state_dir: PathBuf,
    /// The engine's name at the controller (default: the host name).
    #[arg(long, env = "RICOCHET_ENGINE_NAME")]
    pub name: Option<String>,
    /// Allow plain HTTP on an address other than loopback (tokens cross the network in
    /// clear).
    #[arg(long, env = "RICOCHET_ALLOW_PLAIN_HTTP")]
    pub allow_plain_http: bool,
    #[command(flatten)]
    pub data_plane: DataPlaneArgs,
    /// The engine's metrics (the controller's are at its own address, /metrics).
    #[command(flatten)]
    pub metrics: daemon::MetricsArgs,
    #[command(flatten)]
    pub bgp: daemon::BgpArgs,
}

pub fn run(args: AllInOneArgs) -> anyhow::Result<ExitCode> {
    let name = engine_name(args.name.unwrap_or_else(hostname))?;
    let metrics = args.metrics.options()?;
    // Before the runtime starts: the engine's handlers decide when everything stops.
    let control = Control::from_signals()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut options = ricochet_controller::Options::new(args.listen, args.state_dir.clone());
    options.allow_plain_http = args.allow_plain_http;
    let mut controller = runtime.block_on(ricochet_controller::Controller::bind(options))?;
    ricochet_console::attach(&mut controller);
    let bound = controller.local_addr();
    // The engine reaches the controller on loopback when it listens on every address.
    let reach = match bound.ip() {
        IpAddr::V4(a) if a.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), bound.port())
        }
        IpAddr::V6(a) if a.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), bound.port())
        }
        _ => bound,
    };
    let token_file = controller
        .admin_token_file()
        .map(PathBuf::from)
        .unwrap_or_else(|| args.state_dir.join("admin-token"));
    info!(
        "all-in-one: controller on http://{bound}, admin token in {} (the CLI's default \
         --token-file when the state directory is the default); engine {name} follows it",
        token_file.display()
    );
    // The engine gets its own token, which can do only what an engine does, for its name.
    let engine_token = controller.engine_token(&name)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::Builder::new()
        .name("controller".into())
        .spawn(move || {
            runtime.block_on(controller.run(async {
                let _ = stop_rx.await;
            }))
        })
        .context("starting the controller's thread")?;

    let engine = ricochet_daemon::run(
        Options {
            data_plane: args.data_plane.options(),
            bgp: args.bgp.options(&args.engine_state_dir),
            state_dir: args.engine_state_dir,
            source: Source::Controller(ControllerOptions {
                url: format!("http://{reach}"),
                token: engine_token,
                token_file,
                name,
                tls: Default::default(),
            }),
            metrics,
            name: None,
        },
        &control,
    );
    let _ = stop_tx.send(());
    let served = server
        .join()
        .map_err(|_| anyhow::anyhow!("the controller's thread panicked"))?;
    engine?;
    served?;
    Ok(ExitCode::SUCCESS)
}
