//! BIRD 2 in a namespace: the router's BGP daemon (installing what it learns into the
//! router's kernel table, several equal routes merged into one ECMP route) and the daemon
//! beside each service engine, which includes the engine's file.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::netns::Netns;
use crate::process::Process;

/// The router's autonomous system in the test bed.
pub const ROUTER_AS: u32 = 65000;
/// The service engines' autonomous system in the test bed.
pub const ENGINES_AS: u32 = 65001;

/// A running `bird` (killed on drop) and its control socket.
#[derive(Debug)]
pub struct Bird {
    pub process: Process,
    pub socket: PathBuf,
    pub config: PathBuf,
    ns: String,
}

/// A BGP neighbour of the router: an engine's address.
#[derive(Debug, Clone, Copy)]
pub struct Neighbour {
    pub name: &'static str,
    pub ip: IpAddr,
}

impl Bird {
    /// Starts `bird` in `ns` with `config` written to `dir/<name>.conf`, its socket
    /// `dir/<name>.ctl`; waits until it answers.
    pub fn start(ns: &Netns, dir: &Path, name: &str, config: &str) -> Result<Bird> {
        let conf = dir.join(format!("{name}.conf"));
        let socket = dir.join(format!("{name}.ctl"));
        std::fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
        let args = [
            "bird",
            "-f",
            "-c",
            conf.to_str().context("path")?,
            "-s",
            socket.to_str().context("path")?,
        ];
        let mut process = ns.spawn(&args)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(status) = process.try_wait()? {
                anyhow::bail!("bird exited ({status}) at start:\n{}", process.report());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "bird does not answer on {} after 5 s:\n{}",
                socket.display(),
                process.report()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Bird {
            process,
            socket,
            config: conf,
            ns: ns.name().to_owned(),
        })
    }

    /// `birdc -s SOCKET args...` (run from the root namespace: the socket is a file).
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let out = std::process::Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .context("running birdc (install bird2)")?;
        anyhow::ensure!(
            out.status.success(),
            "birdc {} ({}): {}",
            args.join(" "),
            self.ns,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The router's configuration: a session to every neighbour (IPv4 and IPv6 ones), routes
/// learnt from them into the kernel, equal ones merged (ECMP); BFD on the sessions if
/// `bfd_ms` is given.
pub fn router_config(
    router_id: IpAddr,
    local_v4: IpAddr,
    local_v6: IpAddr,
    neighbours: &[Neighbour],
    hold: u16,
    bfd_ms: Option<u32>,
) -> String {
    let mut c = format!(
        "router id {router_id};\nprotocol device {{}}\n\
         protocol kernel kernel4 {{ ipv4 {{ import none; export where source = RTS_BGP; }}; merge paths on; }}\n\
         protocol kernel kernel6 {{ ipv6 {{ import none; export where source = RTS_BGP; }}; merge paths on; }}\n"
    );
    if let Some(ms) = bfd_ms {
        let _ = writeln!(
            c,
            "protocol bfd {{ interface \"*\" {{ min rx interval {ms} ms; min tx interval {ms} ms; multiplier 3; }}; }}"
        );
    }
    for n in neighbours {
        let (family, local) = if n.ip.is_ipv6() {
            ("ipv6", local_v6)
        } else {
            ("ipv4", local_v4)
        };
        let suffix = if n.ip.is_ipv6() { "_v6" } else { "" };
        let _ = writeln!(
            c,
            "protocol bgp {name}{suffix} {{ local {local} as {ROUTER_AS}; neighbor {ip} as {ENGINES_AS}; \
             hold time {hold}; keepalive time {ka}; connect retry time 1; error wait time 1, 5;{bfd} \
             {family} {{ import all; export none; }}; }}",
            name = n.name,
            ip = n.ip,
            ka = (hold / 3).max(1),
            bfd = if bfd_ms.is_some() { " bfd on;" } else { "" },
        );
    }
    c
}

/// An engine host's configuration: the device protocol and the engine's include file
/// (created empty first if missing, as an operator would before BIRD's first start).
pub fn engine_config(router_id: IpAddr, include: &Path) -> Result<String> {
    if !include.exists() {
        std::fs::write(include, "").with_context(|| format!("creating {}", include.display()))?;
    }
    Ok(format!(
        "router id {router_id};\nprotocol device {{}}\ninclude \"{}\";\n",
        include.display()
    ))
}
