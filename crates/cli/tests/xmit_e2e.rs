//! The engine on a veth whose peer can take no XDP_TX frame (no XDP program, GRO off): it
//! says so at start, counts the frames the driver then drops, shows both in `ricochet
//! status` and in its report to the controller, and notices when the peer is fixed.
//! Needs root; everything runs in two namespaces of the test's own.

mod support;

use std::time::Duration;

use ricochet_testbed::{Netns, Process};
use support::seed::{cli_in, start_controller_in, started, CONTROLLER};
use support::{assert_quiet_end, run_into_closed_pipe, wait_until, RICOCHET};

/// The engine's namespace (`eth0`, 192.168.33.7) and its neighbour's (`up0`, 192.168.33.1,
/// routing the VIP to the engine); the server 192.168.33.10 is "behind" `up0` (a
/// permanent neighbour entry with its MAC), so every packet to the VIP is encapsulated
/// and sent back out with XDP_TX.
struct Lab {
    lb: Netns,
    peer: Netns,
    dir: tempfile::TempDir,
}

fn lab() -> Lab {
    let lb = Netns::new("xlb").unwrap();
    let peer = Netns::new("xpeer").unwrap();
    lb.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "up0",
        "netns",
        peer.name(),
    ])
    .unwrap();
    lb.ip(&["link", "set", "lo", "up"]).unwrap();
    lb.ip(&["addr", "add", "192.168.33.7/24", "dev", "eth0"])
        .unwrap();
    lb.ip(&["link", "set", "eth0", "up"]).unwrap();
    peer.ip(&["addr", "add", "192.168.33.1/24", "dev", "up0"])
        .unwrap();
    peer.ip(&["link", "set", "up0", "up"]).unwrap();
    peer.ip(&["route", "add", "192.168.35.241/32", "via", "192.168.33.7"])
        .unwrap();
    for (ns, iface) in [(&lb, "eth0"), (&peer, "up0")] {
        ns.ethtool_feature(iface, "tx", false).unwrap();
        ns.ethtool_feature(iface, "gro", false).unwrap();
    }
    let mac = ricochet_testbed::format_mac(&peer.mac("up0").unwrap());
    lb.ip(&[
        "neigh",
        "add",
        "192.168.33.10",
        "lladdr",
        &mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = ricochet_testbed::web_vs_config(
        ricochet_testbed::VIP_V4,
        &[std::net::Ipv4Addr::new(192, 168, 33, 10)],
    );
    std::fs::write(dir.path().join("ricochet.yaml"), config).unwrap();
    Lab { lb, peer, dir }
}

impl Lab {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    fn pin_dir(&self) -> String {
        format!("/sys/fs/bpf/{}", self.lb.name())
    }

    /// `ricochet engine` on `eth0` with `source` (its configuration's source), not yet
    /// waited for.
    fn spawn_engine(&self, source: &[&str]) -> Process {
        let (pins, state) = (self.pin_dir(), self.path("state"));
        let mut args = vec![
            RICOCHET,
            "engine",
            "--interface",
            "eth0",
            "--pin-dir",
            &pins,
            "--state-dir",
            &state,
            "--flows",
            "4096",
        ];
        args.extend_from_slice(source);
        self.lb.spawn(&args).unwrap()
    }

    fn engine(&self, source: &[&str]) -> Process {
        started(self.spawn_engine(source), "engine running")
    }

    /// `ricochet status` (waiting for the state file the engine writes once attached).
    fn status(&self) -> String {
        let state = self.path("state");
        let file = std::path::Path::new(&state).join("state.json");
        wait_until(Duration::from_secs(5), POLL, || {
            file.exists()
                .then_some(())
                .ok_or_else(|| "no state file".to_owned())
        });
        let out = self
            .lb
            .output(&[RICOCHET, "status", "--state-dir", &state])
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SYNs to the VIP from the peer: the engine encapsulates them and sends them back out.
    fn send_syns(&self) {
        // No answer can come: the frames are dropped.
        let _ = self.peer.output(&[
            "curl",
            "--silent",
            "--max-time",
            "1",
            "http://192.168.35.241/",
        ]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.lb.output(&[
            RICOCHET,
            "detach",
            "--interface",
            "eth0",
            "--pin-dir",
            &self.pin_dir(),
            "--state-dir",
            &self.path("state"),
        ]);
        let _ = std::fs::remove_dir_all(self.pin_dir());
    }
}

/// How often the tests look again for what they wait for.
const POLL: Duration = Duration::from_millis(200);

#[test]
fn lost_xdp_transmits_are_reported_in_the_log_and_status_until_fixed() {
    let lab = lab();
    let config = lab.path("ricochet.yaml");
    let mut engine = lab.engine(&["--config", &config]);
    let log = engine.stderr();
    assert!(
        log.contains("XDP FRAMES WILL BE LOST") && log.contains("up0"),
        "warned at start:\n{log}"
    );
    let status = lab.status();
    assert!(
        status.contains("WARNING: packets are being lost")
            && status.contains("eth0 (veth_peer_drops_xdp)")
            && status.contains("gro on"),
        "{status}"
    );

    // `ricochet status | head` with a running engine: ends quietly.
    let mut cmd = lab.lb.command(RICOCHET);
    cmd.args(["status", "--state-dir", &lab.path("state")]);
    assert_quiet_end("status", run_into_closed_pipe(cmd));

    lab.send_syns();
    wait_until(Duration::from_secs(10), POLL, || {
        let status = lab.status();
        if status.contains("(xdp_transmit_errors)") {
            Ok(())
        } else {
            Err(format!(
                "status shows the dropped frames:\n{status}\n{}",
                engine.report()
            ))
        }
    });
    assert!(engine.stderr().contains("XDP FRAMES LOST ON TRANSMIT"));

    // GRO on the peer: the frames are delivered; the warning goes.
    lab.peer.ethtool_feature("up0", "gro", true).unwrap();
    wait_until(Duration::from_secs(10), POLL, || {
        let status = lab.status();
        if status.contains("veth_peer_drops_xdp") {
            Err(status)
        } else {
            Ok(())
        }
    });
    assert!(engine.stderr().contains("resolved"), "{}", engine.report());
    engine.stop().unwrap();
}

#[test]
fn the_controller_shows_an_engines_lost_transmits() {
    let lab = lab();
    let _controller = start_controller_in(&lab.lb, &lab.path("controller"));
    let token = lab.path("controller/admin-token");
    let cli = |args: &[&str]| cli_in(&lab.lb, &token, args);
    let url = format!("http://{CONTROLLER}");
    let engine = lab.spawn_engine(&[
        "--controller",
        &url,
        "--token-file",
        &token,
        "--name",
        "se1",
    ]);
    cli(&["apply", "-f", &lab.path("ricochet.yaml"), "--yes"]);
    let _engine = started(engine, "engine running");
    wait_until(Duration::from_secs(10), POLL, || {
        let engines = cli(&["get", "se"]);
        if engines.contains("WARNING se1: eth0 (veth_peer_drops_xdp)") {
            Ok(())
        } else {
            Err(engines)
        }
    });
    let json = cli(&["get", "se", "se1", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["report"]["report"]["warnings"][0]["kind"], "veth_peer_drops_xdp",
        "{json}"
    );
}
