//! `GET /metrics` of the engine and of the controller, end to end on the seed's network
//! (shared/TESTBED.md): `ricochet controller` and `ricochet engine --controller
//! --metrics-listen 127.0.0.1:9480` in se1's namespace, the seed applied with the CLI,
//! curl from the client through the VIP; both endpoints scraped with curl, read with the
//! Prometheus client's text parser and linted with `promtool check metrics`; the counters
//! must move by exactly what the traffic implies. Needs root.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use ricochet_testbed::{self as tb, SeedBed, VIP_V4, VIP_V6};
use ricochet_testkit::prometheus::{promtool_check, Metrics};
use serde_json::Value;
use support::seed::{seed_bed, sigterm, Controlled as _, CONTROLLER};
use support::{wait_until, RICOCHET};

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples/seed.yaml");
/// The engine's metrics, on se1's loopback.
const ENGINE_METRICS: &str = "127.0.0.1:9480";
const WEB_VS: [(&str, &str); 4] = [
    ("name", "web-vs"),
    ("vip", "192.168.35.241"),
    ("port", "80"),
    ("protocol", "tcp"),
];
/// Connections the test opens through the VIP.
const REQUESTS: usize = 5;

/// `curl` of `http://{addr}/metrics` in se1's namespace (with `token`): the status and body.
fn curl_metrics(bed: &SeedBed, addr: &str, token: Option<&str>) -> (u16, String) {
    let url = format!("http://{addr}/metrics");
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec!["curl", "--silent", "--show-error", "--max-time", "5"];
    if let Some(a) = &auth {
        args.extend(["--header", a]);
    }
    args.extend(["--write-out", "\n%{http_code}", &url]);
    let out = bed.topo.se1.ns.output(&args).unwrap();
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), format!("{body}\n"))
}

/// A scrape that must succeed and pass promtool's lint.
fn scrape(bed: &SeedBed, addr: &str, token: Option<&str>) -> Metrics {
    let (status, text) = curl_metrics(bed, addr, token);
    assert_eq!(status, 200, "{text}");
    promtool_check(&text).unwrap_or_else(|e| panic!("promtool check metrics: {e}\n{text}"));
    Metrics::parse(&text)
}

fn server_labels(server: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut l = WEB_VS.to_vec();
    l.extend([("pool", "web-pool"), ("server", server)]);
    l
}

