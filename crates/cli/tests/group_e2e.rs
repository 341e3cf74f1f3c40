//! A service engine group of two engines behind ECMP, end to end on the seed's network
//! (shared/TESTBED.md; the bed is `ricochet_testbed::group::GroupBed`): se1 and se2 each
//! run `ricochet engine` and BIRD 2, the router runs BIRD 2 with BFD and installs the VIP
//! routes it learns as one ECMP route (no static route). Real nginx on web01 and web02,
//! real TCP connections from the client. Needs root and bird2.
//!
//! The figures (convergence time, connections broken) are printed with `--nocapture`; the
//! assertions are on behaviour only. `cargo xtask bench -- scale-out` measures them.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ricochet_testbed::group::{group_config, lock, GroupBed, UnderLoad};
use ricochet_testbed::{start_nginx, VIP_V4, VIP_V6};
use support::seed::{get_new, Conn};
use support::{wait_until, RICOCHET};

/// `n` GETs on new connections to `vip`: answers per server, and failures.
fn spread(g: &GroupBed, vip: IpAddr, n: usize) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut by_server = BTreeMap::new();
    let mut failed = Vec::new();
    for _ in 0..n {
        match get_new(&g.bed.topo, vip) {
            Ok(body) => *by_server.entry(body).or_insert(0) += 1,
            Err(e) => failed.push(e.to_string()),
        }
    }
    (by_server, failed)
}

fn print(what: &str, u: &UnderLoad) {
    println!(
        "{what}: router converged in {:?}; {} of {} keep-alive connections broken; {} of {} new \
         connections failed meanwhile",
        u.converged,
        u.broken.len(),
        u.connections,
        u.new_failed,
        u.new_tried
    );
}

fn status(g: &GroupBed, i: usize) -> String {
    g.status(i, false).unwrap()
}

