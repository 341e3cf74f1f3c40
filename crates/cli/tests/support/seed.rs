//! The seed's scenario for the end-to-end tests (shared/TESTBED.md): the bed itself
//! ([`seed_bed`], a [`SeedBed`] that undoes everything on drop, also on panic), a controller
//! and controller-following engine in se1's namespace, the CLI against it, and HTTP
//! connections from the client to the VIP.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ricochet_testbed::{Netns, Process, SeedBed};

use super::RICOCHET;

/// The controller's address inside se1's namespace (the namespace is the run's own, so
/// the fixed port collides with nothing, and a restarted controller is found again).
pub const CONTROLLER: &str = "127.0.0.1:8480";

/// The engines' flow table unless a test needs another size.
pub const FLOWS: &str = "65536";
/// A file-mode engine's configuration file and state directory in the bed's directory.
pub const CONFIG_FILE: &str = "ricochet.yaml";
pub const FILE_STATE: &str = "state";
/// A controller-following engine's state directory in the bed's directory.
pub const ENGINE_STATE: &str = "engine";

/// The seed's network with web01 and web02 DSR-ready for `vips` and serving with nginx.
pub fn seed_bed(test: &str, vips: &[IpAddr]) -> SeedBed {
    SeedBed::new(RICOCHET, test, vips).unwrap_or_else(|e| panic!("building the seed bed: {e:#}"))
}

/// Waits for `ready` in the process's output; a panic with its report otherwise.
pub fn started(mut p: Process, ready: &str) -> Process {
    p.wait_for_output(ready)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", p.report()));
    p
}

/// SIGTERM, then how long until the process exited cleanly; a panic with its report if it
/// is still there after `within` or exits with a failure.
pub fn sigterm(p: &mut Process, within: Duration) -> Duration {
    let t = Instant::now();
    p.signal(libc::SIGTERM).unwrap();
    let status = p
        .wait_timeout(within)
        .unwrap()
        .unwrap_or_else(|| panic!("no exit {within:?} after SIGTERM:\n{}", p.report()));
    let took = t.elapsed();
    assert!(status.success(), "{status}: {}", p.report());
    took
}

/// `ricochet controller` in `ns` at [`CONTROLLER`] with `state_dir`; waits until it
/// listens.
pub fn start_controller_in(ns: &Netns, state_dir: &str) -> Process {
    let p = ns
        .spawn(&[
            RICOCHET,
            "controller",
            "--listen",
            CONTROLLER,
            "--state-dir",
            state_dir,
        ])
        .unwrap();
    started(p, "controller listening on")
}

