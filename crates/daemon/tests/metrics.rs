//! The engine's `/metrics` over the in-memory data plane: the families, their types and
//! labels as a Prometheus text parser reads them, the labels of servers of a pool one
//! service uses or several share, and the token beyond loopback. (Counters moving with
//! traffic: `crates/cli/tests/metrics_e2e.rs`, on the kernel's data plane.)

// This test needs no run loop, so not every helper is used.
#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::Duration;

use prometheus_parse::{Sample, Scrape, Value};
use ricochet_daemon::metrics::{serve, EngineMetrics, MetricsOptions};

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
}

fn samples<'a>(scrape: &'a Scrape, name: &str) -> Vec<&'a Sample> {
    scrape.samples.iter().filter(|s| s.metric == name).collect()
}

fn apply(
    runner: &mut ricochet_daemon::Runner<ricochet_dataplane::memory::MemoryDataplane>,
    text: &str,
) {
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
    let scrape = parse(&metrics.encode());
    let vs = samples(&scrape, "ricochet_virtual_service_packets_total");
    assert_eq!(vs.len(), 1);
    assert_eq!(vs[0].labels.get("name"), Some("vs-0"));
    assert_eq!(vs[0].labels.get("vip"), Some("192.0.2.100"));
    assert_eq!(vs[0].labels.get("port"), Some("80"));
    assert_eq!(vs[0].labels.get("protocol"), Some("tcp"));
    assert!(matches!(vs[0].value, Value::Counter(v) if v == 0.0));
    for family in [
        "ricochet_server_packets_total",
        "ricochet_server_bytes_total",
        "ricochet_server_new_flows_total",
    ] {
        let s = samples(&scrape, family);
        let mut servers: Vec<_> = s.iter().map(|s| s.labels.get("server").unwrap()).collect();
        servers.sort();
        assert_eq!(servers, ["192.0.2.10", "192.0.2.11"], "{family}");
        assert!(s.iter().all(|s| s.labels.get("name") == Some("vs-0")
            && s.labels.get("pool") == Some("web-pool")
            && matches!(s.value, Value::Counter(_))));
    }
    let weights = samples(&scrape, "ricochet_server_weight");
    assert_eq!(weights.len(), 2);
    assert!(weights.iter().all(|s| s.value == Value::Gauge(1.0)));
    // No monitor: servers are up ("no health monitor"), one series per state.
    let health = samples(&scrape, "ricochet_server_health");
    assert_eq!(health.len(), 6);
    for s in &health {
        let expect = if s.labels.get("state") == Some("up") {
            1.0
        } else {
            0.0
        };
        assert_eq!(s.value, Value::Gauge(expect), "{s:?}");
    }
    let reasons = samples(&scrape, "ricochet_packets_total");
    assert_eq!(reasons.len(), ricochet_common::Reason::ALL.len());
    assert!(reasons
        .iter()
        .any(|s| s.labels.get("reason") == Some("drop_no_service")
            && s.labels.get("verdict") == Some("drop")));
    for name in [
        "ricochet_flow_table_insert_failures_total",
        "ricochet_flow_table_non_syn_misses_total",
    ] {
        assert!(
            matches!(samples(&scrape, name)[..], [s] if s.value == Value::Counter(0.0)),
            "{name}"
        );
    }
    assert_eq!(
        samples(&scrape, "ricochet_engine_revision")[0].value,
        Value::Gauge(1.0)
    );
    let applies = samples(&scrape, "ricochet_engine_apply_duration_seconds");
    assert!(
        matches!(&applies[0].value, Value::Histogram(b) if b.last().unwrap().count == 1.0),
        "{applies:?}"
    );

    // Two services share the pool: the servers' counters are not per service.
    apply(&mut runner, &common::config("192.0.2.100", 2));
    let scrape = parse(&metrics.encode());
    assert_eq!(
        samples(&scrape, "ricochet_virtual_service_bytes_total").len(),
        2
    );
    let servers = samples(&scrape, "ricochet_server_packets_total");
    assert_eq!(servers.len(), 2);
    assert!(servers
        .iter()
        .all(|s| s.labels.get("name").unwrap_or("").is_empty()));
    assert_eq!(
        samples(&scrape, "ricochet_engine_revision")[0].value,
        Value::Gauge(2.0)
    );
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
    let scrape = parse(&r.body_mut().read_to_string().unwrap());
    assert_eq!(
        samples(&scrape, "ricochet_engine_attached")[0].value,
        Value::Gauge(0.0)
    );
}
