//! Health monitoring end to end on the seed's network (shared/TESTBED.md): `ricochet
//! controller` and `ricochet engine --controller` in se1's namespace; web01 and web02
//! DSR-ready (`ricochet server setup`) and serving with nginx. The operator configures
//! through the CLI object by object as the seed does (network profile, health monitors,
//! pool, virtual service); then nginx stops and starts on web01, and the VIP leaves and
//! returns to web01's lo, and every claim is checked through the API, the CLI and real
//! traffic from the client. Needs root.
//!
//! The monitors use the smallest timing Avi's limits allow (send_interval 2 s,
//! receive_timeout 1 s, rise 2, fall 2): a server is down within interval × fall = 4 s of
//! failing and back within interval × rise = 4 s of answering again.

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ricochet_testbed::{self as tb, SeedBed, Topology, VIP_V4};
use serde_json::Value;
use support::seed::{get_new, seed_bed, Controlled as _, FileMode as _, ENGINE_STATE};

const WEB01: &str = "192.168.33.10";
const WEB02: &str = "192.168.34.10";
/// send_interval × failed_checks, and × successful_checks.
const FALL_TIME: Duration = Duration::from_secs(4);
const RISE_TIME: Duration = Duration::from_secs(4);
/// receive_timeout: a failure by timeout is known only when the check times out, so
/// detection by timeouts may take up to interval × fall + receive_timeout.
const TIMEOUT: Duration = Duration::from_secs(1);
/// What detection may take beyond interval × fall: the check's own time and the report
/// reaching the controller (milliseconds), and this test's polling of the API, on a
/// loaded machine. Kept under one interval (2 s), so that a monitor that waited one
/// check more than `fall` or `rise` still fails the test.
const SLACK: Duration = Duration::from_millis(1500);

const NETWORK_PROFILE: &str = "name: dsr-l3-tcp
type: tcp_fast_path
dsr: { enabled: true, type: l3, encapsulation: ipinip }
session_idle_timeout: 300
";
/// A direct TCP monitor, and the same through the VIP path.
const MONITOR_TCP: &str = "name: web-tcp
type: tcp
send_interval: 2
receive_timeout: 1
successful_checks: 2
failed_checks: 2
";
const MONITOR_DSR: &str = "name: web-dsr-path
type: tcp
send_interval: 2
receive_timeout: 1
successful_checks: 2
failed_checks: 2
dsr_path: true
";
/// Source IP and port: one client's new connections spread over both servers, so that
/// "every new connection lands on web02" says something.
const POOL: &str = "name: web-pool
lb_algorithm: consistent_hash
consistent_hash: source_ip_and_port
servers:
  - { ip: 192.168.33.10 }
  - { ip: 192.168.34.10 }
health_monitors: [web-tcp, web-dsr-path]
";
const VIRTUAL_SERVICE: &str = "name: web-vs
vip: 192.168.35.241
services: [{ port: 80 }]
application_profile: System-L4-Application
network_profile: dsr-l3-tcp
pool: web-pool
";

