//! The engine's `/metrics` over the in-memory data plane: the families, their types and
//! labels as the Prometheus client's parser reads them and promtool lints them, the labels
//! of servers of a pool one service uses or several share, and the token beyond
//! loopback. (Counters moving with traffic: `crates/cli/tests/metrics_e2e.rs`, on the
//! kernel's data plane.)

// This test needs no run loop, so not every helper is used.
#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::Duration;

use ricochet_daemon::metrics::{serve, EngineMetrics, MetricsOptions};
use ricochet_dataplane::memory::MemoryDataplane;
use ricochet_testkit::prometheus::{promtool_check, Metrics};

fn apply(runner: &mut ricochet_daemon::Runner<MemoryDataplane>, text: &str) {
    let config = ricochet_config::Config::from_yaml_str(text).unwrap();
    let desired = config.compile().unwrap();
    runner.apply(&config, &desired).unwrap();
}

#[test]
fn families_types_and_labels_follow_what_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = common::runner(dir.path());
    let metrics = Arc::new(EngineMetrics::default());
    runner.set_metrics(metrics.clone());

    // One service on the pool: its servers carry the service's labels.
    apply(&mut runner, &common::config("192.0.2.100", 1));
    let text = metrics.encode();
    promtool_check(&text).unwrap_or_else(|e| panic!("promtool: {e}\n{text}"));
    let m = Metrics::parse(&text);
    let vs = [
        ("name", "vs-0"),
        ("vip", "192.0.2.100"),
        ("port", "80"),
        ("protocol", "tcp"),
    ];
    for name in [
        "ricochet_virtual_service_packets_total",
        "ricochet_virtual_service_bytes_total",
        "ricochet_virtual_service_new_flows_total",
    ] {
        assert_eq!(m.kind(name), "counter", "{name}");
        assert_eq!(m.value(name, &vs), 0.0, "{name}");
    }
    for name in [
        "ricochet_server_packets_total",
        "ricochet_server_bytes_total",
        "ricochet_server_new_flows_total",
    ] {
        assert_eq!(m.kind(name), "counter");
        for server in ["192.0.2.10", "192.0.2.11"] {
            let mut labels = vs.to_vec();
            labels.extend([("pool", "web-pool"), ("server", server)]);
            assert_eq!(m.value(name, &labels), 0.0, "{name} {server}");
        }
    }
    assert_eq!(m.kind("ricochet_server_weight"), "gauge");
    assert_eq!(
        m.value("ricochet_server_weight", &[("server", "192.0.2.10")]),
        1.0
    );
    // No monitor: servers are up ("no health monitor"), one series per state.
    for (state, v) in [("up", 1.0), ("down", 0.0), ("unknown", 0.0)] {
        assert_eq!(
            m.value(
                "ricochet_server_health",
                &[("server", "192.0.2.11"), ("state", state)]
            ),
            v
        );
    }
    assert_eq!(
        m.samples("ricochet_packets_total", &[]).count(),
        ricochet_common::Reason::ALL.len()
    );
    assert_eq!(
        m.value(
            "ricochet_packets_total",
            &[("reason", "drop_no_service"), ("verdict", "drop")]
        ),
        0.0
    );
    for name in [
        "ricochet_flow_table_insert_failures_total",
        "ricochet_flow_table_non_syn_misses_total",
    ] {
        assert_eq!(m.kind(name), "counter");
        assert_eq!(m.value(name, &[]), 0.0, "{name}");
    }
    assert_eq!(m.value("ricochet_engine_revision", &[]), 1.0);
    assert_eq!(
        m.kind("ricochet_engine_apply_duration_seconds_count"),
        "histogram"
    );
    assert_eq!(
        m.value("ricochet_engine_apply_duration_seconds_count", &[]),
        1.0
    );

    // Two services share the pool: the servers' counters are not per service, so their
    // service labels are empty (absent, to Prometheus).
    apply(&mut runner, &common::config("192.0.2.100", 2));
    let m = Metrics::parse(&metrics.encode());
    assert_eq!(
        m.samples("ricochet_virtual_service_bytes_total", &[])
            .count(),
        2
    );
    let servers: Vec<_> = m.samples("ricochet_server_packets_total", &[]).collect();
    assert_eq!(servers.len(), 2);
    assert!(servers.iter().all(
        |s| s.labels.get("name").is_none_or(|n| n.is_empty()) && s.labels["pool"] == "web-pool"
    ));
    assert_eq!(m.value("ricochet_engine_revision", &[]), 2.0);
}

#[test]
fn the_endpoint_wants_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics-token");
    let token = "metrics-0123456789abcdef";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let metrics = Arc::new(EngineMetrics::default());
    let options = MetricsOptions::new("127.0.0.1:0".parse().unwrap(), Some(token_file)).unwrap();
    let addr = serve(&options, metrics).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("http://{addr}/metrics");
    let r = agent.get(&url).call().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("www-authenticate").is_some());
    let r = agent
        .get(&url)
        .header("Authorization", "Bearer metrics-wrong-token-000")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let mut r = agent
        .get(&url)
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers().get("content-type").unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let m = Metrics::parse(&r.body_mut().read_to_string().unwrap());
    assert_eq!(m.value("ricochet_engine_attached", &[]), 0.0);
}