/// Runs the CLI in `ns` against the controller at [`CONTROLLER`]; stdout, or a panic with
/// its output.
pub fn cli_in(ns: &Netns, token_file: &str, args: &[&str]) -> String {
    let url = format!("http://{CONTROLLER}");
    let mut full = vec![RICOCHET];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--url", &url, "--token-file", token_file]);
    let out = ns.output(&full).unwrap();
    assert!(
        out.status.success(),
        "ricochet {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A file-mode engine on se1 and the commands run next to it.
pub trait FileMode {
    /// Writes the engine's configuration, [`CONFIG_FILE`] in the bed's directory.
    fn write_config(&self, text: &str) -> PathBuf;
    /// `ricochet engine --config` on se1 with [`CONFIG_FILE`], state in [`FILE_STATE`],
    /// pins in se1's pin directory, a flow table of `flows`, and `extra` flags; waits
    /// until it runs.
    fn start_file_engine(&self, flows: &str, extra: &[&str]) -> Process;
    /// `ricochet status` on se1 for the engine whose state is in `state` (a directory of
    /// the bed's); its stdout, or a panic with its stderr.
    fn status_of(&self, state: &str) -> String;
    /// `ricochet detach` of se1's interface and pins, the state in `state`; a panic with
    /// its stderr if it fails.
    fn detach(&self, state: &str);
}

impl FileMode for SeedBed {
    fn write_config(&self, text: &str) -> PathBuf {
        let path = self.dir().join(CONFIG_FILE);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn start_file_engine(&self, flows: &str, extra: &[&str]) -> Process {
        let config = self.path(CONFIG_FILE);
        start_se1_engine(self, &["--config", &config], FILE_STATE, flows, extra)
    }

    fn status_of(&self, state: &str) -> String {
        let out = self
            .topo
            .se1
            .ns
            .output(&[RICOCHET, "status", "--state-dir", &self.path(state)])
            .unwrap();
        assert!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn detach(&self, state: &str) {
        let out = self
            .topo
            .se1
            .ns
            .output(&[
                RICOCHET,
                "detach",
                "--interface",
                self.topo.se1.iface,
                "--pin-dir",
                self.pin_dir("se1").to_str().unwrap(),
                "--state-dir",
                &self.path(state),
            ])
            .unwrap();
        assert!(
            out.status.success(),
            "detach: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `ricochet engine` on se1's interface with its configuration from `source`, state in
/// the bed's directory `state`, pins in se1's pin directory, a flow table of `flows`, and
/// `extra` flags; waits until it runs.
fn start_se1_engine(
    bed: &SeedBed,
    source: &[&str],
    state: &str,
    flows: &str,
    extra: &[&str],
) -> Process {
    let (pins, state) = (bed.pin_dir("se1"), bed.path(state));
    let mut args = vec![RICOCHET, "engine"];
    args.extend_from_slice(source);
    args.extend_from_slice(&[
        "--interface",
        bed.topo.se1.iface,
        "--pin-dir",
        pins.to_str().unwrap(),
        "--state-dir",
        &state,
        "--flows",
        flows,
    ]);
    args.extend_from_slice(extra);
    started(bed.topo.se1.ns.spawn(&args).unwrap(), "engine running")
}

/// The controller side of the seed: `ricochet controller` and `ricochet engine
/// --controller` on se1, and the CLI against the controller.
pub trait Controlled {
    /// `ricochet controller` on se1 at [`CONTROLLER`], state in `controller/`.
    fn start_controller(&self) -> Process;
    /// `ricochet engine --controller` on se1 named se1, state in `engine/`, pins in
    /// se1's pin directory, with `extra` flags; waits until it runs.
    fn start_engine(&self, extra: &[&str]) -> Process;
    /// Runs the CLI in se1's namespace against the controller; stdout, or a panic with
    /// its output.
    fn cli(&self, args: &[&str]) -> String;
}

impl Controlled for SeedBed {
    fn start_controller(&self) -> Process {
        start_controller_in(&self.topo.se1.ns, &self.path("controller"))
    }

    fn start_engine(&self, extra: &[&str]) -> Process {
        let url = format!("http://{CONTROLLER}");
        let token = self.path("controller/admin-token");
        let source = [
            "--controller",
            &url,
            "--token-file",
            &token,
            "--name",
            "se1",
        ];
        start_se1_engine(self, &source, ENGINE_STATE, FLOWS, extra)
    }

    fn cli(&self, args: &[&str]) -> String {
        cli_in(
            &self.topo.se1.ns,
            &self.path("controller/admin-token"),
            args,
        )
    }
}

// Where every test binary that uses support finds them (not all do).
#[allow(unused_imports)]
pub use ricochet_testbed::{get_new, Conn};

/// Rewrites a file-mode engine's configuration `path` with `text` and waits until the
/// engine has logged `applied` changes applied in all (a panic with its report after 10 s).
pub fn reconfigure(engine: &Process, path: &std::path::Path, text: &str, applied: usize) {
    std::fs::write(path, text).unwrap();
    super::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        if engine
            .stderr()
            .matches("configuration change applied")
            .count()
            >= applied
        {
            Ok(())
        } else {
            Err(format!(
                "the engine did not apply the change:\n{}",
                engine.report()
            ))
        }
    });
}
