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
    /// Serve the API over TLS with this PEM certificate (chain); needs --tls-key.
    #[arg(long, env = "RICOCHET_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "RICOCHET_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a self-signed certificate, generated on first start if --tls-cert
    /// and --tls-key do not exist (default paths: tls-cert.pem and tls-key.pem in
    /// --state-dir). Clients pin its SHA-256 fingerprint, which the controller logs.
    #[arg(long, env = "RICOCHET_TLS_SELF_SIGNED")]
    pub tls_self_signed: bool,
    /// Names (DNS or IP) a generated certificate is valid for, besides localhost,
    /// 127.0.0.1, ::1 and the --listen address.
    #[arg(long = "tls-name", env = "RICOCHET_TLS_NAMES", value_delimiter = ',')]
    pub tls_names: Vec<String>,
    /// Allow plain HTTP on an address other than loopback (tokens cross the network in
    /// clear).
    #[arg(long, env = "RICOCHET_ALLOW_PLAIN_HTTP")]
    pub allow_plain_http: bool,
    /// Connections open at once; at the limit, a new connection replaces the oldest
    /// one that has not authenticated.
    #[arg(long, env = "RICOCHET_MAX_CONNECTIONS", default_value_t = ricochet_controller::connections::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
}

pub fn run(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    let mut options = ricochet_controller::Options::new(args.listen, args.state_dir);
    options.auth = !args.no_auth;
    options.new_admin_token = args.new_admin_token;
    options.engine_timeout = Duration::from_secs(args.engine_timeout_secs.max(1));
    options.allow_plain_http = args.allow_plain_http;
    options.limits.max_connections = args.max_connections.max(1);
    if args.tls_cert.is_some() || args.tls_self_signed {
        let cert = args
            .tls_cert
            .unwrap_or_else(|| options.state_dir.join("tls-cert.pem"));
        let key = args
            .tls_key
            .unwrap_or_else(|| options.state_dir.join("tls-key.pem"));
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
        if !args.listen.ip().is_unspecified() {
            names.push(args.listen.ip().to_string());
        }
        for name in args.tls_names {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        options.tls = Some(ricochet_controller::tls::TlsOptions {
            cert,
            key,
            generate: args.tls_self_signed,
            names,
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut controller = ricochet_controller::Controller::bind(options).await?;
        ricochet_console::attach(&mut controller);
        controller.run(ricochet_controller::stop_signal()).await
    })?;
    // A store write still running on a blocking thread is waited for; nothing else.
    runtime.shutdown_timeout(Duration::from_millis(500));
    Ok(ExitCode::SUCCESS)
}
