//! The controller's `GET /metrics`: a token needed, requests counted by route template
//! and status, the store's revision and commits, engines by state; read with the
//! Prometheus client's text parser and linted by promtool.

mod common;

use std::time::Duration;

use common::{network_profile, Ctl};
use ricochet_testkit::prometheus::{promtool_check, Metrics};
use serde_json::json;

fn scrape(ctl: &Ctl, token: Option<&str>) -> (u16, String, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut request = agent.get(format!("{}/metrics", ctl.url));
    if let Some(t) = token {
        request = request.header("Authorization", format!("Bearer {t}"));
    }
    let mut r = request.call().unwrap();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        r.status().as_u16(),
        r.body_mut().read_to_string().unwrap(),
        content_type,
    )
}

fn counted(m: &Metrics, method: &str, route: &str, status: &str) -> f64 {
    m.get(
        "ricochet_controller_http_requests_total",
        &[("method", method), ("route", route), ("status", status)],
    )
    .unwrap_or(0.0)
}

fn commits(m: &Metrics) -> f64 {
    m.value(
        "ricochet_controller_store_commit_duration_seconds_count",
        &[],
    )
}

#[test]
fn metrics_need_a_token_and_count_routes_the_store_and_engines() {
    let ctl = Ctl::start();
    let (status, _, _) = scrape(&ctl, None);
    assert_eq!(status, 401, "no token, no metrics");
    let (status, _, _) = scrape(&ctl, Some("rct_wrong"));
    assert_eq!(status, 401);

    let (status, text, content_type) = scrape(&ctl, Some(&ctl.token));
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    promtool_check(&text).unwrap_or_else(|e| panic!("promtool: {e}\n{text}"));
    let before = Metrics::parse(&text);
    let commits_before = commits(&before);

    ctl.post("/api/v1/network-profiles", network_profile())
        .expect(201);
    ctl.get("/api/v1/network-profiles/dsr-l3-tcp").expect(200);
    ctl.get("/api/v1/network-profiles/nothing-by-this-name")
        .expect(404);
    ctl.get("/api/v1/no-such-route").expect(404);
    ctl.raw("GET", "/api/v1/pools", Some("rct_wrong"), None, None);
    ctl.post(
        "/api/v1/service-engines",
        json!({"name": "se1", "addresses": ["192.168.33.7"], "version": "test"}),
    )
    .expect(201);
    let revision = ctl.revision();
    ctl.post(
        "/api/v1/service-engines/se1/report",
        json!({"revision": revision, "state": "running",
               "counters": {"services": [], "servers": [], "reasons": {}}, "servers": []}),
    );

    let (_, text, _) = scrape(&ctl, Some(&ctl.token));
    promtool_check(&text).unwrap_or_else(|e| panic!("promtool: {e}\n{text}"));
    let after = Metrics::parse(&text);
    assert_eq!(
        after.kind("ricochet_controller_http_requests_total"),
        "counter"
    );
    // Route templates, not raw paths: both shows are one series.
    assert_eq!(
        counted(&after, "POST", "/api/v1/network-profiles", "201"),
        1.0
    );
    assert_eq!(
        counted(&after, "GET", "/api/v1/network-profiles/{name}", "200"),
        1.0
    );
    assert_eq!(
        counted(&after, "GET", "/api/v1/network-profiles/{name}", "404"),
        1.0
    );
    assert_eq!(counted(&after, "GET", "unmatched", "404"), 1.0, "{text}");
    assert_eq!(counted(&after, "GET", "/api/v1/pools", "401"), 1.0);
    assert_eq!(counted(&after, "GET", "/metrics", "401"), 2.0);
    assert_eq!(counted(&after, "GET", "/metrics", "200"), 1.0);
    assert!(!text.contains("nothing-by-this-name"), "{text}");
    assert_eq!(
        after.value(
            "ricochet_controller_http_request_duration_seconds_count",
            &[("method", "POST"), ("route", "/api/v1/network-profiles")]
        ),
        1.0
    );

    // The create and the registration committed (the report commits its events).
    assert!(commits(&after) >= commits_before + 2.0, "{text}");
    let store_revision = ctl.get("/healthz").expect(200).body["revision"]
        .as_u64()
        .unwrap();
    assert_eq!(
        after.value("ricochet_controller_store_revision", &[]),
        store_revision as f64
    );
    assert!(after.value("ricochet_controller_config_revision", &[]) >= 1.0);
    assert_eq!(
        after.get(
            "ricochet_controller_engines",
            &[("connection", "connected"), ("state", "running")]
        ),
        Some(1.0)
    );
    assert_eq!(
        after.get(
            "ricochet_controller_engines",
            &[("connection", "disconnected"), ("state", "unreported")]
        ),
        Some(0.0)
    );
    assert_eq!(
        after.get("ricochet_controller_engine_revision", &[("engine", "se1")]),
        Some(revision as f64)
    );
    assert_eq!(
        after.get("ricochet_controller_engine_connected", &[("engine", "se1")]),
        Some(1.0)
    );

    // The README's table lists every family the controller serves.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    for family in &after.families {
        assert!(
            readme.contains(&format!("`{}`", family.name))
                || readme.contains(&format!("`{}_total`", family.name)),
            "README.md does not list the metric family {}",
            family.name
        );
    }
}

/// A waiting desired-state poll is counted, and the pacing of wakes is shown.
#[test]
fn metrics_count_waiting_polls_and_show_the_wake_interval() {
    let ctl = Ctl::start();
    let metrics = |ctl: &Ctl| Metrics::parse(&scrape(ctl, Some(&ctl.token)).1);
    let idle = metrics(&ctl);
    assert_eq!(
        idle.value("ricochet_controller_desired_polls_waiting", &[]),
        0.0
    );
    assert_eq!(
        idle.value(
            "ricochet_controller_desired_poll_wake_interval_seconds",
            &[]
        ),
        0.5
    );
    let revision = ctl.get("/api/v1/desired").expect(200).body["revision"]
        .as_u64()
        .unwrap();
    std::thread::scope(|s| {
        let poll = s.spawn(|| {
            ctl.get(&format!("/api/v1/desired?after={revision}&wait=20"))
                .expect(200)
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while metrics(&ctl).value("ricochet_controller_desired_polls_waiting", &[]) != 1.0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the poll never counted"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        ctl.post("/api/v1/network-profiles", network_profile())
            .expect(201);
        let answer = poll.join().unwrap();
        assert!(answer.body["revision"].as_u64().unwrap() > revision);
    });
    assert_eq!(
        metrics(&ctl).value("ricochet_controller_desired_polls_waiting", &[]),
        0.0
    );
}
