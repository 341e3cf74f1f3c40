//! `ricochet server ...`: the server side of DSR (see `ricochet-server`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use ricochet_server::{DecapMode, ServerSpec};

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// A VIP this server answers for (repeat for several; IPv4 and IPv6).
    #[arg(long = "vip", env = "RICOCHET_VIPS", value_delimiter = ',')]
    pub vips: Vec<IpAddr>,
    /// The interface encapsulated packets arrive on; default: the default route's.
    #[arg(long, env = "RICOCHET_INTERFACE")]
    pub interface: Option<String>,
    /// auto (the kernel's tunl0/ip6tnl0 when the modules exist, else eBPF), kernel, or ebpf.
    #[arg(long, env = "RICOCHET_DECAP", default_value = "auto")]
    pub decap: DecapMode,
    /// bpffs directory for the decapsulator's pins.
    #[arg(long, env = "RICOCHET_SERVER_PIN_DIR", default_value = ricochet_server::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// A UDP port the eBPF decapsulator takes GUE on (repeat for several), as a network
    /// profile's `gue_port`; UDP to it that is not GUE to a VIP passes as it is.
    #[arg(long = "gue-port", env = "RICOCHET_GUE_PORTS", value_delimiter = ',',
          default_values_t = [ricochet_server::DEFAULT_GUE_PORT],
          value_parser = clap::value_parser!(u16).range(1..))]
    pub gue_ports: Vec<u16>,
}

impl ServerArgs {
    fn spec(&self) -> ServerSpec {
        ServerSpec {
            vips: self.vips.clone(),
            interface: self.interface.clone(),
            decap: self.decap,
            pin_dir: self.pin_dir.clone(),
            gue_ports: self.gue_ports.clone(),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// Make this host DSR-ready: VIPs on lo, decapsulation, rp_filter relaxed (idempotent).
    Setup(ServerArgs),
    /// List what this host lacks for DSR, with the fix for each; exit 1 on a problem.
    Check(ServerArgs),
    /// Undo what setup did (restores sysctls, removes VIPs and the decapsulator).
    Undo(ServerArgs),
    /// Print the equivalent netplan and sysctl.conf lines (the seed's way).
    Netplan(ServerArgs),
}

pub fn run(cmd: ServerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ServerCommand::Setup(a) => {
            let report = ricochet_server::setup(&a.spec())?;
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        ServerCommand::Check(a) => {
            let report = ricochet_server::check(&a.spec())?;
            print!("{report}");
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ServerCommand::Undo(a) => {
            ricochet_server::undo(&a.spec())?;
            println!("undone");
            Ok(ExitCode::SUCCESS)
        }
        ServerCommand::Netplan(a) => {
            let spec = a.spec();
            let addrs = match &spec.interface {
                Some(i) => ricochet_server::server_addresses(i)?,
                None => Vec::new(),
            };
            print!("{}", ricochet_server::netplan_and_sysctl(&spec, &addrs));
            Ok(ExitCode::SUCCESS)
        }
    }
}
