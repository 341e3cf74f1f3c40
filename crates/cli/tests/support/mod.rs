//! The real `ricochet controller` as a child process on a free port, for the CLI and
//! crash tests; [`seed`]: the seed's network for the end-to-end tests.
#![allow(dead_code, reason = "each test crate uses a different subset")]

pub mod seed;

use std::io::{BufRead as _, BufReader, Read as _};
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const RICOCHET: &str = env!("CARGO_BIN_EXE_ricochet");

/// A controller process; killed when dropped.
pub struct ControllerProcess {
    pub child: Child,
    pub url: String,
    pub state_dir: PathBuf,
}

impl ControllerProcess {
    /// Starts `ricochet controller` on 127.0.0.1:0 with `state_dir`, and waits until it
    /// says where it listens.
    pub fn start(state_dir: &Path) -> ControllerProcess {
        let mut child = Command::new(RICOCHET)
            .args(["controller", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state_dir)
            .env("RICOCHET_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting ricochet controller");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Reads the log until the process ends, so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let url: String = line[at + "listening on ".len()..]
                        .chars()
                        .take_while(|c| !c.is_whitespace())
                        .collect();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(url));
                    }
                } else if line.contains("error") {
                    if let Some(tx) = &tx {
                        let _ = tx.send(Err(line));
                    }
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(url)) => url,
            Ok(Err(line)) => panic!("the controller failed to start: {line}"),
            Err(_) => panic!("the controller did not start within 20 s"),
        };
        ControllerProcess {
            child,
            url,
            state_dir: state_dir.to_owned(),
        }
    }

    pub fn token_file(&self) -> PathBuf {
        self.state_dir.join("admin-token")
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.token_file())
            .unwrap()
            .trim()
            .to_owned()
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill_hard(mut self) {
        self.child.kill().expect("SIGKILL the controller");
        self.child.wait().unwrap();
    }

    /// Runs a client command against this controller: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(RICOCHET)
            .args(args)
            .env("RICOCHET_URL", &self.url)
            .env("RICOCHET_TOKEN_FILE", self.token_file())
            .env_remove("RICOCHET_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("running ricochet");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` with stdout a pipe whose reading end is already closed, so that its first
/// write fails (deterministically: no race with a reader). Returns how it ended and its
/// stderr.
pub fn run_into_closed_pipe(mut cmd: Command) -> (ExitStatus, String) {
    let mut fds = [0; 2];
    // SAFETY: plain syscall with a valid out-array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors nobody else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let mut child = cmd
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("running ricochet");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap(), err)
}

/// Ended by SIGPIPE (as `yes | head` ends `yes`), with nothing on stderr.
pub fn assert_quiet_end(what: &str, (status, err): (ExitStatus, String)) {
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{what}: {err}"
    );
    assert_eq!(
        status.signal(),
        Some(libc::SIGPIPE),
        "{what} ends by SIGPIPE like coreutils ({status}): {err}"
    );
    assert_eq!(err, "", "{what} prints nothing to stderr");
}

/// Calls `attempt` every `every` until it returns `Ok`, and returns that; `Err` says what
/// is still missing, and the last one is the panic's message once `within` has passed.
pub fn wait_until<T>(
    within: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match attempt() {
            Ok(done) => return done,
            Err(missing) if Instant::now() >= deadline => panic!("{missing}"),
            Err(_) => std::thread::sleep(every),
        }
    }
}
