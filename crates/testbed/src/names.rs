//! Unique names per run, temporary directories, and the sweep of what dead runs left behind.
//!
//! Every object the test bed creates outside its own memory (network namespaces, temporary
//! directories, and any link ever created in the root namespace) is named
//! `rc<pid>-<instance>-<role>`, where `<pid>` is the creating process. A later run removes
//! the objects whose process is gone (`/proc/<pid>` missing), so a test killed by a signal
//! leaks nothing for long.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cmd::{checked, output, poll_until};

/// The prefix of every name this process creates: `rc<pid>-`.
pub fn run_prefix() -> String {
    format!("rc{}-", std::process::id())
}

/// A fresh prefix for one group of objects (a topology, a namespace, a temporary directory):
/// `rc<pid>-<n>-`, unique within the process.
pub(crate) fn instance_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{}{}-", run_prefix(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The process id embedded in a name made by [`run_prefix`], if the name is one.
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("rc")?;
    let digits_end = rest.find(|c: char| !c.is_ascii_digit())?;
    if digits_end == 0 || !rest[digits_end..].starts_with('-') {
        return None;
    }
    rest[..digits_end].parse().ok()
}

/// Whether a name made by some run belongs to a process that no longer exists.
fn is_stale(name: &str) -> bool {
    owner_pid(name).is_some_and(|pid| pid != std::process::id() && !process_alive(pid))
}

/// Runs [`sweep_stale`] once per process (before the first namespace is created), reporting
/// problems on stderr rather than failing the caller.
pub(crate) fn sweep_stale_once() {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| match sweep_stale() {
        Ok(removed) if !removed.is_empty() => {
            eprintln!("ricochet-testbed: removed stale objects of dead runs: {removed:?}")
        }
        Ok(_) => {}
        Err(error) => eprintln!("ricochet-testbed: sweep of stale objects failed: {error:#}"),
    });
}

/// Removes the namespaces (and the processes in them), root-namespace links and temporary
/// directories named by runs whose process is gone. Returns what it removed.
///
/// Objects of live processes, including other test binaries running at the same time, are
/// never touched.
pub fn sweep_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();

    let list = checked(Command::new("ip").args(["netns", "list"]))?;
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        // Lines look like `rc42-0-router (id: 3)` or just `rc42-0-router`.
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if is_stale(name) {
            let result = kill_netns_processes(name)
                .and_then(|()| checked(Command::new("ip").args(["netns", "del", name])));
            match result {
                Ok(_) => removed.push(format!("netns {name}")),
                // Another run's sweep removed it first.
                Err(_) if !Path::new("/run/netns").join(name).exists() => {}
                Err(error) => return Err(error),
            }
        }
    }

    // The test bed creates veth pairs directly inside namespaces, so nothing should be here;
    // the sweep still covers links that a crash left in the root namespace.
    let links = checked(Command::new("ip").args(["-o", "link", "show"]))?;
    for line in String::from_utf8_lossy(&links.stdout).lines() {
        // `7: rc42-0-x@if6: <BROADCAST,...`
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if is_stale(name) {
            // The link may already be gone with its peer.
            let _ = output(Command::new("ip").args(["link", "del", name]))?;
            removed.push(format!("link {name}"));
        }
    }

    let temp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&temp) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_stale(&name) {
                let path = entry.path();
                let result = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                match result {
                    Ok(()) => removed.push(format!("temp {}", path.display())),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => {
                        return Err(error)
                            .with_context(|| format!("removing stale {}", path.display()))
                    }
                }
            }
        }
    }
    Ok(removed)
}

/// Whether a process exists and has not exited (a zombie counts as exited: in a container
/// whose init does not reap, orphans stay zombies).
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S ...`: the state follows the last `)`, since comm may contain one.
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// The processes whose network namespace is the named one (what `ip netns pids` prints,
/// without running it): their `/proc/<pid>/ns/net` link names the namespace's inode.
pub(crate) fn netns_pids(name: &str) -> Result<Vec<u32>> {
    use std::os::unix::fs::MetadataExt;

    let path = Path::new("/run/netns").join(name);
    let inode = std::fs::metadata(&path)
        .with_context(|| format!("no network namespace {name} ({})", path.display()))?
        .ino();
    let target = format!("net:[{inode}]");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .context("listing /proc")?
        .flatten()
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes that exit meanwhile, and zombies, have no readable link.
        if std::fs::read_link(entry.path().join("ns/net"))
            .is_ok_and(|link| link.as_os_str() == target.as_str())
        {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Signals processes, ignoring those that are already gone.
fn signal_all(pids: &[u32], signal: i32) {
    for &pid in pids {
        let Ok(pid) = i32::try_from(pid) else {
            continue;
        };
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is positive, so this
        // signals exactly that process.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Ends every process in a namespace (except this process): `SIGTERM` first, so that servers
/// reap their own workers and programs can detach what they attached, then `SIGKILL` after
/// [`TERM_GRACE`]. Returns when none is left.
pub(crate) fn kill_netns_processes(name: &str) -> Result<()> {
    let me = std::process::id();
    let others = || -> Result<Vec<u32>> {
        let mut pids = netns_pids(name)?;
        pids.retain(|&pid| pid != me);
        Ok(pids)
    };
    let pids = others()?;
    if pids.is_empty() {
        return Ok(());
    }
    signal_all(&pids, libc::SIGTERM);
    if poll_until(TERM_GRACE, POLL, || Ok(others()?.is_empty()))? {
        return Ok(());
    }
    let gone = poll_until(Duration::from_secs(2), POLL, || {
        let pids = others()?;
        signal_all(&pids, libc::SIGKILL);
        Ok(pids.is_empty())
    })?;
    anyhow::ensure!(gone, "processes in namespace {name} survive SIGKILL");
    Ok(())
}

/// How long processes get to exit after `SIGTERM` before they are killed.
pub const TERM_GRACE: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(5);

/// A temporary directory named `rc<pid>-<n>-<tag>` in the system's temporary directory,
/// removed with its contents on drop (and by a later run's sweep if this process dies).
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub(crate) fn new(tag: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("{}{tag}", instance_prefix()));
        std::fs::create_dir(&path)
            .with_context(|| format!("creating temporary directory {}", path.display()))?;
        Ok(Self { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            if error.kind() != std::io::ErrorKind::NotFound {
                eprintln!(
                    "ricochet-testbed: cannot remove {}: {error}",
                    self.path.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_our_names() {
        assert_eq!(owner_pid("rc4242-0-se1"), Some(4242));
        assert_eq!(owner_pid("rc4242-se1"), Some(4242));
        assert_eq!(owner_pid("rc-0-se1"), None);
        assert_eq!(owner_pid("rc4242"), None);
        assert_eq!(owner_pid("rc42x-1"), None);
        assert_eq!(owner_pid("src42-1"), None);
        assert_eq!(owner_pid("eth0"), None);
    }

    #[test]
    fn prefixes_are_unique_and_owned_by_this_process() {
        let a = instance_prefix();
        let b = instance_prefix();
        assert_ne!(a, b);
        assert!(a.starts_with(&run_prefix()));
        assert_eq!(owner_pid(&a), Some(std::process::id()));
        assert!(!is_stale(&a));
    }

    #[test]
    fn names_of_impossible_pids_are_stale() {
        // Above the kernel's largest possible pid_max (2^22), so no such process exists.
        assert!(is_stale("rc4194305-0-client"));
    }

    #[test]
    fn temp_dir_is_removed_on_drop() {
        let dir = TempDir::new("unit").unwrap();
        let path = dir.path().to_owned();
        std::fs::write(path.join("file"), b"x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }
}
