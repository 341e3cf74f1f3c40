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
use support::seed::get_new;
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
    let mut g = GroupBed::new(RICOCHET, "group", &group_config(true))
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
}
