//! Where the decapsulator's pins can live, seen from the namespaces this process runs in.
//!
//! - Pins live as long as their bpffs mount. `ip netns exec` gives the command a private
//!   mount namespace with its own `/sys`, so a bpffs mounted there (setup mounts one when
//!   `/sys/fs/bpf` has none) goes away with the command, and the pinned link, and so the
//!   decapsulator, with it: [`ensure_pins_outlive_process`] refuses that, with the fix.
//! - Servers in two network namespaces of one host share its bpffs and `/run`: the default
//!   pin directory (and so the undo record named after it) is keyed by the network
//!   namespace ([`keyed_default_pin_dir`]).

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::{ebpf, ServerError, DEFAULT_PIN_DIR};

/// The (device, inode) of a namespace file, or `None` when it cannot be read.
fn ns_id(path: &str) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The default pin directory for the calling thread's network namespace,
/// `DEFAULT_PIN_DIR-netns<inode>` (the namespace's inode, as `ls -iL /proc/self/ns/net`
/// shows). Every namespace gets its own, the host's too: which one is the host's cannot
/// always be told (PID 1's namespace files are not readable everywhere).
pub fn keyed_default_pin_dir() -> PathBuf {
    match ns_id("/proc/thread-self/ns/net") {
        Some((_, inode)) => PathBuf::from(format!("{DEFAULT_PIN_DIR}-netns{inode}")),
        None => PathBuf::from(DEFAULT_PIN_DIR),
    }
}

/// `/proc/self/mountinfo`-style text: whether a bpf filesystem with device `major:minor`
/// is mounted.
pub(crate) fn mountinfo_has_bpffs(mountinfo: &str, major: u64, minor: u64) -> bool {
    let dev = format!("{major}:{minor}");
    mountinfo.lines().any(|line| {
        let mut fields = line.split(' ');
        let device = fields.nth(2);
        let fstype = line
            .split_once(" - ")
            .and_then(|(_, rest)| rest.split(' ').next());
        device == Some(dev.as_str()) && fstype == Some("bpf")
    })
}

/// The pids of this process's ancestors (parent, grandparent, ...).
fn ancestors() -> Vec<u32> {
    let mut pids = Vec::new();
    let mut pid = std::process::id();
    while pid > 1 {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            break;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            break;
        };
        pids.push(ppid);
        pid = ppid;
    }
    pids
}

/// Whether a process other than this one and its ancestors is in mount namespace `mnt`:
/// something that keeps it alive after this command (a container's init, a daemon).
fn kept_by_another_process(mnt: (u64, u64), ancestors: &[u32]) -> bool {
    let me = std::process::id();
    let Ok(dir) = fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && !ancestors.contains(pid))
        .any(|pid| ns_id(&format!("/proc/{pid}/ns/mnt")) == Some(mnt))
}

/// The `/run/netns` name of the calling thread's network namespace, if it has one.
fn netns_name() -> Option<String> {
    let ours = ns_id("/proc/thread-self/ns/net")?;
    fs::read_dir("/run/netns")
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| ns_id(&e.path().to_string_lossy()) == Some(ours))
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

/// Refuses a pin directory whose bpffs will not outlive this process: one mounted (or to
/// be mounted) only in a mount namespace that no other process keeps (apart from this
/// one's ancestors, such as the `ip` or shell that started it).
///
/// Accepted: another process shares this mount namespace (the host's, a container's), or
/// the bpffs is mounted where PID 1 or an ancestor in another mount namespace sees it.
pub fn ensure_pins_outlive_process(pin_dir: &Path) -> Result<(), ServerError> {
    let Some(ours) = ns_id("/proc/thread-self/ns/mnt") else {
        return Ok(()); // No /proc to tell: nothing to judge by.
    };
    let ancestors = ancestors();
    if kept_by_another_process(ours, &ancestors) {
        return Ok(());
    }
    if ebpf::on_bpffs(pin_dir) {
        let existing = pin_dir.ancestors().find(|p| p.exists());
        if let Some(dev) = existing.and_then(|p| fs::metadata(p).ok()).map(|m| m.dev()) {
            let (major, minor) = (libc::major(dev) as u64, libc::minor(dev) as u64);
            let elsewhere = std::iter::once(1)
                .chain(ancestors.iter().copied())
                .filter(|pid| ns_id(&format!("/proc/{pid}/ns/mnt")) != Some(ours))
                .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok())
                .any(|mounts| mountinfo_has_bpffs(&mounts, major, minor));
            if elsewhere {
                return Ok(());
            }
        }
    }
    let fix = match netns_name() {
        Some(name) => format!("nsenter --net=/run/netns/{name} ricochet server setup ..."),
        None => "nsenter --net=/proc/PID/ns/net ricochet server setup ...".to_owned(),
    };
    Err(ServerError::PinsDieWithProcess {
        pin_dir: pin_dir.to_owned(),
        fix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_mounts_are_found_by_device() {
        let mountinfo = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:30 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:12 - bpf bpf rw,mode=700
40 23 0:33 / /mnt/x rw - tmpfs none rw";
        assert!(mountinfo_has_bpffs(mountinfo, 0, 30));
        assert!(!mountinfo_has_bpffs(mountinfo, 0, 33), "a tmpfs");
        assert!(!mountinfo_has_bpffs(mountinfo, 0, 31));
    }

    #[test]
    fn ancestors_and_the_keyed_default() {
        // The test runner has a parent (cargo, a shell).
        assert!(!ancestors().is_empty());
        let inode = ns_id("/proc/self/ns/net").unwrap().1;
        assert_eq!(
            keyed_default_pin_dir(),
            PathBuf::from(format!("{DEFAULT_PIN_DIR}-netns{inode}"))
        );
    }
}
