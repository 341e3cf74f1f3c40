//! Engines follow the controller, end to end on the seed's network (shared/TESTBED.md):
//! `ricochet controller` and `ricochet engine --controller` run in se1's namespace (the
//! all-in-one placement: the controller on the engine's host, reached on its loopback);
//! web01 and web02 are made DSR-ready by `ricochet server setup` and serve with nginx.
//! The operator configures through the CLI exactly as the seed does (`ricochet apply -f
//! seed.yaml`, then `ricochet replace pool`, `create vs`, `delete vs`), and every claim
//! is checked with real traffic from the client. Needs root.

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ricochet_testbed::{self as tb, Process, SeedBed, Topology, VIP_V4, VIP_V6};
use serde_json::Value;
use support::seed::{
    get_new, seed_bed, sigterm, started, Conn, Controlled as _, FileMode as _, CONTROLLER,
    ENGINE_STATE, FLOWS,
};
use support::{wait_until, RICOCHET};

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples/seed.yaml");
const WEB01: &str = "192.168.33.10";
const WEB02: &str = "192.168.34.10";

/// The seed's web pool with `disabled` marked `enabled: false`.
fn web_pool(disabled: Option<&str>) -> String {
    let server = |ip: &str| {
        let enabled = if Some(ip) == disabled {
            ", enabled: false"
        } else {
            ""
        };
        format!("  - {{ ip: {ip}{enabled} }}\n")
    };
    format!(
        "name: web-pool\nlb_algorithm: consistent_hash\nconsistent_hash: source_ip\n\
         health_monitors: [web-tcp]\nservers:\n{}{}",
        server(WEB01),
        server(WEB02)
    )
}

fn server_ip(name: &str) -> &'static str {
    match name {
        "web01" => WEB01,
        "web02" => WEB02,
        other => panic!("unknown server {other:?}"),
    }
}

fn seed(test: &str) -> SeedBed {
    seed_bed(test, &[VIP_V4.into(), VIP_V6.into()])
}

/// `ricochet engine --controller` on se1, with at most 2 VIPs (the seed has two) so that
/// a third one is refused for capacity.
fn start_engine(bed: &SeedBed) -> Process {
    bed.start_engine(&["--max-vips", "2"])
}