#[test]
fn a_group_of_two_engines_announces_spreads_fails_over_and_withdraws() {
    let mut g = GroupBed::new(RICOCHET, "group", &group_config(true, true), true)
        .unwrap_or_else(|e| panic!("building the group bed: {e:#}"));
    let (v4, v6): (IpAddr, IpAddr) = (VIP_V4.into(), VIP_V6.into());
    let within = Duration::from_secs(20);

    // Both engines announce both VIPs: the router has a two-way ECMP route for each.
    let took = g.wait_for_hops(v4, &g.engine_ips(false), within).unwrap();
    g.wait_for_hops(v6, &g.engine_ips(true), within).unwrap();
    println!("both engines' routes installed {took:?} after the engines ran");
    let st = status(&g, 0);
    for needle in [
        "BGP (service engine group g1, BIRD 2.",
        "peer 192.168.33.1",
        "established",
        "192.168.35.241",
        "announced",
        "serving: web-vs (2 of 2 servers up)",
    ] {
        assert!(st.contains(needle), "{needle:?} not in:\n{st}");
    }

    // 200 new connections from as many source ports spread over both engines and reach
    // both servers.
    let before = [
        g.packets(0, "web-vs").unwrap(),
        g.packets(1, "web-vs").unwrap(),
    ];
    let (by_server, failed) = spread(&g, v4, 200);
    assert!(
        failed.is_empty(),
        "{} of 200 failed: {failed:?}",
        failed.len()
    );
    let through = [
        g.packets(0, "web-vs").unwrap() - before[0],
        g.packets(1, "web-vs").unwrap() - before[1],
    ];
    println!("200 connections: servers {by_server:?}, packets through se1/se2 {through:?}");
    assert_eq!(by_server.len(), 2, "both servers answer: {by_server:?}");
    assert!(
        through.iter().all(|&p| p >= 100),
        "both engines carry connections (packets {through:?})"
    );
    let (_, failed) = spread(&g, v6, 20);
    assert!(failed.is_empty(), "IPv6: {failed:?}");

    // Every server down: both engines withdraw the VIPs.
    let stopped = Instant::now();
    for n in &mut g.bed.nginx {
        n.stop().unwrap();
    }
    g.wait_for_hops(v4, &[], Duration::from_secs(15)).unwrap();
    println!(
        "every server stopped: the router has no route to {v4} {:?} after (monitor: 2 failed \
         checks 2 s apart)",
        stopped.elapsed()
    );
    wait_until(Duration::from_secs(3), Duration::from_millis(100), || {
        let st = status(&g, 1);
        if st.contains("withdrawn") && st.contains("no server is up in virtual service web-vs") {
            Ok(())
        } else {
            Err(format!("se2's status does not say why:\n{st}"))
        }
    });
    // One server back: announced again by both.
    let back = Instant::now();
    g.bed.nginx[0] = start_nginx(&g.bed.topo.web01.ns, "web01").unwrap();
    g.wait_for_hops(v4, &g.engine_ips(false), Duration::from_secs(15))
        .unwrap();
    println!(
        "one server back: re-announced by both {:?} after",
        back.elapsed()
    );
    g.bed.nginx[1] = start_nginx(&g.bed.topo.web02.ns, "web02").unwrap();

    // Only se1's `ricochet` dies: BIRD keeps announcing and the pinned data plane keeps
    // forwarding, so se1 goes on carrying its share.
    lock(&g.members[0].engine).take().unwrap().kill().unwrap();
    std::thread::sleep(Duration::from_secs(4)); // longer than the 3 s hold time
    assert_eq!(
        g.next_hops(v4).unwrap(),
        g.engine_ips(false),
        "the route stays"
    );
    let before = g.packets(0, "web-vs").unwrap();
    let (_, failed) = spread(&g, v4, 50);
    assert!(failed.is_empty(), "with se1's daemon dead: {failed:?}");
    assert!(
        g.packets(0, "web-vs").unwrap() > before,
        "se1's pinned data plane still forwards"
    );
    assert!(status(&g, 0).contains("the BGP daemon keeps announcing what the engine left"));
    g.start_engine(0).unwrap(); // adopts the pinned data plane

    // A clean stop of se2 under 1,000 keep-alive connections and new ones every 20 ms:
    // withdraw, drain for --bgp-drain-time (forwarding meanwhile), exit; se1 takes them.
    let drain = g.under_load(v4, 1000, |g| g.drain(1, v4)).unwrap();
    print("se2 drained", &drain);
    assert!(
        drain.broken.is_empty(),
        "broken by the drain: {:?}",
        drain.broken
    );
    g.start_engine(1).unwrap();
    g.wait_for_hops(v4, &g.engine_ips(false), within).unwrap();

    // se1 dies as a host does (its link down, every process killed, BIRD included) under
    // the same load: its BFD session ends and the router moves everything to se2, which
    // picks the same servers.
    let failure = g.under_load(v4, 1000, |g| g.fail_host(0, v4)).unwrap();
    print("se1 failed", &failure);
    assert!(
        failure.broken.is_empty(),
        "broken by the failover: {:?}",
        failure.broken
    );

    // se1 comes back without its BGP daemon: the engine runs, forwards nothing new (no
    // route), and says why it cannot announce.
    g.restore_link(0).unwrap();
    g.start_engine(0).unwrap();
    wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let st = status(&g, 0);
        if st.contains("ERROR: no BGP daemon answers on") && st.contains("install bird2") {
            Ok(())
        } else {
            Err(format!("no BGP error in se1's status:\n{st}"))
        }
    });
    assert!(lock(&g.members[0].engine)
        .as_ref()
        .unwrap()
        .stderr()
        .contains("BGP: no BGP daemon answers"));

    // With its BIRD back se1 announces again; `ricochet detach` (its engine gone) withdraws
    // before it removes the data plane.
    g.start_bird(0).unwrap();
    let both = g.engine_ips(false);
    g.wait_for_hops(v4, &both, within).unwrap();
    lock(&g.members[0].engine).take().unwrap().kill().unwrap();
    let se1 = &g.bed.topo.se1;
    let pins = g.bed.pin_dir("se1");
    let state = g.state(0);
    let out = se1
        .ns
        .output(&[
            RICOCHET,
            "detach",
            "--interface",
            se1.iface,
            "--pin-dir",
            pins.to_str().unwrap(),
            "--state-dir",
            &state,
        ])
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && printed.contains("withdrew the VIPs from BGP"),
        "{printed}"
    );
    g.wait_for_hops(v4, &[g.bed.topo.se2.ipv4.into()], Duration::from_secs(10))
        .unwrap();
}

