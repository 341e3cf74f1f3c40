//! The seed's scenario for the end-to-end tests (shared/TESTBED.md): the bed itself
//! ([`seed_bed`], a [`SeedBed`] that undoes everything on drop, also on panic), a controller
//! and controller-following engine in se1's namespace, the CLI against it, and HTTP
//! connections from the client to the VIP.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ricochet_testbed::{Netns, Process, SeedBed, Topology};

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

/// An HTTP/1.1 keep-alive connection to port 80 of a VIP. [`Conn::open`] must run in
/// the client's namespace ([`Conn::open_in`] does that).
pub struct Conn {
    stream: TcpStream,
}

impl Conn {
    pub fn open(vip: IpAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&SocketAddr::new(vip, 80), Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(Conn { stream })
    }

    /// Opens a connection from the client's namespace; a panic if it fails.
    pub fn open_in(topo: &Topology, vip: IpAddr) -> Conn {
        topo.client
            .ns
            .run(move || Conn::open(vip))
            .unwrap()
            .expect("connect to the VIP")
    }

    /// The client's end of the connection (its flow key's source address and port).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream
            .local_addr()
            .expect("local address of a connected socket")
    }

    /// Sends a GET on the open connection and returns the body (the server's name).
    pub fn get(&mut self) -> std::io::Result<String> {
        self.stream
            .write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .and_then(|v| v.trim().parse().ok())
                    })
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("no Content-Length in {:?}", &text[..end]),
                        )
                    })?;
                if buf.len() >= end + 4 + len {
                    return Ok(String::from_utf8_lossy(&buf[end + 4..end + 4 + len])
                        .trim()
                        .to_owned());
                }
            }
        }
    }
}

/// One HTTP GET on a new connection from the client; the body (the server's name).
pub fn get_new(topo: &Topology, vip: IpAddr) -> std::io::Result<String> {
    topo.client
        .ns
        .run(move || Conn::open(vip).and_then(|mut c| c.get()))
        .unwrap()
}

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