fn write(bed: &SeedBed, name: &str, text: &str) -> String {
    let path = bed.path(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn config_revision(bed: &SeedBed) -> u64 {
    let v: Value = serde_json::from_str(&bed.cli(&["get", "configuration", "-o", "json"])).unwrap();
    v["revision"].as_u64().unwrap()
}

/// Waits until the engine's report, as the controller shows it, satisfies `check`.
fn wait_for_report(bed: &SeedBed, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_until(Duration::from_secs(6), Duration::from_millis(100), || {
        let engine: Value =
            serde_json::from_str(&bed.cli(&["get", "se", "se1", "-o", "json"])).unwrap();
        if check(&engine["report"]["report"]) {
            Ok(engine)
        } else {
            Err(format!(
                "the engine's report never showed {what}: {engine:#}"
            ))
        }
    })
}

/// How long a change may take to reach the data plane before the test calls it lost.
/// A behaviour bound (the change propagates at all, with no restart), not a figure: the
/// figures are printed, and measured in milliseconds.
const REACH_BOUND: Duration = Duration::from_secs(10);

/// Opens new connections until one is answered by a server other than `from`; the time
/// since `since`, or `None` if new connections still reach `from` [`REACH_BOUND`] after it.
fn until_served_by_other(topo: &Topology, from: &str, since: Instant) -> Option<Duration> {
    let from = from.to_owned();
    topo.client
        .ns
        .run(move || loop {
            if let Ok(who) = Conn::open(IpAddr::V4(VIP_V4)).and_then(|mut c| c.get()) {
                if who != from {
                    return Some(since.elapsed());
                }
            }
            if since.elapsed() >= REACH_BOUND {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        })
        .unwrap()
}

fn other(server: &str) -> &'static str {
    if server == "web01" {
        "web02"
    } else {
        "web01"
    }
}

#[test]
fn engine_follows_the_controller_without_a_restart() {
    let bed = seed("follow");
    let topo = &bed.topo;
    let _controller = bed.start_controller();
    let applied = bed.cli(&["apply", "-f", SEED, "--yes"]);
    assert!(
        applied.contains("Applied: configuration revision"),
        "{applied}"
    );
    let engine = start_engine(&bed);

    // The seed's services, as configured through the CLI, answer.
    let first = get_new(topo, IpAddr::V4(VIP_V4)).expect("curl to the IPv4 VIP");
    assert!(first == "web01" || first == "web02", "{first}");
    let v6 = tb::http_get_text(&topo.client.ns, &tb::http_url(IpAddr::V6(VIP_V6), "/")).unwrap();
    assert!(matches!(v6.trim(), "web01" | "web02"), "{v6}");
    let revision = config_revision(&bed);
    wait_for_report(&bed, "running the configuration with counters", |r| {
        r["state"] == "running"
            && r["revision"] == revision
            && r["counters"]["reasons"]["forwarded"].as_u64() > Some(0)
            && r["counters"]["services"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["name"] == "web-vs"))
    });

    // Propagation: disable the server the client's source IP hashes to; time from just
    // before the CLI sends the change until a new connection lands elsewhere (an upper
    // bound: it includes the CLI's start and the API's commit). Then back the other way.
    let mut serving = first;
    for round in 1..=2 {
        let pool = write(&bed, "pool.yaml", &web_pool(Some(server_ip(&serving))));
        let start = Instant::now();
        bed.cli(&["replace", "pool", "-f", &pool]);
        let answered = start.elapsed();
        let propagation = until_served_by_other(topo, &serving, start).unwrap_or_else(|| {
            panic!(
                "disabling {serving} did not reach the data plane within {REACH_BOUND:?}\n{}",
                engine.report()
            )
        });
        println!(
            "propagation {round}: disabling {serving} reached the data plane {:.1} ms after \
             the change was sent (API answered after {:.1} ms)",
            propagation.as_secs_f64() * 1e3,
            answered.as_secs_f64() * 1e3
        );
        serving = other(&serving).to_owned();
        for _ in 0..5 {
            assert_eq!(get_new(topo, IpAddr::V4(VIP_V4)).unwrap(), serving);
        }
    }

    // A change the engine cannot run (a third VIP beyond --max-vips 2) is refused and
    // reported; the running configuration keeps forwarding.
    let extra = write(
        &bed,
        "extra-vs.yaml",
        "name: extra-vs\nvip: 192.168.35.242\nservices: [{ port: 80 }]\n\
         network_profile: dsr-l3-tcp\npool: web-pool\n",
    );
    let before = config_revision(&bed);
    bed.cli(&["create", "vs", "-f", &extra]);
    let refused = config_revision(&bed);
    let engine_view = wait_for_report(&bed, "the refusal", |r| r["state"] == "degraded");
    let report = &engine_view["report"]["report"];
    assert_eq!(report["revision"], before, "{engine_view:#}");
    let message = report["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("revision {refused} refused")) && message.contains("VIP"),
        "{message}"
    );
    assert_eq!(get_new(topo, IpAddr::V4(VIP_V4)).unwrap(), serving);
    assert!(
        bed.cli(&["get", "se"]).contains("degraded"),
        "`get se` shows the state"
    );

    bed.cli(&["delete", "vs", "extra-vs"]);
    let fixed = config_revision(&bed);
    wait_for_report(&bed, "running again", |r| {
        r["state"] == "running" && r["revision"] == fixed
    });
}

#[test]
fn engine_outlives_the_controller_and_catches_up() {
    let bed = seed("outage");
    let topo = &bed.topo;
    let mut controller = bed.start_controller();
    bed.cli(&["apply", "-f", SEED, "--yes"]);
    let mut engine = start_engine(&bed);
    let vip = IpAddr::V4(VIP_V4);
    let mut established = Conn::open_in(topo, vip);
    let serving = established.get().unwrap();

    // The controller dies: established and new connections keep working; the engine
    // says so once and keeps running.
    controller.kill().unwrap();
    engine
        .wait_for_output("lost the controller")
        .unwrap_or_else(|e| panic!("{e:#}"));
    for _ in 0..3 {
        assert_eq!(established.get().expect("established connection"), serving);
        assert_eq!(get_new(topo, vip).expect("new connection"), serving);
    }
    std::thread::sleep(Duration::from_millis(500)); // a few retries
    assert_eq!(
        engine.stderr().matches("lost the controller").count(),
        1,
        "the loss is logged once:\n{}",
        engine.report()
    );
    assert!(engine.try_wait().unwrap().is_none(), "{}", engine.report());

    // SIGTERM stops the engine promptly, even with the controller gone.
    let took = sigterm(&mut engine, Duration::from_secs(2));
    println!("engine stopped {took:?} after SIGTERM");

    // Without its data plane and without the controller, a restarted engine runs the
    // configuration it persisted.
    bed.detach(ENGINE_STATE);
    assert!(
        get_new(topo, vip).is_err(),
        "detached: the VIP must not answer"
    );
    let engine = start_engine(&bed);
    assert!(
        engine
            .stderr()
            .contains("starting with the configuration last applied from the controller"),
        "{}",
        engine.report()
    );
    assert_eq!(
        get_new(topo, vip).expect("persisted configuration"),
        serving
    );

    // The controller returns; a change made through it reaches the engine.
    let _controller = bed.start_controller();
    let pool = write(&bed, "pool.yaml", &web_pool(Some(server_ip(&serving))));
    let start = Instant::now();
    bed.cli(&["replace", "pool", "-f", &pool]);
    let caught_up = until_served_by_other(topo, &serving, start).unwrap_or_else(|| {
        panic!(
            "a change made after the controller's restart did not reach the data plane \
             within {REACH_BOUND:?}\n{}",
            engine.report()
        )
    });
    println!(
        "catch-up: a change made after the controller's restart reached the data plane in \
         {:.0} ms",
        caught_up.as_secs_f64() * 1e3
    );
    assert!(
        engine.stderr().contains("answers again"),
        "{}",
        engine.report()
    );
    let revision = config_revision(&bed);
    wait_for_report(&bed, "the new revision", |r| {
        r["state"] == "running" && r["revision"] == revision
    });
}

#[test]
fn all_in_one_serves_the_seed() {
    let bed = seed("aio");
    let topo = &bed.topo;
    let aio = topo
        .se1
        .ns
        .spawn(&[
            RICOCHET,
            "all-in-one",
            "--interface",
            topo.se1.iface,
            "--listen",
            CONTROLLER,
            "--state-dir",
            &bed.path("controller"),
            "--engine-state-dir",
            &bed.path(ENGINE_STATE),
            "--pin-dir",
            bed.pin_dir("se1").to_str().unwrap(),
            "--name",
            "se1",
            "--flows",
            FLOWS,
        ])
        .unwrap();
    let mut aio = started(aio, "engine running");
    assert!(
        aio.stderr().contains(&format!(
            "admin token in {}",
            bed.path("controller/admin-token")
        )),
        "says where the token is:\n{}",
        aio.report()
    );
    bed.cli(&["apply", "-f", SEED, "--yes"]);
    let revision = config_revision(&bed);
    wait_for_report(&bed, "the seed running", |r| {
        r["state"] == "running" && r["revision"] == revision
    });
    let who = get_new(topo, IpAddr::V4(VIP_V4)).expect("curl to the VIP");
    assert!(who == "web01" || who == "web02", "{who}");

    // SIGTERM stops both, promptly and cleanly.
    sigterm(&mut aio, Duration::from_secs(3));
}
