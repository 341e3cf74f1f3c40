//! Network namespaces for privileged tests, owned by threads: nothing a test does in
//! them is visible from the root namespace, and everything in them (veths, addresses,
//! sysctls, bpffs pins) goes away with the thread, also when the test panics or the
//! process is killed.
//!
//! Two forms: [`in_fresh_netns`] runs one closure on a thread that `unshare`s a new
//! namespace (the fixture lab), and [`Ns`] keeps a namespace on a dedicated thread
//! that runs the closures sent to it (several namespaces joined by veths, optionally with
//! private mounts). `unshare(CLONE_NEWNET)` moves only the calling thread, which is why
//! each namespace has a thread of its own that does nothing else.

use std::{
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
    process::Command,
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{unshare, CloneFlags},
};

use crate::is_bpffs;

/// Runs `f` on a new thread that first moves into a fresh network namespace, and
/// returns its result (a panic in `f` is re-raised here, so the test fails with it).
pub fn in_fresh_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let name = std::thread::current()
        .name()
        .unwrap_or("fixture")
        .to_owned();
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn_scoped(scope, || {
                // SAFETY: plain syscall; it changes only this thread's namespaces.
                let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "unshare(CLONE_NEWNET): {}",
                    std::io::Error::last_os_error()
                );
                f()
            })
            .expect("spawning the fixture thread");
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

type Job = Box<dyn FnOnce() + Send>;

/// A network namespace owned by a dedicated thread; closures sent with [`Ns::run`] execute
/// inside it.
pub struct Ns {
    pub name: String,
    tid: i32,
    /// A process in the private mount namespace, so that it outlives the setup calls as a
    /// real host's or container's does (setup refuses pins that die with the process).
    holder: Option<std::process::Child>,
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Ns {
    /// A new namespace. With `private_mounts` the thread also gets its own mount namespace
    /// (propagation private), a tmpfs on `/run` (the state files) and no bpffs on
    /// `/sys/fs/bpf`, so the code under test mounts its own, invisible to the host.
    pub fn new(name: &str, private_mounts: bool) -> Ns {
        let mut ns = Ns::unheld(name, private_mounts);
        if private_mounts {
            ns.holder = Some(ns.run(|| {
                Command::new("sleep")
                    .arg("3600")
                    .spawn()
                    .expect("starting the mount namespace's holder")
            }));
        }
        ns
    }

    /// Like [`Ns::new`], but a private mount namespace is held by this thread only: pins
    /// made there die with the process, as under `ip netns exec`.
    pub fn unheld(name: &str, private_mounts: bool) -> Ns {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<i32, String>>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let init = || -> Result<i32, String> {
                    unshare(CloneFlags::CLONE_NEWNET)
                        .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
                    if private_mounts {
                        unshare(CloneFlags::CLONE_NEWNS)
                            .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
                        mount(
                            None::<&str>,
                            "/",
                            None::<&str>,
                            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                            None::<&str>,
                        )
                        .map_err(|e| format!("making / private: {e}"))?;
                        mount(
                            Some("tmpfs"),
                            "/run",
                            Some("tmpfs"),
                            MsFlags::empty(),
                            None::<&str>,
                        )
                        .map_err(|e| format!("tmpfs on /run: {e}"))?;
                        while is_bpffs(Path::new("/sys/fs/bpf")) {
                            umount2("/sys/fs/bpf", MntFlags::MNT_DETACH)
                                .map_err(|e| format!("unmounting our copy of /sys/fs/bpf: {e}"))?;
                        }
                    }
                    sh_result("ip link set lo up")?;
                    Ok(nix::unistd::gettid().as_raw())
                };
                let ok = init();
                let failed = ok.is_err();
                let _ = ready_tx.send(ok);
                if failed {
                    return;
                }
                for job in rx {
                    job();
                }
            })
            .expect("spawning a namespace thread");
        let tid = ready_rx
            .recv()
            .expect("namespace thread died")
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        Ns {
            name: name.to_owned(),
            tid,
            holder: None,
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// The thread id: `ip link ... netns <tid>` moves an interface into this namespace.
    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// Runs `f` inside the namespace and returns its result; a panic in `f` is re-raised here.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (rtx, rrx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let r = panic::catch_unwind(AssertUnwindSafe(f));
            let _ = rtx.send(r);
        });
        self.tx
            .as_ref()
            .expect("namespace alive")
            .send(job)
            .expect("namespace thread gone");
        match rrx.recv().expect("namespace thread gone") {
            Ok(r) => r,
            Err(p) => panic::resume_unwind(p),
        }
    }

    /// Runs `f` inside the namespace and waits up to `within` for it; `None` if the
    /// namespace thread is gone, `f` panicked or took longer. Never panics, so that a
    /// `Drop` may call it while unwinding.
    pub fn try_run<R: Send + 'static>(
        &self,
        within: Duration,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let (rtx, rrx) = mpsc::channel();
        let job: Job = Box::new(move || {
            if let Ok(r) = panic::catch_unwind(AssertUnwindSafe(f)) {
                let _ = rtx.send(r);
            }
        });
        self.tx.as_ref()?.send(job).ok()?;
        rrx.recv_timeout(within).ok()
    }

    /// Runs a shell-free command line (split on whitespace) in the namespace; panics with
    /// its stderr on failure.
    pub fn sh(&self, line: &str) -> String {
        let line = line.to_owned();
        let name = self.name.clone();
        self.run(move || sh_result(&line).unwrap_or_else(|e| panic!("[{name}] {e}")))
    }

    /// Writes a sysctl inside the namespace.
    pub fn sysctl_set(&self, key: &str, value: &str) {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.run(move || {
            std::fs::write(sysctl_path(&key), &value)
                .unwrap_or_else(|e| panic!("sysctl {key}: {e}"))
        })
    }

    /// Reads a sysctl inside the namespace.
    pub fn sysctl_get(&self, key: &str) -> String {
        let key = key.to_owned();
        self.run(move || {
            std::fs::read_to_string(sysctl_path(&key))
                .unwrap_or_else(|e| panic!("sysctl {key}: {e}"))
                .trim()
                .to_owned()
        })
    }

    /// The addresses on `dev` as `addr/prefix` strings.
    pub fn addrs(&self, dev: &str) -> Vec<String> {
        let out = self.sh(&format!("ip -j addr show dev {dev}"));
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
        v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or("?"), a["prefixlen"]))
            .collect()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Some(mut holder) = self.holder.take() {
            let _ = holder.kill();
            let _ = holder.wait();
        }
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sysctl_path(key: &str) -> PathBuf {
    let rel: String = key
        .chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect();
    Path::new("/proc/sys").join(rel)
}

/// Runs `line` (split on whitespace) in the calling thread's namespaces.
pub fn sh_result(line: &str) -> Result<String, String> {
    let mut parts = line.split_whitespace();
    let prog = parts.next().ok_or("empty command")?;
    let out = Command::new(prog)
        .args(parts)
        .output()
        .map_err(|e| format!("`{line}`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{line}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
