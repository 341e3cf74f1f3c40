//! A service engine group of two engines behind ECMP, end to end on the seed's network
//! (shared/TESTBED.md): se1 (192.168.33.7, fc00::7) and se2 (192.168.33.8, fc00::8) each
//! run `ricochet engine` and BIRD 2; the router runs BIRD 2 too, peering with both over
//! IPv4 and IPv6 with BFD, and installs the VIP routes it learns as one ECMP route (no
//! static route: the seed's are removed first), hashed on the 5-tuple. Real nginx on web01
//! and web02, real TCP connections from the client. Needs root and bird2.
//!
//! The figures (convergence time, connections broken) are printed with `--nocapture`; the
//! assertions are on behaviour only.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ricochet_testbed::bird::{self, Bird, Neighbour, ENGINES_AS, ROUTER_AS};
use ricochet_testbed::{start_nginx, Host, Process, SeedBed, VIP_V4, VIP_V6};
use serde_json::Value;
use support::seed::{get_new, seed_bed, started, Conn, FLOWS};
use support::{wait_until, RICOCHET};

/// The group's configuration: the seed's web services over IPv4 and IPv6 in group g1, a
/// TCP monitor that marks a server down after 2 failed checks 2 s apart.
fn config() -> String {
    format!(
        "network_profiles:
  - {{ name: dsr-l3-tcp, type: tcp_fast_path, dsr: {{ enabled: true, type: l3, encapsulation: ipinip }} }}
health_monitors:
  - {{ name: web-tcp, type: tcp, send_interval: 2, receive_timeout: 1, successful_checks: 1, failed_checks: 2 }}
pools:
  - {{ name: web-pool, consistent_hash: source_ip_and_port, servers: [{{ ip: 192.168.33.10 }}, {{ ip: 192.168.34.10 }}], health_monitors: [web-tcp] }}
  - {{ name: web-pool-v6, servers: [{{ ip: 'fc00::10' }}, {{ ip: 'fc00:34::10' }}], health_monitors: [web-tcp] }}
service_engine_groups:
  - name: g1
    engines:
      - {{ name: se1, addresses: [192.168.33.7, 'fc00::7'] }}
      - {{ name: se2, addresses: [192.168.33.8, 'fc00::8'] }}
    bgp:
      local_as: {ENGINES_AS}
      peers: [{{ ip: 192.168.33.1, remote_as: {ROUTER_AS} }}, {{ ip: 'fc00::1', remote_as: {ROUTER_AS} }}]
      hold_time: 3
      bfd: true
      bfd_interval_ms: 100
virtual_services:
  - {{ name: web-vs, vip: {VIP_V4}, services: [{{ port: 80 }}], network_profile: dsr-l3-tcp, pool: web-pool, se_group: g1 }}
  - {{ name: web-vs-v6, vip: '{VIP_V6}', services: [{{ port: 80 }}], network_profile: dsr-l3-tcp, pool: web-pool-v6, se_group: g1 }}
"
    )
}

/// One engine host: its BIRD and its engine.
struct Member {
    name: &'static str,
    bird: Option<Bird>,
    engine: Option<Process>,
}

struct Group {
    bed: SeedBed,
    router: Bird,
    members: [Member; 2],
}

impl Group {
    fn new(test: &str) -> Group {
        let bed = seed_bed(test, &[VIP_V4.into(), VIP_V6.into()]);
        let topo = &bed.topo;
        // The VIP routes come from BGP only.
        topo.unroute_vip(VIP_V4.into()).unwrap();
        topo.unroute_vip(VIP_V6.into()).unwrap();
        topo.router
            .ns
            .set_sysctls(&[
                ("net.ipv4.fib_multipath_hash_policy", "1"),
                ("net.ipv6.fib_multipath_hash_policy", "1"),
            ])
            .unwrap();
        let neighbours = [
            Neighbour {
                name: "se1",
                ip: topo.se1.ipv4.into(),
            },
            Neighbour {
                name: "se2",
                ip: topo.se2.ipv4.into(),
            },
            Neighbour {
                name: "se1",
                ip: topo.se1.ipv6.into(),
            },
            Neighbour {
                name: "se2",
                ip: topo.se2.ipv6.into(),
            },
        ];
        let router = Bird::start(
            &topo.router.ns,
            bed.dir(),
            "router-bird",
            &bird::router_config(
                topo.router.lan_v4.into(),
                topo.router.lan_v4.into(),
                topo.router.lan_v6.into(),
                &neighbours,
                3,
                Some(100),
            ),
        )
        .unwrap();
        std::fs::write(bed.dir().join("group.yaml"), config()).unwrap();
        let mut group = Group {
            bed,
            router,
            members: [
                Member {
                    name: "se1",
                    bird: None,
                    engine: None,
                },
                Member {
                    name: "se2",
                    bird: None,
                    engine: None,
                },
            ],
        };
        for i in 0..2 {
            group.start_bird(i);
            group.start_engine(i);
        }
        group
    }

