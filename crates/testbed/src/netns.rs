//! Network namespaces: create, run commands and code inside, clean up.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd::{checked, describe, output};
use crate::names::{instance_prefix, kill_netns_processes, netns_pids, sweep_stale_once};
use crate::process::Process;
use crate::require_root;

/// A named network namespace (`ip netns`), deleted on drop together with every process in it.
///
/// Commands run inside with [`Netns::exec`] / [`Netns::spawn`] (through `ip netns exec`), and
/// Rust code with [`Netns::run`]. The loopback interface is up and IPv6 duplicate address
/// detection is off, so addresses are usable as soon as they are added.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `rc<pid>-<n>-<role>` (unique in this process).
    ///
    /// Fails with a message saying so when not run as root.
    pub fn new(role: &str) -> Result<Self> {
        Self::create(format!("{}{role}", instance_prefix()))
    }

    /// Creates a namespace with exactly this name (which should start with
    /// [`run_prefix`](crate::run_prefix), so that the stale-object sweep knows its owner).
    pub(crate) fn create(name: String) -> Result<Self> {
        require_root()?;
        sweep_stale_once();
        checked(Command::new("ip").args(["netns", "add", &name]))
            .with_context(|| format!("creating network namespace {name}"))?;
        // From here on, drop deletes the namespace even if the set-up below fails.
        let netns = Self { name };
        netns
            .set_sysctls(&[
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
            ])
            .and_then(|()| netns.ip(&["link", "set", "lo", "up"]).map(drop))
            .with_context(|| format!("setting up network namespace {}", netns.name))?;
        Ok(netns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind mount, `/run/netns/<name>` (for `setns` or `nsenter --net=`).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n <name> <args>`; fails with the command's stderr on a non-zero exit.
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        checked(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A `Command` running `program` inside the namespace, for callers that need stdin,
    /// environment or other settings.
    ///
    /// Only the network namespace is entered (`nsenter --net`), not a private mount
    /// namespace as `ip netns exec` makes: that one remounts `/sys`, which hides the
    /// host's bpffs, so pins made by a process would vanish when it exits. Sharing the
    /// mount namespace is how the engine and the servers run on real hosts.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program.as_ref());
        command
    }

    fn command_for(&self, args: &[&str]) -> Result<Command> {
        let (program, rest) = args
            .split_first()
            .ok_or_else(|| anyhow!("empty command for namespace {}", self.name))?;
        let mut command = self.command(program);
        command.args(rest);
        Ok(command)
    }

    /// Runs a command inside the namespace to completion; fails on a non-zero exit with an
    /// error that names the namespace and the command and quotes its stderr and stdout.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        checked(&mut self.command_for(args)?)
    }

    /// Runs a command inside the namespace and returns its output whatever its exit status
    /// (for tests that expect a failure).
    pub fn output(&self, args: &[&str]) -> Result<Output> {
        output(&mut self.command_for(args)?)
    }

    /// Starts a long-running command inside the namespace, in its own process group, with
    /// stdout and stderr captured to files. The returned [`Process`] kills the group on drop.
    pub fn spawn(&self, args: &[&str]) -> Result<Process> {
        Process::spawn(self, self.command_for(args)?, None)
    }

    /// Runs `f` on a fresh thread that has joined this namespace, and returns its result.
    ///
    /// Sockets created by `f` belong to the namespace, also after the thread ends. Only the
    /// network namespace changes: `/sys` still shows the caller's. A panic in `f` is
    /// propagated to the caller.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let file = File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        let name = &self.name;
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || -> Result<T> {
                // SAFETY: setns(2) has no memory-safety preconditions; the descriptor is a valid
                // open namespace file for the duration of the call, and CLONE_NEWNET moves only
                // this thread, which ends when `f` returns.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("setns into network namespace {name}"));
                }
                Ok(f())
            });
            match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Sets sysctls of the namespace, e.g. `("net.ipv4.ip_forward", "1")` (written to
    /// `/proc/sys` from a thread inside the namespace).
    pub fn set_sysctls(&self, settings: &[(&str, &str)]) -> Result<()> {
        self.run(|| {
            for (key, value) in settings {
                let path = sysctl_path(key);
                std::fs::write(&path, value).with_context(|| {
                    format!("setting sysctl {key}={value} ({})", path.display())
                })?;
            }
            anyhow::Ok(())
        })?
        .with_context(|| format!("in network namespace {}", self.name))
    }

    /// Reads a sysctl of the namespace, e.g. `net.ipv4.conf.all.rp_filter`.
    pub fn sysctl(&self, key: &str) -> Result<String> {
        self.run(|| {
            let path = sysctl_path(key);
            std::fs::read_to_string(&path)
                .map(|value| value.trim().to_owned())
                .with_context(|| format!("reading sysctl {key} ({})", path.display()))
        })?
        .with_context(|| format!("in network namespace {}", self.name))
    }

    /// The process ids running in the namespace (as `ip netns pids` prints them).
    pub fn pids(&self) -> Result<Vec<u32>> {
        netns_pids(&self.name)
    }

    /// The MAC address of an interface in the namespace.
    pub fn mac(&self, iface: &str) -> Result<[u8; 6]> {
        let shown = self.ip(&["-o", "link", "show", "dev", iface])?;
        let text = String::from_utf8_lossy(&shown.stdout);
        let mac = text
            .split_whitespace()
            .skip_while(|word| *word != "link/ether")
            .nth(1)
            .ok_or_else(|| anyhow!("no link/ether address for {iface} in {}", self.name))?;
        crate::parse_mac(mac)
    }

    /// Turns an interface offload on or off with `ethtool -K <iface> <feature> on|off`.
    pub fn ethtool_feature(&self, iface: &str, feature: &str, on: bool) -> Result<()> {
        self.exec(&[
            "ethtool",
            "-K",
            iface,
            feature,
            if on { "on" } else { "off" },
        ])
        .map(drop)
    }

    fn delete(&self) -> Result<()> {
        kill_netns_processes(&self.name)?;
        let mut del = Command::new("ip");
        del.args(["netns", "del", &self.name]);
        let result = output(&mut del)?;
        if !result.status.success() {
            bail!(
                "`{}` failed: {}",
                describe(&del),
                String::from_utf8_lossy(&result.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(error) = self.delete() {
            eprintln!(
                "ricochet-testbed: cleaning up namespace {}: {error:#}",
                self.name
            );
        }
    }
}

fn sysctl_path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}
