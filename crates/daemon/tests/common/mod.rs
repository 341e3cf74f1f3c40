//! What the daemon's in-process tests share: configurations, a runner over the in-memory
//! data plane, a guard that stops a loop.

use std::net::Ipv4Addr;
use std::path::Path;

use ricochet_daemon::{Control, Runner, RunnerOptions};
use ricochet_dataplane::kernel::AttachMode;
use ricochet_dataplane::memory::MemoryDataplane;
use ricochet_dataplane::Capacities;
use ricochet_engine::Engine;

/// A configuration of one pool (two servers of the VIP's family) and `services` virtual
/// services on the VIP `vip` (port 80, 81, ...). No health monitor: the test sends no packet.
pub fn config(vip: &str, services: u16) -> String {
    let mut text = String::from(
        "network_profiles:\n  - name: dsr\n    type: tcp_fast_path\n    dsr: { enabled: true, type: l3, encapsulation: ipinip }\n\
         pools:\n  - name: web-pool\n    servers:\n",
    );
    let servers = if vip.contains(':') {
        ["2001:db8:1::10", "2001:db8:1::11"]
    } else {
        ["192.0.2.10", "192.0.2.11"]
    };
    for ip in servers {
        text.push_str(&format!("      - {{ ip: \"{ip}\" }}\n"));
    }
    text.push_str("virtual_services:\n");
    for i in 0..services {
        text.push_str(&format!(
            "  - name: vs-{i}\n    vip: \"{vip}\"\n    services: [{{ port: {} }}]\n    network_profile: dsr\n    pool: web-pool\n",
            80 + i
        ));
    }
    text
}

/// A runner over the in-memory data plane with an IPv4 outer source only.
pub fn runner(state_dir: &Path) -> Runner<MemoryDataplane> {
    runner_named(state_dir, None)
}

/// [`runner`] for the engine named `name` (its service engine group's member).
pub fn runner_named(state_dir: &Path, name: Option<&str>) -> Runner<MemoryDataplane> {
    let caps = Capacities {
        maglev_slots: 65_537 * 4,
        ..Capacities::default()
    };
    let mut engine = Engine::new(MemoryDataplane::new(caps));
    let source_v4 = Some(Ipv4Addr::new(192, 0, 2, 7));
    engine
        .set_settings(&ricochet_engine::settings(source_v4, None, 0))
        .unwrap();
    Runner::new(
        engine,
        RunnerOptions {
            interface: "test0".into(),
            xdp_mode: AttachMode::Native,
            pin_dir: "/nonexistent/pins".into(),
            state_dir: state_dir.to_owned(),
            source_v4,
            source_v6: None,
            flow_scan: Default::default(),
            name: name.map(str::to_owned),
            hash_seed: 0,
            bgp: ricochet_daemon::bgp::BgpOptions {
                bird_socket: state_dir.join("no-bird.ctl"),
                include_file: state_dir.join("bird.conf"),
                drain: std::time::Duration::ZERO,
            },
        },
    )
    .unwrap()
}

/// Stops the loop when dropped, also when an assertion fails (the scope joins it).
pub struct StopOnDrop<'a>(pub &'a Control);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}