    fn host(&self, i: usize) -> &Host {
        [&self.bed.topo.se1, &self.bed.topo.se2][i]
    }

    fn include(&self, i: usize) -> std::path::PathBuf {
        self.bed
            .dir()
            .join(format!("{}-include.conf", self.members[i].name))
    }

    fn state(&self, i: usize) -> String {
        self.bed.path(&format!("{}-state", self.members[i].name))
    }

    fn bird_socket(&self, i: usize) -> String {
        self.bed.path(&format!("{}-bird.ctl", self.members[i].name))
    }

    fn start_bird(&mut self, i: usize) {
        let host = self.host(i);
        let conf = bird::engine_config(host.ipv4.into(), &self.include(i)).unwrap();
        let b = Bird::start(
            &host.ns,
            self.bed.dir(),
            &format!("{}-bird", self.members[i].name),
            &conf,
        )
        .unwrap();
        self.members[i].bird = Some(b);
    }

    fn start_engine(&mut self, i: usize) {
        let host = self.host(i);
        let pins = self.bed.pin_dir(self.members[i].name);
        let (config, state, socket, include) = (
            self.bed.path("group.yaml"),
            self.state(i),
            self.bird_socket(i),
            self.include(i).to_string_lossy().into_owned(),
        );
        let p = host
            .ns
            .spawn(&[
                RICOCHET,
                "engine",
                "--config",
                &config,
                "--name",
                self.members[i].name,
                "--interface",
                host.iface,
                "--pin-dir",
                pins.to_str().unwrap(),
                "--state-dir",
                &state,
                "--flows",
                FLOWS,
                "--bird-socket",
                &socket,
                "--bgp-include-file",
                &include,
                "--bgp-drain-time",
                "1",
            ])
            .unwrap();
        self.members[i].engine = Some(started(p, "engine running"));
    }

    /// The router's next hops for `vip` (empty: no route).
    fn next_hops(&self, vip: IpAddr) -> Vec<IpAddr> {
        let family = if vip.is_ipv4() { "-4" } else { "-6" };
        let out = self
            .bed
            .topo
            .router
            .ns
            .output(&["ip", family, "route", "show", &vip.to_string()])
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut hops: Vec<IpAddr> = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect();
        hops.sort();
        hops
    }

    /// Waits until the router routes `vip` over exactly `want` (within `within`); how
    /// long that took.
    fn wait_for_hops(&self, vip: IpAddr, want: &[IpAddr], within: Duration) -> Duration {
        let t = Instant::now();
        let mut want = want.to_vec();
        want.sort();
        wait_until(within, Duration::from_millis(10), || {
            let hops = self.next_hops(vip);
            if hops == want {
                Ok(t.elapsed())
            } else {
                Err(format!(
                    "the router routes {vip} via {hops:?}, not {want:?} after {within:?}\nrouter:\n{}\n{}",
                    self.router.birdc(&["show", "protocols"]).unwrap_or_default(),
                    self.reports()
                ))
            }
        })
    }

    /// Both engines' `ricochet status` and logs, for failure messages.
    fn reports(&self) -> String {
        let mut s = String::new();
        for i in 0..2 {
            if let Some(e) = &self.members[i].engine {
                s.push_str(&format!("--- {}:\n{}\n", self.members[i].name, e.report()));
            }
        }
        s
    }

