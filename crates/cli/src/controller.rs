//! `ricochet controller`: the controller's API server (store, REST API, tokens).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// Address of the REST API.
    #[arg(long, env = "RICOCHET_LISTEN", default_value = ricochet_controller::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Directory of the store (controller.redb) and the admin token (admin-token).
    #[arg(long, env = "RICOCHET_CONTROLLER_STATE_DIR", default_value = ricochet_controller::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Seconds without a registration, report or poll after which an engine is
    /// disconnected.
    #[arg(long, env = "RICOCHET_ENGINE_TIMEOUT_SECS", default_value_t = ricochet_controller::DEFAULT_ENGINE_TIMEOUT.as_secs())]
    pub engine_timeout_secs: u64,
    /// Replace the admin token with a new one (when its file was lost); the old one stops
    /// working.
    #[arg(long)]
    pub new_admin_token: bool,
    /// Serve without authentication: anyone who reaches --listen can change the
    /// configuration. Only for a loopback address on a trusted host.
    #[arg(long)]
    pub no_auth: bool,
}

pub fn run(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    let mut options = ricochet_controller::Options::new(args.listen, args.state_dir);
    options.auth = !args.no_auth;
    options.new_admin_token = args.new_admin_token;
    options.engine_timeout = Duration::from_secs(args.engine_timeout_secs.max(1));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut controller = ricochet_controller::Controller::bind(options).await?;
        ricochet_console::attach(&mut controller);
        controller.run(ricochet_controller::stop_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}