/// Waits until `check` holds on `ricochet get status -o json` (the controller's view).
fn wait_for_view(g: &GroupBed, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let view: serde_json::Value =
            serde_json::from_str(&g.cli(&["get", "status", "-o", "json"]).unwrap()).unwrap();
        if check(&view) {
            Ok(())
        } else {
            Err(format!("{what}: not in the controller's view:\n{view:#}"))
        }
    });
}

fn web_vs(view: &serde_json::Value) -> &serde_json::Value {
    view["virtual_services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "web-vs")
        .unwrap()
}

#[test]
fn engines_of_a_group_follow_the_controller_which_shows_their_bgp() {
    let g = GroupBed::with_controller(RICOCHET, "group-ctl", &group_config(true, true), true)
        .unwrap_or_else(|e| panic!("building the group bed: {e:#}"));
    let v4: IpAddr = VIP_V4.into();
    g.wait_for_hops(v4, &g.engine_ips(false), Duration::from_secs(20))
        .unwrap();

    // The controller shows each engine's sessions and announced VIPs.
    wait_for_view(&g, "both engines announce web-vs", |v| {
        web_vs(v)["announced_by"] == serde_json::json!(["se1", "se2"])
            && web_vs(v)["se_group"] == "g1"
            && v["bgp"][0]["announcement"]["sessions"][0]["state"] == "established"
    });
    let table = g.cli(&["get", "se"]).unwrap();
    for needle in [
        "BGP SESSIONS",
        "ANNOUNCED",
        "192.168.33.1 established",
        "192.168.35.241",
    ] {
        assert!(table.contains(needle), "{needle:?} not in:\n{table}");
    }
    let one = g.cli(&["get", "se", "se2"]).unwrap();
    assert!(
        one.contains("192.168.35.241 announced: serving: web-vs"),
        "{one}"
    );
    let events = g.cli(&["events"]).unwrap();
    assert!(
        events.contains("service-engines/se1/vips/192.168.35.241")
            && events.contains("announced")
            && events.contains("service-engines/se2/bgp/peers/192.168.33.1"),
        "{events}"
    );

    // A pool change through the CLI: both engines apply it, and connections established
    // before it whose server is unchanged go on, on either engine.
    let mut conns: Vec<(Conn, String)> = (0..200)
        .map(|_| {
            let mut c = Conn::open_in(&g.bed.topo, v4);
            let body = c.get().expect("GET before the change");
            (c, body)
        })
        .collect();
    let before = [
        g.packets(0, "web-vs").unwrap(),
        g.packets(1, "web-vs").unwrap(),
    ];
    let pool = g.bed.path("pool.yaml");
    std::fs::write(
        &pool,
        "name: web-pool\nconsistent_hash: source_ip_and_port\nhealth_monitors: [web-tcp]\n\
         servers: [{ ip: 192.168.33.10 }, { ip: 192.168.34.10, enabled: false }]\n",
    )
    .unwrap();
    g.cli(&["replace", "pool", "-f", &pool]).unwrap();
    let revision: serde_json::Value =
        serde_json::from_str(&g.cli(&["get", "configuration", "-o", "json"]).unwrap()).unwrap();
    let revision = revision["revision"].as_u64().unwrap();
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let engines: serde_json::Value =
            serde_json::from_str(&g.cli(&["get", "se", "-o", "json"]).unwrap()).unwrap();
        let runs: Vec<u64> = engines["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["report"]["report"]["revision"].as_u64())
            .collect();
        if runs.len() == 2 && runs.iter().all(|&r| r == revision) {
            Ok(())
        } else {
            Err(format!(
                "the engines run revisions {runs:?}, not {revision}"
            ))
        }
    });
    let mut kept = 0;
    for (c, body) in &mut conns {
        let again = c.get();
        if body == "web01" {
            assert_eq!(
                again.as_deref().ok(),
                Some("web01"),
                "an unchanged server's connection"
            );
            kept += 1;
        }
    }
    let through = [
        g.packets(0, "web-vs").unwrap() - before[0],
        g.packets(1, "web-vs").unwrap() - before[1],
    ];
    assert!(
        kept > 0 && through.iter().all(|&p| p > 0),
        "{kept} kept, {through:?}"
    );
    drop(conns);
    let (by_server, failed) = spread(&g, v4, 40);
    assert!(
        failed.is_empty() && by_server.keys().all(|s| s == "web01"),
        "{by_server:?} {failed:?}"
    );

    // A peer that refuses (the group says the router is in another AS): the sessions fail,
    // the VIP goes from the router, and the engines and the controller say why.
    let group = g.bed.path("seg.yaml");
    let seg = |remote_as: u32, se2: &str| {
        format!(
            "name: g1\nengines:\n  - {{ name: se1, addresses: [192.168.33.7, 'fc00::7'] }}\n  \
             - {{ name: se2, addresses: [{se2}, 'fc00::8'] }}\nbgp:\n  local_as: 65001\n  \
             peers: [{{ ip: 192.168.33.1, remote_as: {remote_as} }}, {{ ip: 'fc00::1', remote_as: 65000 }}]\n  \
             hold_time: 3\n  bfd: true\n  bfd_interval_ms: 100\n"
        )
    };
    std::fs::write(&group, seg(65099, "192.168.33.8")).unwrap();
    g.cli(&["replace", "seg", "-f", &group]).unwrap();
    g.wait_for_hops(v4, &[], Duration::from_secs(15)).unwrap();
    wait_for_view(&g, "the refused sessions", |v| {
        v["bgp"].as_array().unwrap().iter().all(|e| {
            e["announcement"]["sessions"][0]["state"] != "established"
                && e["announcement"]["sessions"][0]["info"]
                    .as_str()
                    .unwrap_or("")
                    .contains("Bad peer AS")
        })
    });
    // Each change of a session's state is an event (a flapping session shows as many).
    let events = g.cli(&["events"]).unwrap();
    assert!(
        events
            .lines()
            .any(|l| l.contains("service-engines/se1/bgp/peers/192.168.33.1")
                && l.contains("established -> ")),
        "{events}"
    );

    // An engine whose listed address is not on its interface announces nothing and says so.
    std::fs::write(&group, seg(65000, "192.168.33.9")).unwrap();
    g.cli(&["replace", "seg", "-f", &group]).unwrap();
    g.wait_for_hops(v4, &[g.bed.topo.se1.ipv4.into()], Duration::from_secs(20))
        .unwrap();
    wait_for_view(&g, "se2's address error", |v| {
        v["bgp"][1]["announcement"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("192.168.33.9") && e.contains("not have"))
    });
    let events = g.cli(&["events"]).unwrap();
    assert!(events.contains("service-engines/se2/bgp"), "{events}");
    std::fs::write(&group, seg(65000, "192.168.33.8")).unwrap();
    g.cli(&["replace", "seg", "-f", &group]).unwrap();
    g.wait_for_hops(v4, &g.engine_ips(false), Duration::from_secs(20))
        .unwrap();

    // The controller goes: the group keeps announcing and forwarding.
    lock(&g.controller).take().unwrap().kill().unwrap();
    std::thread::sleep(Duration::from_secs(4)); // past the hold time
    assert_eq!(g.next_hops(v4).unwrap(), g.engine_ips(false));
    let (_, failed) = spread(&g, v4, 40);
    assert!(failed.is_empty(), "with the controller down: {failed:?}");
}