    fn status(&self, i: usize, json: bool) -> String {
        let state = self.state(i);
        let mut args = vec![RICOCHET, "status", "--state-dir", &state];
        if json {
            args.push("--json");
        }
        let out = self.host(i).ns.output(&args).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Packets the engine forwarded for `service`.
    fn packets(&self, i: usize, service: &str) -> u64 {
        let v: Value = serde_json::from_str(&self.status(i, true)).unwrap();
        v["status"]["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["name"] == service)
            .map(|s| s["counters"]["packets"].as_u64().unwrap())
            .sum()
    }

    fn engine_ips(&self, v6: bool) -> Vec<IpAddr> {
        [&self.bed.topo.se1, &self.bed.topo.se2]
            .iter()
            .map(|h| h.addr(v6))
            .collect()
    }
}

/// `n` GETs on new connections to `vip`: answers per server, and failures.
fn spread(group: &Group, vip: IpAddr, n: usize) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut by_server = BTreeMap::new();
    let mut failed = Vec::new();
    for _ in 0..n {
        match get_new(&group.bed.topo, vip) {
            Ok(body) => *by_server.entry(body).or_insert(0) += 1,
            Err(e) => failed.push(e.to_string()),
        }
    }
    (by_server, failed)
}

/// What happened to connections while the router moved traffic off an engine.
struct UnderLoad {
    broken: Vec<String>,
}

/// Opens 1,000 keep-alive connections to `vip` (a GET on each), runs `act` (which makes
/// the router move traffic and answers how long that took) while a thread opens a new
/// connection every 20 ms, then sends a GET on every connection again.
fn under_load(
    g: &Group,
    vip: IpAddr,
    what: &str,
    act: impl FnOnce(&Group) -> Duration,
) -> UnderLoad {
    let mut conns: Vec<Conn> = (0..1000).map(|_| Conn::open_in(&g.bed.topo, vip)).collect();
    let mut first = BTreeMap::new();
    for c in &mut conns {
        let body = c.get().expect("GET before the change");
        *first.entry(body).or_insert(0usize) += 1;
    }
    let stop = AtomicBool::new(false);
    let (tried, failed_new) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let converged = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                tried.fetch_add(1, Ordering::Relaxed);
                if get_new(&g.bed.topo, vip).is_err() {
                    failed_new.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        let converged = act(g);
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        converged
    });
    let mut broken = Vec::new();
    for (i, c) in conns.iter_mut().enumerate() {
        if let Err(e) = c.get() {
            broken.push(format!("connection {i}: {e}"));
        }
    }
    println!(
        "{what}: router converged in {converged:?}; {} of 1000 keep-alive connections broken; \
         {} of {} new connections failed meanwhile (servers before: {first:?})",
        broken.len(),
        failed_new.load(Ordering::Relaxed),
        tried.load(Ordering::Relaxed),
    );
    UnderLoad { broken }
}

