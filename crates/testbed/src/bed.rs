//! The seed's scenario ready for a load balancer: the topology, both servers made DSR-ready by
//! `ricochet server setup` and serving with nginx, a working directory and the bpffs pin
//! directories, all undone and removed on drop.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::names::TempDir;
use crate::process::Process;
use crate::servers::{start_dns, start_nginx};
use crate::topology::{Host, Topology};

/// The seed's network with web01 and web02 set up for Direct Server Return by the
/// `ricochet` binary given to [`SeedBed::new`] and serving HTTP with nginx ("web01",
/// "web02"), for the end-to-end tests and the demo.
///
/// Dropping it, also on panic or on an error half-way through [`SeedBed::new`], stops the
/// servers, runs `ricochet server undo` on both servers (its undo record lives in `/run`,
/// outside the namespaces), removes the namespaces, the pin directories of se1, se2, web01 and
/// web02, and the working directory.
#[derive(Debug)]
pub struct SeedBed {
    /// nginx on web01 and web02, in that order (stop or replace one to take a server down).
    pub nginx: Vec<Process>,
    /// dnsmasq on web01 and web02 once [`SeedBed::start_dns`] ran.
    pub dns: Vec<Process>,
    /// What `ricochet server setup` printed on web01 and web02, in that order.
    pub setup_output: Vec<String>,
    /// The network; dropped before the pins go.
    pub topo: Topology,
    _pins: Pins,
    dir: TempDir,
    ricochet: String,
    /// The VIPs the servers were set up for.
    vips: Vec<String>,
    undone: bool,
}

/// Removes bpffs pin directories when dropped.
#[derive(Debug)]
struct Pins(Vec<PathBuf>);

impl Drop for Pins {
    fn drop(&mut self) {
        for pin in &self.0 {
            let _ = std::fs::remove_dir_all(pin);
        }
    }
}

impl SeedBed {
    /// Builds the seed's topology and runs `ricochet server setup --vip <vip>...` on web01
    /// and web02 (pins in [`SeedBed::pin_dir`]), then starts nginx on both. `tag` names the
    /// working directory.
    pub fn new(ricochet: &str, tag: &str, vips: &[IpAddr]) -> Result<SeedBed> {
        crate::require_root()?;
        let topo = Topology::seed().context("building the seed topology")?;
        let pins = ["se1", "se2", "web01", "web02"]
            .map(|host| pin_dir(&topo, host))
            .to_vec();
        let mut bed = SeedBed {
            nginx: Vec::new(),
            dns: Vec::new(),
            setup_output: Vec::new(),
            topo,
            _pins: Pins(pins),
            dir: TempDir::new(tag)?,
            ricochet: ricochet.to_owned(),
            vips: vips.iter().map(IpAddr::to_string).collect(),
            undone: false,
        };
        bed.setup_output = bed.setup_servers(&[])?;
        for host in [&bed.topo.web01, &bed.topo.web02] {
            bed.nginx.push(start_nginx(&host.ns, host.name)?);
        }
        Ok(bed)
    }

    /// Runs `ricochet server setup` for the bed's VIPs on web01 and web02 (again), with
    /// `extra` arguments (`--gue-port 7000`, say); what it printed on each.
    pub fn setup_servers(&self, extra: &[&str]) -> Result<Vec<String>> {
        let mut printed = Vec::new();
        for host in [&self.topo.web01, &self.topo.web02] {
            let pin = self.pin_dir(host.name);
            let mut args = vec![self.ricochet.as_str(), "server", "setup"];
            for vip in &self.vips {
                args.extend(["--vip", vip]);
            }
            args.extend(["--interface", host.iface, "--pin-dir", path_str(&pin)?]);
            args.extend(extra);
            printed.push(run_ok(host, &args)?);
        }
        Ok(printed)
    }

    /// Starts dnsmasq on web01 and web02, answering [`DNS_WHOAMI`](crate::DNS_WHOAMI) with
    /// the server's name.
    pub fn start_dns(&mut self) -> Result<()> {
        for host in [&self.topo.web01, &self.topo.web02] {
            self.dns.push(start_dns(&host.ns, host.name)?);
        }
        Ok(())
    }

    /// The bpffs pin directory of a host of the topology (`se1`, `se2`, `web01`, `web02`),
    /// removed on drop for those four.
    pub fn pin_dir(&self, host: &str) -> PathBuf {
        pin_dir(&self.topo, host)
    }

    /// The working directory (configurations, state directories), removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `name` in the working directory, as a string for a command line.
    pub fn path(&self, name: &str) -> String {
        self.dir().join(name).to_string_lossy().into_owned()
    }

    /// Runs `ricochet server undo` on web01 and web02 (drop does it too, ignoring errors);
    /// the first error, after trying both.
    pub fn undo_servers(&mut self) -> Result<()> {
        self.undone = true;
        let mut result = Ok(());
        for host in [&self.topo.web01, &self.topo.web02] {
            let pin = pin_dir(&self.topo, host.name);
            let undo = path_str(&pin).and_then(|pin| {
                run_ok(
                    host,
                    &[
                        &self.ricochet,
                        "server",
                        "undo",
                        "--interface",
                        host.iface,
                        "--pin-dir",
                        pin,
                    ],
                )
            });
            if let Err(error) = undo {
                if result.is_ok() {
                    result = Err(error);
                }
            }
        }
        result
    }
}

impl Drop for SeedBed {
    fn drop(&mut self) {
        self.nginx.clear();
        self.dns.clear();
        if !self.undone {
            // On a server whose setup never ran, undo finds nothing to undo.
            let _ = self.undo_servers();
        }
    }
}

fn pin_dir(topo: &Topology, host: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/{}-{host}", topo.prefix()))
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// Runs `args` in the host's namespace; its stdout, or an error with its stderr.
fn run_ok(host: &Host, args: &[&str]) -> Result<String> {
    let out = host.ns.output(args)?;
    anyhow::ensure!(
        out.status.success(),
        "`{}` on {} failed: {}",
        args.join(" "),
        host.name,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
