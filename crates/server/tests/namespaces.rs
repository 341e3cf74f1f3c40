//! Privileged: where the decapsulator's pins live. Setup refuses a bpffs that dies with the
//! process (a private mount namespace nobody else holds, as `ip netns exec` makes), and two
//! servers in network namespaces sharing the host's bpffs and `/run` keep apart default pin
//! directories and undo records. Run as root (`cargo test -p ricochet-server --test namespaces`).
mod common;

use std::{net::IpAddr, path::PathBuf};

use aya::programs::{SchedClassifier, TcAttachType};
use common::*;
use ricochet_server::{
    check, keyed_default_pin_dir, setup, state_path, undo, DecapMode, ServerError, ServerSpec,
    DEFAULT_PIN_DIR,
};

const IFACE: &str = "dsr0";

/// A veth pair `dsr0` <-> `dsr1` inside `ns`, `dsr0` up with an address.
fn veth(ns: &Ns) {
    ns.sh(&format!("ip link add {IFACE} type veth peer name dsr1"));
    ns.sh(&format!("ip addr add {SERVER_V4}/24 dev {IFACE}"));
    ns.sh(&format!("ip link set {IFACE} up"));
    ns.sh("ip link set dsr1 up");
}

fn spec(pin_dir: PathBuf) -> ServerSpec {
    ServerSpec {
        vips: vec![IpAddr::V4(VIP_V4)],
        interface: Some(IFACE.to_owned()),
        decap: DecapMode::Ebpf,
        pin_dir,
        gue_ports: vec![ricochet_server::DEFAULT_GUE_PORT],
    }
}

fn decaps(ns: &Ns) -> usize {
    ns.run(|| {
        let (_, progs) =
            SchedClassifier::query_tcx(IFACE, TcAttachType::Ingress).expect("query_tcx");
        progs
            .iter()
            .filter(|p| p.name_as_str() == Some("ricochet_decap"))
            .count()
    })
}

#[test]
fn setup_refuses_pins_that_die_with_the_process() {
    require_root();
    // A private mount namespace without bpffs, held by this test's thread only.
    let ns = Ns::unheld(&format!("rcs{}-eph", std::process::id()), true);
    veth(&ns);
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/rcs{}-eph", std::process::id()));
    let lo_before = ns.addrs("lo");
    let s = spec(pin_dir.clone());
    let err = ns.run(move || setup(&s).map(|_| ())).expect_err("refused");
    assert!(
        matches!(
            err.downcast_ref(),
            Some(ServerError::PinsDieWithProcess { .. })
        ),
        "{err:#}"
    );
    let text = err.to_string();
    assert!(
        text.contains("ip netns exec") && text.contains("nsenter --net="),
        "says why and how: {text}"
    );
    assert_eq!(ns.addrs("lo"), lo_before, "a refused setup changed lo");
    let p = pin_dir.clone();
    assert!(!ns.run(move || p.exists()), "nothing pinned");
    let record = state_path(&pin_dir);
    assert!(!ns.run(move || record.exists()), "no undo record");
    assert_eq!(decaps(&ns), 0);
}

/// Undoes setup in the server namespaces and removes what is left on the host's bpffs
/// and `/run`, also when the test fails.
struct Cleanup<'a>(Vec<(&'a Ns, PathBuf)>);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for (ns, pin_dir) in &self.0 {
            let s = spec(PathBuf::from(DEFAULT_PIN_DIR));
            let pin_dir = pin_dir.clone();
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                ns.run(move || {
                    let _ = undo(&s);
                    let _ = std::fs::remove_dir_all(&pin_dir);
                    let _ = std::fs::remove_file(state_path(&pin_dir));
                })
            }));
        }
    }
}

#[test]
fn two_servers_sharing_the_hosts_bpffs_keep_apart_default_pins_and_records() {
    require_root();
    // Shared mounts: both see the host's /sys/fs/bpf and /run, as two namespaces on one host do.
    let a = Ns::new(&format!("rcs{}-a", std::process::id()), false);
    let b = Ns::new(&format!("rcs{}-b", std::process::id()), false);
    veth(&a);
    veth(&b);
    let pins_a = a.run(keyed_default_pin_dir);
    let pins_b = b.run(keyed_default_pin_dir);
    assert_ne!(pins_a, pins_b);
    assert!(
        pins_a.to_string_lossy().starts_with(DEFAULT_PIN_DIR),
        "{pins_a:?}"
    );
    let _cleanup = Cleanup(vec![(&a, pins_a.clone()), (&b, pins_b.clone())]);

    let default = || spec(PathBuf::from(DEFAULT_PIN_DIR));
    let (sa, sb) = (default(), default());
    let report_a = a.run(move || setup(&sa)).expect("setup in a");
    let report_b = b.run(move || setup(&sb)).expect("setup in b");
    assert_eq!(report_a.state_file, state_path(&pins_a));
    assert_eq!(report_b.state_file, state_path(&pins_b));
    assert_ne!(report_a.state_file, report_b.state_file);
    assert!(pins_a.exists() && pins_b.exists());
    assert_eq!((decaps(&a), decaps(&b)), (1, 1));

    // Undoing one server leaves the other whole.
    let s = default();
    a.run(move || undo(&s)).expect("undo in a");
    assert_eq!(decaps(&a), 0);
    assert!(!pins_a.exists() && !report_a.state_file.exists());
    assert_eq!(decaps(&b), 1, "b's decapsulator survives a's undo");
    assert!(pins_b.exists() && report_b.state_file.exists());
    let s = default();
    let report = b.run(move || check(&s)).expect("check in b");
    assert!(report.is_ok(), "{report}");
    let s = default();
    b.run(move || undo(&s)).expect("undo in b");
    assert_eq!(decaps(&b), 0);
    assert!(!pins_b.exists() && !report_b.state_file.exists());
}