#[test]
fn a_group_of_two_engines_announces_spreads_fails_over_and_withdraws() {
    let mut g = Group::new("group");
    let (v4, v6): (IpAddr, IpAddr) = (VIP_V4.into(), VIP_V6.into());

    // Both engines announce both VIPs: the router has a two-way ECMP route for each.
    let took = g.wait_for_hops(v4, &g.engine_ips(false), Duration::from_secs(20));
    g.wait_for_hops(v6, &g.engine_ips(true), Duration::from_secs(20));
    println!("both engines' routes installed {took:?} after the engines ran");
    let status = g.status(0, false);
    for needle in [
        "BGP (service engine group g1, BIRD 2.",
        "peer 192.168.33.1",
        "established",
        "192.168.35.241",
        "announced",
        "serving: web-vs (2 of 2 servers up)",
    ] {
        assert!(status.contains(needle), "{needle:?} not in:\n{status}");
    }

    // 200 new connections from as many source ports spread over both engines and reach
    // both servers.
    let before = [g.packets(0, "web-vs"), g.packets(1, "web-vs")];
    let (by_server, failed) = spread(&g, v4, 200);
    assert!(
        failed.is_empty(),
        "{} of 200 failed: {failed:?}",
        failed.len()
    );
    let through = [
        g.packets(0, "web-vs") - before[0],
        g.packets(1, "web-vs") - before[1],
    ];
    println!("200 connections: servers {by_server:?}, packets through se1/se2 {through:?}");
    assert_eq!(by_server.len(), 2, "both servers answer: {by_server:?}");
    assert!(
        through.iter().all(|&p| p >= 100),
        "both engines carry connections (packets {through:?})"
    );
    let (_, failed) = spread(&g, v6, 20);
    assert!(failed.is_empty(), "IPv6: {failed:?}");

    // Every server of web-vs down: both engines withdraw its VIP (IPv6 stays announced).
    let stopped = Instant::now();
    for n in &mut g.bed.nginx {
        n.stop().unwrap();
    }
    let withdrawn = g.wait_for_hops(v4, &[], Duration::from_secs(15));
    let withdraw_time = stopped.elapsed();
    println!(
        "every server stopped: the router has no route to {v4} {withdraw_time:?} after \
         (monitor: 2 failed checks 2 s apart; route gone {withdrawn:?} into the wait)"
    );
    wait_until(Duration::from_secs(3), Duration::from_millis(100), || {
        let status = g.status(1, false);
        if status.contains("withdrawn")
            && status.contains("no server is up in virtual service web-vs")
        {
            Ok(())
        } else {
            Err(format!("se2's status does not say why:\n{status}"))
        }
    });
    // One server back: announced again by both.
    let started_at = Instant::now();
    let web01 = start_nginx(&g.bed.topo.web01.ns, "web01").unwrap();
    g.bed.nginx[0] = web01;
    g.wait_for_hops(v4, &g.engine_ips(false), Duration::from_secs(15));
    println!(
        "one server back: re-announced by both {:?} after",
        started_at.elapsed()
    );
    let web02 = start_nginx(&g.bed.topo.web02.ns, "web02").unwrap();
    g.bed.nginx[1] = web02;

    // Only se1's `ricochet` dies: BIRD keeps announcing and the pinned data plane keeps
    // forwarding, so se1 goes on carrying its share.
    let mut engine = g.members[0].engine.take().unwrap();
    engine.kill().unwrap();
    std::thread::sleep(Duration::from_secs(4)); // longer than the 3 s hold time
    assert_eq!(g.next_hops(v4), g.engine_ips(false), "the route stays");
    let before = g.packets(0, "web-vs");
    let (_, failed) = spread(&g, v4, 50);
    assert!(failed.is_empty(), "with se1's daemon dead: {failed:?}");
    assert!(
        g.packets(0, "web-vs") > before,
        "se1's pinned data plane still forwards"
    );
    assert!(g
        .status(0, false)
        .contains("the BGP daemon keeps announcing what the engine left"));
    g.start_engine(0); // adopts the pinned data plane

    // A clean stop of se2 under 1,000 keep-alive connections: it withdraws, drains for
    // --bgp-drain-time (forwarding meanwhile), then exits; se1 takes every connection.
    let mut se2 = g.members[1].engine.take().unwrap();
    let se1_only = [g.bed.topo.se1.ipv4.into()];
    let drain = under_load(&g, v4, "se2 drained", |g| {
        let t = Instant::now();
        se2.signal(libc::SIGTERM).unwrap();
        let converged = g.wait_for_hops(v4, &se1_only, Duration::from_secs(10));
        let status = se2
            .wait_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("se2 exits");
        assert!(status.success(), "{}", se2.report());
        assert!(
            t.elapsed() >= Duration::from_secs(1),
            "it drained for --bgp-drain-time"
        );
        assert!(
            se2.stderr()
                .contains("BGP: VIPs withdrawn; draining for 1 s"),
            "{}",
            se2.report()
        );
        converged
    });
    assert!(
        drain.broken.is_empty(),
        "connections broken by the drain: {:?}",
        drain.broken
    );
    g.start_engine(1);
    g.wait_for_hops(v4, &g.engine_ips(false), Duration::from_secs(15));

    // se1 dies as a host does (its link down, every process killed, BIRD included) under
    // 1,000 keep-alive connections and new connections arriving every 20 ms.
    let se1_bird = g.members[0].bird.take().unwrap();
    let se1_engine = g.members[0].engine.take().unwrap();
    let se2_only = [g.bed.topo.se2.ipv4.into()];
    let failure = under_load(&g, v4, "se1 failed", move |g| {
        let (mut bird, mut engine) = (se1_bird, se1_engine);
        let killed = Instant::now();
        let se1 = &g.bed.topo.se1;
        // A host that comes back has its addresses again.
        se1.ns
            .set_sysctls(&[(
                &format!("net.ipv6.conf.{}.keep_addr_on_down", se1.iface),
                "1",
            )])
            .unwrap();
        se1.ns.ip(&["link", "set", se1.iface, "down"]).unwrap();
        bird.process.kill().unwrap();
        engine.kill().unwrap();
        g.wait_for_hops(v4, &se2_only, Duration::from_secs(10));
        killed.elapsed()
    });
    assert!(
        failure.broken.is_empty(),
        "connections broken by the failover: {:?}",
        failure.broken
    );

    // se1 comes back without its BGP daemon: the engine runs and says why it cannot
    // announce.
    let se1 = &g.bed.topo.se1;
    se1.ns.ip(&["link", "set", se1.iface, "up"]).unwrap();
    g.start_engine(0);
    wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let status = g.status(0, false);
        if status.contains("ERROR: no BGP daemon answers on") && status.contains("install bird2") {
            Ok(())
        } else {
            Err(format!("no BGP error in se1's status:\n{status}"))
        }
    });
    assert!(g.members[0]
        .engine
        .as_ref()
        .unwrap()
        .stderr()
        .contains("BGP: no BGP daemon answers"));
}
