//! What the printing commands do with their output: a reader that goes away early
//! (`ricochet ... | head`) ends them quietly, and an invalid file's message says
//! "invalid configuration" once.

mod support;

use std::io::Read as _;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};

use support::{ControllerProcess, RICOCHET};

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples/seed.yaml");

/// Runs `cmd` with stdout a pipe whose reading end is already closed, so that its first
/// write fails (deterministically: no race with a reader). Returns how it ended and its
/// stderr.
fn run_into_closed_pipe(mut cmd: Command) -> (std::process::ExitStatus, String) {
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
fn assert_quiet_end(what: &str, (status, err): (std::process::ExitStatus, String)) {
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

#[test]
fn check_config_into_a_closed_pipe_ends_quietly() {
    let mut cmd = Command::new(RICOCHET);
    cmd.args(["check-config", SEED]);
    assert_quiet_end("check-config", run_into_closed_pipe(cmd));
}

#[test]
fn controller_clients_into_a_closed_pipe_end_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(dir.path());
    let (code, _, err) = controller.cli(&["apply", "-f", SEED, "--yes"]);
    assert_eq!(code, 0, "{err}");
    for args in [
        &["get", "virtualservices"][..],
        &["get", "pools", "-o", "yaml"],
        &["events"],
    ] {
        let mut cmd = Command::new(RICOCHET);
        cmd.args(args)
            .env("RICOCHET_URL", &controller.url)
            .env("RICOCHET_TOKEN_FILE", controller.token_file())
            .env_remove("RICOCHET_TOKEN");
        assert_quiet_end(&args.join(" "), run_into_closed_pipe(cmd));
    }
}

#[test]
fn an_invalid_file_says_invalid_configuration_once() {
    let seed = std::fs::read_to_string(SEED).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.yaml");
    std::fs::write(
        &one,
        seed.replacen("pool: web-pool\n", "pool: web-pol\n", 1),
    )
    .unwrap();
    let out = Command::new(RICOCHET)
        .args(["check-config"])
        .arg(&one)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{}: invalid configuration: virtual_services[\"web-vs\"].pool: pool \"web-pol\" \
             does not exist (known pools: web-pool, web-pool-v6, dns-pool)\n",
            one.display()
        )
    );

    let two = dir.path().join("two.yaml");
    let bad = seed
        .replacen("pool: web-pool\n", "pool: web-pol\n", 1)
        .replacen("pool: dns-pool\n", "pool: dns-pol\n", 1);
    std::fs::write(&two, bad).unwrap();
    let out = Command::new(RICOCHET)
        .args(["check-config"])
        .arg(&two)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "{}: invalid configuration (2 errors):\n  - ",
            two.display()
        )),
        "{err}"
    );
    assert_eq!(err.matches("invalid configuration").count(), 1, "{err}");

    // The engine refuses the same file with the same words, once.
    let pins = dir.path().join("pins");
    let out = Command::new(RICOCHET)
        .args(["engine", "--interface", "lo", "--config"])
        .arg(&one)
        .arg("--pin-dir")
        .arg(&pins)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "error: {}: invalid configuration: virtual_services[\"web-vs\"].pool: pool \"web-pol\" does not exist",
            one.display()
        )),
        "{err}"
    );
    assert_eq!(err.matches("invalid configuration").count(), 1, "{err}");
}
