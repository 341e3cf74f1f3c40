//! `ricochet`: the load balancer's command line.
//!
//! - `ricochet engine`: the service engine daemon (XDP data plane + live config from a
//!   file or a controller).
//! - `ricochet all-in-one`: the controller and an engine following it, in one process.
//! - `ricochet check-config`: validates a configuration file.
//! - `ricochet status`: virtual services, pools, servers and counters.
//! - `ricochet detach`: removes the data plane from an interface.
//! - `ricochet server ...`: makes a pool server DSR-ready, checks it, undoes it.
//! - `ricochet controller`: the controller (store, REST API, tokens).
//! - `ricochet apply/get/create/replace/delete/events`: the controller's clients.
//! - `ricochet generate man|completion`: man pages and shell completions.

/// `println!` for lines that hold text from the controller (names, messages, reasons):
/// terminal control characters are escaped ([`ricochet_api::text::terminal_safe`]).
macro_rules! outln {
    ($($arg:tt)*) => {
        println!("{}", ricochet_api::text::terminal_safe(&format!($($arg)*)))
    };
}

mod all_in_one;
mod api_client;
mod controller;
mod daemon;
mod generate;
mod objects;
mod server;
mod status;
mod tokens;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ricochet",
    version,
    about = "L4 load balancer with Direct Server Return on XDP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service engine: load and attach the XDP data plane, apply the
    /// configuration and follow its changes — from a file (--config; on SIGHUP or when
    /// the file changes) or from a controller (--controller URL).
    Engine(daemon::EngineArgs),
    /// Run the controller and an engine following it, in one process (no external
    /// service needed).
    AllInOne(all_in_one::AllInOneArgs),
    /// Validate a configuration file and show what it compiles to.
    CheckConfig {
        /// The configuration file (YAML).
        #[arg(env = "RICOCHET_CONFIG")]
        file: PathBuf,
    },
    /// Show virtual services, pools, servers and their counters (like `ipvsadm -L -n --stats`).
    Status(status::StatusArgs),
    /// Detach the data plane from an interface and remove its pinned maps.
    Detach {
        /// The interface the engine was attached to.
        #[arg(long, env = "RICOCHET_INTERFACE")]
        interface: String,
        #[arg(long, env = "RICOCHET_PIN_DIR", default_value = daemon::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        #[arg(long, env = "RICOCHET_STATE_DIR", default_value = daemon::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Server side of DSR: VIPs on lo, decapsulation, rp_filter.
    #[command(subcommand)]
    Server(server::ServerCommand),
    /// Run the controller: the configuration store and its REST API (until SIGTERM).
    Controller(controller::ControllerArgs),
    /// Apply a configuration file to the controller: shows what changes, then applies it
    /// (objects absent from the file are deleted).
    Apply(objects::ApplyArgs),
    /// List objects of a kind, or show one.
    Get(objects::GetArgs),
    /// Create one object from a YAML or JSON file.
    Create(objects::FileArgs),
    /// Replace one object (named in the file) with the file's content.
    Replace(objects::FileArgs),
    /// Delete one object.
    Delete(objects::DeleteArgs),
    /// Show state changes: configuration, engines, servers.
    Events(objects::EventsArgs),
    /// Write man pages or print shell completions (the package ships them).
    #[command(subcommand)]
    Generate(generate::GenerateCommand),
    /// Manage the controller's API tokens and their roles (admin token needed).
    #[command(subcommand)]
    Token(tokens::TokenCommand),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RICOCHET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if !cli.command.is_daemon() {
        end_quietly_on_closed_stdout();
    }
    let result = match cli.command {
        Command::Engine(args) => daemon::run(args),
        Command::AllInOne(args) => all_in_one::run(args),
        Command::CheckConfig { file } => check_config(&file),
        Command::Status(args) => status::run(args),
        Command::Server(cmd) => server::run(cmd),
        Command::Controller(args) => controller::run(args),
        Command::Apply(args) => objects::apply(args),
        Command::Get(args) => objects::get(args),
        Command::Create(args) => objects::create(args),
        Command::Replace(args) => objects::replace(args),
        Command::Delete(args) => objects::delete(args),
        Command::Events(args) => objects::events(args),
        Command::Generate(what) => generate::run(what, Cli::command()),
        Command::Token(cmd) => tokens::run(cmd),
        Command::Detach {
            interface,
            pin_dir,
            state_dir,
        } => detach(&interface, &pin_dir, &state_dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Errors quote the controller's answers.
            eprintln!(
                "error: {}",
                ricochet_api::text::terminal_safe(&format!("{e:#}"))
            );
            ExitCode::FAILURE
        }
    }
}

impl Command {
    /// The long-running services: their output is logs, and a closed pipe must not end them.
    fn is_daemon(&self) -> bool {
        matches!(
            self,
            Command::Engine(_) | Command::AllInOne(_) | Command::Controller(_)
        )
    }
}

/// Lets SIGPIPE end the process, as it ends `cat` or `ls`: `ricochet status | head` then
/// stops quietly once `head` has its lines. Rust ignores SIGPIPE, so without this every
/// `println!` after the reader left panics with "failed printing to stdout: Broken pipe".
/// Sockets are unaffected (Rust sends with MSG_NOSIGNAL); no command writes to a child's
/// stdin.
fn end_quietly_on_closed_stdout() {
    // SAFETY: setting a signal's disposition to its default has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn check_config(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = ricochet_config::Config::load(file)?;
    match config.compile() {
        Ok(desired) => {
            println!("{}: valid", file.display());
            for s in &desired.services {
                let ports = status::ports(&s.ports, "all ports");
                println!(
                    "  virtual service {}: {} {} {} -> pool {} in {}",
                    s.name, s.protocol, s.vip, ports, s.pool, s.encapsulation
                );
            }
            for p in &desired.pools {
                let servers: Vec<String> = p
                    .servers
                    .iter()
                    .map(|s| format!("{}{}", s.ip, if s.enabled { "" } else { " (disabled)" }))
                    .collect();
                println!(
                    "  pool {} (table {}): {}",
                    p.name,
                    p.table_size,
                    servers.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            // The errors' own text starts with "invalid configuration".
            eprintln!("{}: {errors}", file.display());
            Ok(ExitCode::from(2))
        }
    }
}

fn detach(
    iface: &str,
    pin_dir: &std::path::Path,
    state_dir: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    // Withdraw first: routes left announced would send the VIPs' traffic to a host that
    // no longer forwards it.
    if let Ok(st) = ricochet_daemon::state::read(state_dir) {
        if let Some(files) = st.bgp_include {
            match ricochet_daemon::bgp::withdraw_through(&files.socket, &files.include_file) {
                Ok(()) => println!(
                    "withdrew the VIPs from BGP ({} emptied, BIRD reconfigured)",
                    files.include_file.display()
                ),
                Err(e) => eprintln!(
                    "WARNING: could not withdraw the VIPs from BGP: {e:#}; stop BIRD or empty {} \
                     and run `birdc configure`",
                    files.include_file.display()
                ),
            }
        }
    }
    let removed = ricochet_dataplane::kernel::detach(pin_dir, Some(iface))?;
    for p in &removed {
        println!("removed {}", p.display());
    }
    let _ = std::fs::remove_file(daemon::state_file(state_dir));
    println!("the XDP program is detached from {iface} once no engine process holds it");
    Ok(ExitCode::SUCCESS)
}
