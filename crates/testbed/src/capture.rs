//! Packet captures with tcpdump, read back as text for assertions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cmd::checked;
use crate::names::TempDir;
use crate::netns::Netns;
use crate::process::Process;

/// A running `tcpdump` on one interface of a namespace, writing a pcap file.
///
/// Dropping it without [`Capture::stop`] kills tcpdump and deletes the file.
#[derive(Debug)]
pub struct Capture {
    process: Process,
    pcap: Pcap,
}

/// How long [`Capture::stop`] lets packets already sent reach tcpdump before stopping it.
const SETTLE: Duration = Duration::from_millis(100);

impl Capture {
    /// Starts `tcpdump -i <iface> -U --immediate-mode -w <file> <bpf_filter>` in `ns` and waits
    /// until it says it is listening. `bpf_filter` is a pcap filter expression such as
    /// `"tcp port 80"` or `"ip proto 4"`; an empty one captures everything.
    pub fn start(ns: &Netns, iface: &str, bpf_filter: &str) -> Result<Self> {
        let dir = TempDir::new("pcap")?;
        let path = dir.path().join(format!("{}-{iface}.pcap", ns.name()));
        let mut command = ns.command("tcpdump");
        command
            .args([
                "-i",
                iface,
                "-n",
                "-U",
                "--immediate-mode",
                "-Z",
                "root",
                "-w",
            ])
            .arg(&path);
        if !bpf_filter.trim().is_empty() {
            command.arg(bpf_filter);
        }
        let mut process = Process::spawn(ns, command, None)?;
        process
            .wait_for_output("listening on")
            .with_context(|| format!("starting a capture on {iface} in {}", ns.name()))?;
        Ok(Self {
            process,
            pcap: Pcap { path, _dir: dir },
        })
    }

    /// Stops tcpdump (after a short pause, so packets already sent are written) and returns
    /// the capture file.
    pub fn stop(mut self) -> Result<Pcap> {
        std::thread::sleep(SETTLE);
        self.process.interrupt()?;
        if self.process.wait_timeout(Duration::from_secs(5))?.is_none() {
            anyhow::bail!("tcpdump did not stop on SIGINT: {}", self.process.report());
        }
        Ok(self.pcap)
    }
}

/// A finished capture file, deleted on drop (copy it elsewhere with [`Pcap::persist`] to keep
/// it, e.g. when a test fails).
#[derive(Debug)]
pub struct Pcap {
    path: PathBuf,
    _dir: TempDir,
}

impl Pcap {
    /// The pcap file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The packets as `tcpdump -nn -e -r` prints them: one line per packet with MAC
    /// addresses, e.g. `... ethertype IPv4 (0x0800), length 134: 192.168.33.7 > 192.168.33.10:
    /// 192.168.11.2.50668 > 192.168.35.241.80: Flags [P.] ...`.
    pub fn lines(&self) -> Result<Vec<String>> {
        self.lines_with(&["-nn", "-e"])
    }

    /// The packets as `tcpdump <flags> -r <file>` prints them (e.g. `-v` for IP header fields,
    /// `-vv` to verify checksums; verbose output can take several lines per packet).
    pub fn lines_with(&self, flags: &[&str]) -> Result<Vec<String>> {
        // Reading a file needs no network, so tcpdump runs where the caller does.
        let output = checked(
            Command::new("tcpdump")
                .args(flags)
                .arg("-r")
                .arg(&self.path),
        )?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// Copies the file to `dest` (to keep it after the test).
    pub fn persist(&self, dest: &Path) -> Result<()> {
        std::fs::copy(&self.path, dest)
            .map(drop)
            .with_context(|| format!("copying {} to {}", self.path.display(), dest.display()))
    }
}
