//! Long-running processes inside a namespace (servers, captures, the load balancer).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cmd::{describe, format_streams, poll_until};
use crate::names::{process_alive, TempDir, TERM_GRACE};
use crate::netns::Netns;

/// How long the `wait_for_*` methods wait for a process to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

/// A process started in a namespace by [`Netns::spawn`], running in its own process group
/// with stdout and stderr captured to files.
///
/// Drop kills the whole group (a server's workers too) with `SIGKILL` and reaps it; the
/// namespace's own drop also kills everything left inside it.
#[derive(Debug)]
pub struct Process {
    child: Child,
    reaped: bool,
    command_line: String,
    netns: String,
    dir: TempDir,
}

impl Process {
    /// Spawns `command` (already wrapped in `ip netns exec`) with its logs in `dir`, or in a
    /// fresh temporary directory.
    pub(crate) fn spawn(netns: &Netns, mut command: Command, dir: Option<TempDir>) -> Result<Self> {
        let command_line = describe(&command);
        let dir = match dir {
            Some(dir) => dir,
            None => TempDir::new("proc")?,
        };
        let stdout = File::create(dir.path().join("stdout"))
            .with_context(|| format!("creating stdout log in {}", dir.path().display()))?;
        let stderr = File::create(dir.path().join("stderr"))
            .with_context(|| format!("creating stderr log in {}", dir.path().display()))?;
        let child = command
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start `{command_line}`"))?;
        Ok(Self {
            child,
            reaped: false,
            command_line,
            netns: netns.name().to_owned(),
            dir,
        })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line it was started with.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// Its private directory: the `stdout` and `stderr` logs, and any files of the server
    /// (configuration, content) that were put there.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.read_log("stdout")
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.read_log("stderr")
    }

    fn read_log(&self, which: &str) -> String {
        std::fs::read(self.dir().join(which))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// A description for error messages: the command, where it runs, and its output so far.
    pub fn report(&self) -> String {
        format!(
            "`{}` (pid {}, namespace {}){}",
            self.command_line,
            self.pid(),
            self.netns,
            format_streams(self.stdout().as_bytes(), self.stderr().as_bytes())
        )
    }

    /// Returns its exit status if it has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let status = self
            .child
            .try_wait()
            .with_context(|| format!("waiting for `{}`", self.command_line))?;
        if status.is_some() {
            self.reaped = true;
        }
        Ok(status)
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let mut status = None;
        poll_until(timeout, POLL, || {
            status = self.try_wait()?;
            Ok(status.is_some())
        })?;
        Ok(status)
    }

    /// Sends a signal (e.g. `libc::SIGINT`) to the process itself, not its group.
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        if self.try_wait()?.is_some() {
            bail!("{} has already exited", self.report());
        }
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child,
        // so it cannot have been reused by another process.
        if unsafe { libc::kill(self.pid() as i32, signal) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("signalling {}", self.command_line));
        }
        Ok(())
    }

    /// Sends `SIGINT` to the process (what Ctrl-C does), e.g. to test a graceful shutdown.
    pub fn interrupt(&mut self) -> Result<()> {
        self.signal(libc::SIGINT)
    }

    fn fail_if_exited(&mut self, waiting_for: &str) -> Result<()> {
        if let Some(status) = self.try_wait()? {
            bail!(
                "{} exited ({status}) while waiting for {waiting_for}",
                self.report()
            );
        }
        Ok(())
    }

    fn wait_for(&mut self, what: &str, mut ready: impl FnMut(&Self) -> bool) -> Result<()> {
        let ok = poll_until(READY_TIMEOUT, POLL, || {
            self.fail_if_exited(what)?;
            Ok(ready(self))
        })?;
        if !ok {
            bail!(
                "timed out after {READY_TIMEOUT:?} waiting for {what}: {}",
                self.report()
            );
        }
        Ok(())
    }

    /// Waits until a TCP socket in its namespace listens on `port` (any address, IPv4 or IPv6);
    /// fails with its output if it exits first or after [`READY_TIMEOUT`].
    pub fn wait_for_tcp_listen(&mut self, port: u16) -> Result<()> {
        self.wait_for(&format!("a TCP listener on port {port}"), |process| {
            process.has_socket(&["tcp", "tcp6"], port, Some("0A"))
        })
    }

    /// Waits until a UDP socket in its namespace is bound to `port`; fails like
    /// [`Process::wait_for_tcp_listen`].
    pub fn wait_for_udp_bind(&mut self, port: u16) -> Result<()> {
        self.wait_for(&format!("a UDP socket on port {port}"), |process| {
            process.has_socket(&["udp", "udp6"], port, None)
        })
    }

    /// Waits until its stdout or stderr contains `needle`; fails like
    /// [`Process::wait_for_tcp_listen`].
    pub fn wait_for_output(&mut self, needle: &str) -> Result<()> {
        self.wait_for(&format!("output containing {needle:?}"), |process| {
            process.stdout().contains(needle) || process.stderr().contains(needle)
        })
    }

    /// Whether `/proc/<pid>/net/<table>` (which shows the sockets of the process's network
    /// namespace) has a socket on `port`, in `state` if given (`0A` is TCP LISTEN).
    fn has_socket(&self, tables: &[&str], port: u16, state: Option<&str>) -> bool {
        let port = format!("{port:04X}");
        tables.iter().any(|table| {
            let path = PathBuf::from(format!("/proc/{}/net/{table}", self.pid()));
            let Ok(text) = std::fs::read_to_string(path) else {
                return false;
            };
            text.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let local_port = fields.get(1).and_then(|local| local.rsplit(':').next());
                local_port == Some(port.as_str())
                    && state.is_none_or(|state| fields.get(3) == Some(&state))
            })
        })
    }

    /// Ends the process group: `SIGTERM` (a server reaps its workers, a program detaches what
    /// it attached), then `SIGKILL` if the process is still there after [`TERM_GRACE`]; then
    /// reaps the process. Drop does this.
    pub fn stop(&mut self) -> Result<()> {
        self.end(TERM_GRACE)
    }

    /// Kills the process group with `SIGKILL` at once and reaps the process.
    pub fn kill(&mut self) -> Result<()> {
        self.end(Duration::ZERO)
    }

    fn end(&mut self, grace: Duration) -> Result<()> {
        if self.reaped {
            return Ok(());
        }
        let group = -(self.pid() as i32);
        // Until it is reaped below, our child keeps its pid, which is also the group id, so
        // the signals cannot reach anyone else's group. kill(2) has no memory-safety
        // preconditions.
        if !grace.is_zero() {
            // SAFETY: see above.
            unsafe { libc::kill(group, libc::SIGTERM) };
            let pid = self.pid();
            poll_until(grace, POLL, || Ok(!process_alive(pid)))?;
        }
        // SAFETY: see above; members that ignored SIGTERM, if any, go now.
        unsafe { libc::kill(group, libc::SIGKILL) };
        self.child
            .wait()
            .with_context(|| format!("reaping `{}`", self.command_line))?;
        self.reaped = true;
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("ricochet-testbed: {error:#}");
        }
    }
}