fn create(bed: &SeedBed, kind: &str, name: &str, text: &str) {
    let path = bed.path(&format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    bed.cli(&["create", kind, "-f", &path]);
}

/// web-vs in the controller's status view.
fn web_vs(bed: &SeedBed) -> Value {
    let view: Value = serde_json::from_str(&bed.cli(&["get", "status", "-o", "json"])).unwrap();
    view["virtual_services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|vs| vs["name"] == "web-vs")
        .cloned()
        .expect("web-vs in the status view")
}

/// Polls the status view until `check` holds; the time since `since` and the view.
fn wait_status(
    bed: &SeedBed,
    what: &str,
    since: Instant,
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> (Duration, Value) {
    loop {
        let vs = web_vs(bed);
        if check(&vs) {
            return (since.elapsed(), vs);
        }
        assert!(
            since.elapsed() < limit,
            "{what}: not within {limit:?}: {vs:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn server<'a>(vs: &'a Value, ip: &str) -> &'a Value {
    vs["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["ip"] == ip)
        .unwrap()
}

/// `n` HTTP GETs, each on a new connection from the client; who answered each (or the
/// error).
fn curl_many(topo: &Topology, n: usize) -> Vec<Result<String, String>> {
    (0..n)
        .map(|_| get_new(topo, IpAddr::V4(VIP_V4)).map_err(|e| e.to_string()))
        .collect()
}

fn served_by(results: &[Result<String, String>]) -> std::collections::BTreeMap<String, usize> {
    let mut by = std::collections::BTreeMap::new();
    for r in results {
        let key = match r {
            Ok(who) => who.clone(),
            Err(e) => format!("error: {e}"),
        };
        *by.entry(key).or_insert(0) += 1;
    }
    by
}

#[test]
fn monitors_take_servers_out_and_back_and_check_the_dsr_path() {
    let started = Instant::now();
    let mut bed = seed_bed("health", &[VIP_V4.into()]);
    let _controller = bed.start_controller();
    create(&bed, "netprof", "netprof", NETWORK_PROFILE);
    create(&bed, "hm", "hm-tcp", MONITOR_TCP);
    create(&bed, "hm", "hm-dsr", MONITOR_DSR);
    create(&bed, "pool", "pool", POOL);
    create(&bed, "vs", "vs", VIRTUAL_SERVICE);
    let mut engine = bed.start_engine(&[]);
    engine
        .wait_for_output("DSR probe encapsulator attached")
        .unwrap_or_else(|e| panic!("{e:#}\n{}", engine.report()));

    // Both servers up, the service up; new connections reach both.
    let (_, vs) = wait_status(
        &bed,
        "web-vs up",
        Instant::now(),
        Duration::from_secs(5),
        |vs| vs["state"] == "up",
    );
    println!("web-vs: {} ({})", vs["state"], vs["reason"]);
    let both = served_by(&curl_many(&bed.topo, 40));
    assert_eq!(
        both.keys().cloned().collect::<Vec<_>>(),
        ["web01", "web02"],
        "{both:?}"
    );

    // nginx stops on web01: down within interval × fall, the service degraded with the
    // reason; every new connection lands on web02.
    bed.nginx[0].stop().unwrap();
    let stopped = Instant::now();
    let (detection, vs) = wait_status(
        &bed,
        "web01 down",
        stopped,
        FALL_TIME + SLACK + Duration::from_secs(3),
        |vs| server(vs, WEB01)["state"] == "down",
    );
    println!(
        "detection: web01 marked down {:.0} ms after nginx stopped (interval × fall = {} s): {}",
        detection.as_secs_f64() * 1e3,
        FALL_TIME.as_secs(),
        vs["reason"]
    );
    assert!(detection <= FALL_TIME + SLACK, "took {detection:?}");
    assert_eq!(vs["state"], "degraded", "{vs:#}");
    let reason = vs["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("1 of 2 servers down: 192.168.33.10 ")
            && reason.contains("connection refused"),
        "{reason}"
    );
    assert_eq!(server(&vs, WEB02)["state"], "up");
    let after = served_by(&curl_many(&bed.topo, 60));
    assert_eq!(
        after.keys().cloned().collect::<Vec<_>>(),
        ["web02"],
        "every new connection lands on web02: {after:?}\n{}",
        engine.report()
    );
    let table = bed.cli(&["get", "status"]);
    println!("{table}");
    assert!(
        table.contains("degraded") && table.contains("connection refused"),
        "{table}"
    );
    // The engine's own status (the same as a file-mode engine's) shows it too.
    let status = bed.status_of(ENGINE_STATE);
    assert!(
        status.contains("Servers down (health monitors):")
            && status.contains("192.168.33.10 in web-pool since"),
        "{status}"
    );
    let events = bed.cli(&["events"]);
    assert!(
        events.contains("service-engines/se1/pools/web-pool/servers/192.168.33.10")
            && events.contains("connection refused"),
        "{events}"
    );

    // nginx back on web01: up within interval × rise; new connections reach it again.
    bed.nginx[0] = tb::start_nginx(&bed.topo.web01.ns, "web01").unwrap();
    let restarted = Instant::now();
    let (back, vs) = wait_status(
        &bed,
        "web01 up again",
        restarted,
        RISE_TIME + SLACK + Duration::from_secs(3),
        |vs| server(vs, WEB01)["state"] == "up",
    );
    println!(
        "return: web01 up {:.0} ms after nginx started again (interval × rise = {} s)",
        back.as_secs_f64() * 1e3,
        RISE_TIME.as_secs()
    );
    assert!(back <= RISE_TIME + SLACK, "took {back:?}");
    assert_eq!(vs["state"], "up", "{vs:#}");
    let again = served_by(&curl_many(&bed.topo, 40));
    assert!(again.contains_key("web01") && again.len() == 2, "{again:?}");

    // The VIP leaves web01's lo; nginx still answers on 192.168.33.10, so the direct
    // monitor stays up and the path-checking one marks it down, saying why.
    let web01_ns = &bed.topo.web01.ns;
    let vip = format!("{VIP_V4}/32");
    assert!(web01_ns
        .ip(&["addr", "del", &vip, "dev", "lo"])
        .unwrap()
        .status
        .success());
    let removed = Instant::now();
    let (detection, vs) = wait_status(
        &bed,
        "web01 down for its DSR path",
        removed,
        FALL_TIME + SLACK + Duration::from_secs(3),
        |vs| server(vs, WEB01)["state"] == "down",
    );
    let web01_reason = server(&vs, WEB01)["reason"].as_str().unwrap().to_owned();
    println!(
        "DSR path: web01 marked down {:.0} ms after its VIP left lo: {web01_reason}",
        detection.as_secs_f64() * 1e3
    );
    // Through the VIP the packets vanish (no VIP to answer them): failures by timeout.
    assert!(
        detection <= FALL_TIME + TIMEOUT + SLACK,
        "took {detection:?}"
    );
    assert!(
        web01_reason.contains("monitor web-dsr-path")
            && web01_reason
                .contains("answers on its own address 192.168.33.10 but not through the VIP path")
            && !web01_reason.contains("monitor web-tcp"),
        "{web01_reason}"
    );
    assert_eq!(vs["state"], "degraded", "{vs:#}");
    let table = bed.cli(&["get", "status"]);
    assert!(table.contains("not through the VIP path"), "{table}");
    let after = served_by(&curl_many(&bed.topo, 40));
    assert_eq!(
        after.keys().cloned().collect::<Vec<_>>(),
        ["web02"],
        "{after:?}"
    );

    // The VIP back: web01 up, the service up.
    assert!(web01_ns
        .ip(&["addr", "add", &vip, "dev", "lo"])
        .unwrap()
        .status
        .success());
    let (back, vs) = wait_status(
        &bed,
        "web-vs up again",
        Instant::now(),
        RISE_TIME + SLACK + Duration::from_secs(3),
        |vs| vs["state"] == "up",
    );
    println!(
        "DSR path: web01 up again {:.0} ms after its VIP returned",
        back.as_secs_f64() * 1e3
    );
    // A check in flight when the VIP returned may still time out.
    assert!(back <= RISE_TIME + TIMEOUT + SLACK, "took {back:?}");
    assert_eq!(server(&vs, WEB01)["state"], "up", "{vs:#}");
    let again = served_by(&curl_many(&bed.topo, 40));
    assert!(again.contains_key("web01") && again.len() == 2, "{again:?}");
    assert!(
        engine
            .stderr()
            .contains("server down: it leaves the pool's Maglev table"),
        "{}",
        engine.report()
    );
    println!("{vs:#}\ntest took {:?}", started.elapsed());
}
