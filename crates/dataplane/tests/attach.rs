//! Privileged: attaching the load balancer. Generic mode turns receive merging (GRO) off
//! while attached and `detach` turns it on again; a pinned attachment left by an earlier
//! run is not silently taken over in the other mode.
//!
//! Run as root: `cargo test -p ricochet-dataplane --test attach`.

use ricochet_testkit::lab as net;

use std::path::{Path, PathBuf};

use ricochet_dataplane::{
    ethtool,
    kernel::{self, AttachMode, KernelDataplane, LoadOptions},
    netlink, offloads, Capacities,
};

const LB: &str = "xa";
const PEER: &str = "xb";

fn need_root() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests create namespaces, attach XDP and pin in bpffs: run them as root"
    );
}

/// A pin directory under /sys/fs/bpf, detached and removed on drop.
struct Pins(PathBuf);

impl Pins {
    fn new(tag: &str) -> Self {
        let dir = PathBuf::from(format!("/sys/fs/bpf/rcx{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Pins(dir)
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = kernel::detach(&self.0, None);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn load(pin_dir: Option<&Path>) -> KernelDataplane {
    KernelDataplane::load(&LoadOptions {
        pin_dir: pin_dir.map(Path::to_path_buf),
        caps: Capacities {
            flows: 1024,
            maglev_slots: 1024,
            ..Capacities::default()
        },
    })
    .expect("loading the XDP program")
}

fn veth_with_gro() {
    net::ip_batch(&[
        format!("link add {LB} type veth peer name {PEER}"),
        format!("link set {LB} up"),
        format!("link set {PEER} up"),
    ]);
    ethtool::set_features(LB, &[("rx-gro", true)]).unwrap();
    assert!(gro(LB), "GRO turned on for the test");
}

fn gro(iface: &str) -> bool {
    ethtool::features(iface)
        .unwrap()
        .iter()
        .any(|f| f.name == "rx-gro" && f.active)
}

#[test]
fn generic_mode_turns_gro_off_while_attached_and_detach_restores_it() {
    need_root();
    let pins = Pins::new("gro");
    let dir = pins.0.clone();
    ricochet_testkit::netns::in_fresh_netns(move || {
        veth_with_gro();
        let mut dp = load(Some(&dir));
        dp.attach(LB, AttachMode::Generic).unwrap();
        assert!(!gro(LB), "GRO off while generic XDP is attached");
        let record = offloads::record_path(&dir, LB);
        assert_eq!(
            offloads::read_record(&record).unwrap(),
            Some(offloads::Saved {
                on: vec!["rx-gro".into()]
            })
        );
        // The engine exits: the pinned program stays, and GRO stays off with it.
        drop(dp);
        assert!(netlink::link_by_name(LB).unwrap().xdp.generic.is_some());
        assert!(!gro(LB));
        // A restart adopts the attachment and keeps the record of the original state.
        let mut dp = load(Some(&dir));
        dp.attach(LB, AttachMode::Generic).unwrap();
        drop(dp);
        assert!(offloads::read_record(&record).unwrap().unwrap().on == ["rx-gro"]);

        let removed = kernel::detach(&dir, Some(LB)).unwrap();
        assert!(removed.contains(&record), "{removed:?}");
        assert!(netlink::link_by_name(LB).unwrap().xdp.is_empty());
        assert!(gro(LB), "GRO restored by detach");

        // Without a pin directory the attachment ends with the object, and so does the
        // change.
        let mut dp = load(None);
        dp.attach(LB, AttachMode::Generic).unwrap();
        assert!(!gro(LB));
        drop(dp);
        assert!(gro(LB), "GRO restored when the unpinned data plane goes");

        // Native mode leaves GRO alone (XDP runs before it).
        let mut dp = load(None);
        dp.attach(LB, AttachMode::Native).unwrap();
        assert!(gro(LB));
        drop(dp);
    });
}

#[test]
fn a_pinned_attachment_is_not_taken_over_in_the_other_mode() {
    need_root();
    let pins = Pins::new("mode");
    let dir = pins.0.clone();
    ricochet_testkit::netns::in_fresh_netns(move || {
        veth_with_gro();
        load(Some(&dir)).attach(LB, AttachMode::Native).unwrap();
        let err = load(Some(&dir))
            .attach(LB, AttachMode::Generic)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refusing --xdp-mode generic")
                && err.contains("in native mode")
                && err.contains("--xdp-mode native")
                && err.contains(&format!("ricochet detach --interface {LB}")),
            "{err}"
        );
        let xdp = netlink::link_by_name(LB).unwrap().xdp;
        assert!(xdp.native.is_some() && xdp.generic.is_none(), "{xdp:?}");
        assert!(gro(LB), "a refused generic attach changes nothing");
        // Native and auto take it over.
        load(Some(&dir)).attach(LB, AttachMode::Native).unwrap();
        load(Some(&dir)).attach(LB, AttachMode::Auto).unwrap();
        kernel::detach(&dir, Some(LB)).unwrap();

        // The reverse: a generic attachment, native asked for.
        load(Some(&dir)).attach(LB, AttachMode::Generic).unwrap();
        let err = load(Some(&dir))
            .attach(LB, AttachMode::Native)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refusing --xdp-mode native") && err.contains("in generic mode"),
            "{err}"
        );
        load(Some(&dir)).attach(LB, AttachMode::Auto).unwrap();
        kernel::detach(&dir, Some(LB)).unwrap();
        assert!(gro(LB));

        // A pinned link whose interface went away is said to be stale, not silently
        // "adopted".
        load(Some(&dir)).attach(LB, AttachMode::Native).unwrap();
        net::ip_batch(&[format!("link del {LB}")]);
        veth_with_gro();
        let err = load(Some(&dir))
            .attach(LB, AttachMode::Native)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no longer attached"), "{err}");
        kernel::detach(&dir, Some(LB)).unwrap();
    });
}