#[test]
fn engine_and_controller_metrics_follow_the_traffic() {
    let bed = seed_bed("metrics", &[VIP_V4.into(), VIP_V6.into()]);
    let topo = &bed.topo;
    let mut controller = bed.start_controller();
    let mut engine = bed.start_engine(&[
        "--metrics-listen",
        ENGINE_METRICS,
        // Count the flow table every second rather than every 30 s.
        "--flow-count-interval",
        "1",
    ]);
    assert!(
        engine.stderr().contains(&format!(
            "metrics on http://{ENGINE_METRICS}/metrics (no token (loopback))"
        )),
        "{}",
        engine.report()
    );
    bed.cli(&["apply", "-f", SEED, "--yes"]);
    let revision = {
        let v: Value =
            serde_json::from_str(&bed.cli(&["get", "configuration", "-o", "json"])).unwrap();
        v["revision"].as_u64().unwrap()
    };

    // The engine runs the revision, its monitors found both web servers up, and the
    // counters are in (the run loop publishes them every second).
    let before = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let m = scrape(&bed, ENGINE_METRICS, None);
        let up = |s| {
            m.get(
                "ricochet_server_health",
                &[("pool", "web-pool"), ("server", s), ("state", "up")],
            )
        };
        if m.get("ricochet_engine_controller_revision", &[]) == Some(revision as f64)
            && up("192.168.33.10") == Some(1.0)
            && up("192.168.34.10") == Some(1.0)
        {
            Ok(m)
        } else {
            Err(format!("the engine's metrics never showed revision {revision} with both servers up: {m:#?}"))
        }
    });
    for (name, kind) in [
        ("ricochet_virtual_service_packets_total", "counter"),
        ("ricochet_virtual_service_bytes_total", "counter"),
        ("ricochet_virtual_service_new_flows_total", "counter"),
        ("ricochet_server_packets_total", "counter"),
        ("ricochet_server_bytes_total", "counter"),
        ("ricochet_server_new_flows_total", "counter"),
        ("ricochet_server_weight", "gauge"),
        ("ricochet_server_health", "gauge"),
        ("ricochet_packets_total", "counter"),
        ("ricochet_flow_table_insert_failures_total", "counter"),
        ("ricochet_flow_table_non_syn_misses_total", "counter"),
        ("ricochet_engine_revision", "gauge"),
        ("ricochet_engine_controller_connected", "gauge"),
        ("ricochet_engine_apply_duration_seconds_count", "histogram"),
    ] {
        assert_eq!(before.kind(name), kind, "{name}");
    }
    assert_eq!(
        before.value("ricochet_engine_controller_connected", &[]),
        1.0
    );
    assert_eq!(before.value("ricochet_engine_attached", &[]), 1.0);
    assert!(before.value("ricochet_engine_apply_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(
        before.value("ricochet_server_weight", &server_labels("192.168.34.10")),
        1.0
    );
    // Every virtual service of the seed, with its labels.
    for (name, vip, port, protocol) in [
        ("web-vs-v6", "fc00:3::24a", "80", "tcp"),
        ("dns-vs", "192.168.35.241", "53", "udp"),
    ] {
        let labels = [
            ("name", name),
            ("vip", vip),
            ("port", port),
            ("protocol", protocol),
        ];
        before.value("ricochet_virtual_service_packets_total", &labels);
    }

    // Traffic: REQUESTS connections with curl, all from the client's one address, so
    // the source-IP hash sends them to one server.
    let mut answered = Vec::new();
    for _ in 0..REQUESTS {
        let who = tb::http_get_text(&topo.client.ns, &tb::http_url(IpAddr::V4(VIP_V4), "/"))
            .expect("curl through the VIP");
        answered.push(who.trim().to_owned());
    }
    answered.dedup();
    let [who] = &answered[..] else {
        panic!("one client address, one server: {answered:?}")
    };
    let (hit, missed) = match who.as_str() {
        "web01" => ("192.168.33.10", "192.168.34.10"),
        "web02" => ("192.168.34.10", "192.168.33.10"),
        other => panic!("answered by {other}"),
    };

    let new_flows = "ricochet_virtual_service_new_flows_total";
    let want = before.value(new_flows, &WEB_VS) + REQUESTS as f64;
    let after = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let m = scrape(&bed, ENGINE_METRICS, None);
        // A connection's last ACK may follow curl's exit by a moment: wait for the
        // counters to settle too.
        std::thread::sleep(Duration::from_millis(1200));
        let again = scrape(&bed, ENGINE_METRICS, None);
        let packets = "ricochet_virtual_service_packets_total";
        if m.value(new_flows, &WEB_VS) == want
            && m.value(packets, &WEB_VS) == again.value(packets, &WEB_VS)
        {
            Ok(again)
        } else {
            Err(format!(
                "new flows of web-vs: {} (want {want})",
                m.value(new_flows, &WEB_VS)
            ))
        }
    });
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let packets = delta("ricochet_virtual_service_packets_total", &WEB_VS);
    let bytes = delta("ricochet_virtual_service_bytes_total", &WEB_VS);
    println!("{REQUESTS} connections through web-vs: {packets} packets, {bytes} bytes");
    // Each connection: SYN, ACK, the request, the ACKs of the answer, FIN, last ACK.
    assert!(
        packets >= 5.0 * REQUESTS as f64,
        "{packets} packets for {REQUESTS} connections"
    );
    // Every frame holds at least Ethernet, IPv4 and TCP headers (14 + 20 + 20 bytes).
    assert!(
        bytes >= 54.0 * packets,
        "{bytes} bytes for {packets} packets"
    );
    // The client's packets reach one server: its counters moved by the service's, the
    // other's not at all.
    let (hit, missed) = (server_labels(hit), server_labels(missed));
    assert_eq!(
        delta("ricochet_server_new_flows_total", &hit),
        REQUESTS as f64
    );
    assert_eq!(delta("ricochet_server_packets_total", &hit), packets);
    assert_eq!(delta("ricochet_server_bytes_total", &hit), bytes);
    for name in [
        "ricochet_server_new_flows_total",
        "ricochet_server_packets_total",
        "ricochet_server_bytes_total",
    ] {
        assert_eq!(delta(name, &missed), 0.0, "{name} of the other server");
    }
    // Only this traffic went to a VIP: every forwarded packet is web-vs's.
    assert_eq!(
        delta(
            "ricochet_packets_total",
            &[("verdict", "tx"), ("reason", "forwarded")]
        ),
        packets
    );
    // Every connection began with a SYN: nothing missed the flow table.
    assert_eq!(delta("ricochet_flow_table_non_syn_misses_total", &[]), 0.0);
    assert_eq!(delta("ricochet_flow_table_insert_failures_total", &[]), 0.0);
    // The flow table's count holds these connections (recorded, seen within the idle
    // timeout), and the count is fresh.
    let counted = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let m = scrape(&bed, ENGINE_METRICS, None);
        let live = m.get("ricochet_virtual_service_live_flows", &WEB_VS);
        match live {
            Some(n) if n >= REQUESTS as f64 => Ok(m),
            _ => Err(format!(
                "web-vs's live flows: {live:?} (want {REQUESTS} or more)"
            )),
        }
    });
    for name in [
        "ricochet_flow_table_entries",
        "ricochet_flow_table_live_entries",
        "ricochet_flow_table_count_timestamp_seconds",
        "ricochet_virtual_service_live_flows",
    ] {
        assert_eq!(counted.kind(name), "gauge", "{name}");
    }
    let live = counted.value("ricochet_flow_table_live_entries", &[]);
    let entries = counted.value("ricochet_flow_table_entries", &[]);
    assert!(
        live >= REQUESTS as f64 && entries >= live,
        "{entries} entries, {live} live"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let age = now - counted.value("ricochet_flow_table_count_timestamp_seconds", &[]);
    assert!((-2.0..10.0).contains(&age), "counted {age} s ago");
    println!("flow table at the engine's count: {entries} entries, {live} live");

    // The controller: requests by route template, the store, the engine.
    let token = std::fs::read_to_string(bed.path("controller/admin-token")).unwrap();
    let token = token.trim();
    let (status, _) = curl_metrics(&bed, CONTROLLER, None);
    assert_eq!(status, 401, "the controller's metrics need a token");
    let ctl = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let m = scrape(&bed, CONTROLLER, Some(token));
        match m.get("ricochet_controller_engine_revision", &[("engine", "se1")]) {
            Some(r) if r == revision as f64 => Ok(m),
            other => Err(format!("se1's revision at the controller: {other:?}")),
        }
    });
    assert_eq!(
        ctl.value(
            "ricochet_controller_engines",
            &[("connection", "connected"), ("state", "running")]
        ),
        1.0
    );
    assert_eq!(
        ctl.value("ricochet_controller_engine_connected", &[("engine", "se1")]),
        1.0
    );
    // `apply` previews (dry run), then applies: two PUTs of the configuration.
    assert!(
        ctl.value(
            "ricochet_controller_http_requests_total",
            &[
                ("method", "PUT"),
                ("route", "/api/v1/configuration"),
                ("status", "200")
            ]
        ) >= 2.0
    );
    assert!(
        ctl.value(
            "ricochet_controller_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/api/v1/service-engines/{name}/report"),
                ("status", "200")
            ]
        ) >= 1.0
    );
    assert!(ctl
        .samples(
            "ricochet_controller_http_requests_total",
            &[("route", "/api/v1/desired")]
        )
        .next()
        .is_some());
    assert!(
        ctl.value(
            "ricochet_controller_store_commit_duration_seconds_count",
            &[]
        ) >= 2.0
    );
    assert!(ctl.value("ricochet_controller_config_revision", &[]) == revision as f64);

    // The controller stops: the engine says so.
    sigterm(&mut controller, Duration::from_secs(5));
    wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let m = scrape(&bed, ENGINE_METRICS, None);
        match m.value("ricochet_engine_controller_connected", &[]) {
            0.0 => Ok(()),
            v => Err(format!(
                "controller_connected still {v} after the controller stopped"
            )),
        }
    });
    sigterm(&mut engine, Duration::from_secs(3));
}

#[test]
fn metrics_beyond_loopback_need_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ricochet.yaml");
    std::fs::write(&config, "virtual_services: []\n").unwrap();
    let out = std::process::Command::new(RICOCHET)
        .args([
            "engine",
            "--interface",
            "lo",
            "--metrics-listen",
            "0.0.0.0:9480",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--metrics-token-file"), "{err}");
}
