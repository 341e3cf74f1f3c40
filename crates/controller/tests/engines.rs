//! The engine-facing API: registration, reports, connection state, and the desired-state
//! long poll that carries every change to the engines.

mod common;

use std::time::{Duration, Instant};

use common::{health_monitor, Ctl};
use serde_json::{json, Value};

fn register(ctl: &Ctl, name: &str, version: &str) -> common::Reply {
    ctl.post(
        "/api/v1/service-engines",
        json!({"name": name, "addresses": ["192.168.33.7"], "version": version}),
    )
}

fn report(state: &str, servers: Value) -> Value {
    json!({
        "revision": 1,
        "state": state,
        "counters": {
            "services": [{"name": "web-vs", "packets": 10, "bytes": 1000, "new_flows": 2}],
            "servers": [{"pool": "web-pool", "ip": "192.168.33.10", "packets": 10, "bytes": 1000, "new_flows": 2}],
            "reasons": {"forwarded": 10}
        },
        "servers": servers
    })
}

/// The events after `since` as (subject, state, previous).
fn events(ctl: &Ctl, since: u64) -> Vec<(String, String, Option<String>)> {
    ctl.get(&format!("/api/v1/events?since={since}"))
        .expect(200)
        .body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["subject"].as_str().unwrap().to_owned(),
                e["state"].as_str().unwrap().to_owned(),
                e["previous"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn a_waiting_poll_returns_within_milliseconds_of_a_commit() {
    let ctl = Ctl::start();
    let current = ctl.get("/api/v1/desired").expect(200);
    let after = current.body["revision"].as_u64().unwrap();
    assert!(current.body["config"].is_object());

    let started = Instant::now();
    let poll = std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            let r = ctl.get(&format!("/api/v1/desired?after={after}&wait=30"));
            (r, Instant::now())
        });
        // Let the poll reach the controller and wait there.
        std::thread::sleep(Duration::from_millis(300));
        let created = ctl
            .post("/api/v1/health-monitors", health_monitor())
            .expect(201);
        let committed_at = Instant::now();
        let (r, returned_at) = waiting.join().unwrap();
        (created, committed_at, r, returned_at)
    });
    let (created, committed_at, r, returned_at) = poll;
    let r = r.expect(200);
    let new_revision = created.body["revision"].as_u64().unwrap();
    assert_eq!(r.body["revision"].as_u64().unwrap(), new_revision);
    assert_eq!(r.body["config"]["health_monitors"][0]["name"], "web-tcp");
    assert_eq!(
        r.header("etag"),
        Some(format!("\"{new_revision}\"").as_str())
    );
    assert!(
        returned_at >= started + Duration::from_millis(300),
        "the poll waited for the change"
    );
    let lag = returned_at.saturating_duration_since(committed_at);
    assert!(
        lag < Duration::from_secs(1),
        "the poll returned {lag:?} after the commit's answer"
    );
    println!("propagation to a waiting poll: {lag:?} after the commit was answered");
}

#[test]
fn a_poll_behind_the_revision_returns_at_once_and_one_level_with_it_waits_then_304() {
    let ctl = Ctl::start();
    let t = Instant::now();
    let r = ctl.get("/api/v1/desired?after=0&wait=30").expect(200);
    assert!(t.elapsed() < Duration::from_secs(1), "behind: at once");
    let revision = r.body["revision"].as_u64().unwrap();

    let t = Instant::now();
    let r = ctl
        .get(&format!("/api/v1/desired?after={revision}&wait=1"))
        .expect(304);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(r.header("etag"), Some(format!("\"{revision}\"").as_str()));

    // Events and engine registrations are not configuration: they do not wake polls.
    register(&ctl, "se1", "0.1.0").expect(201);
    ctl.get(&format!("/api/v1/desired?after={revision}&wait=1"))
        .expect(304);
    ctl.refused(400, "invalid_query", |c| {
        c.get("/api/v1/desired?after=soon")
    });
}

#[test]
fn registration_is_idempotent_and_reports_are_kept_and_logged() {
    let ctl = Ctl::start();
    ctl.seed_web();
    let start = ctl.revision();
    let r = register(&ctl, "se1", "0.1.0").expect(201);
    assert_eq!(r.body["name"], "se1");
    assert_eq!(r.body["connection"], "connected");
    assert_eq!(r.body["addresses"], json!(["192.168.33.7"]));
    let registered_at = r.body["registered_at"].clone();
    let again = register(&ctl, "se1", "0.1.0").expect(200);
    assert_eq!(again.body["revision"], r.body["revision"], "no change");
    let upgraded = register(&ctl, "se1", "0.2.0").expect(201);
    assert_eq!(upgraded.body["version"], "0.2.0");
    assert_eq!(upgraded.body["registered_at"], registered_at);

    let servers = json!([{"pool": "web-pool", "ip": "192.168.33.10", "state": "up"}]);
    let shown = ctl
        .post(
            "/api/v1/service-engines/se1/report",
            report("running", servers.clone()),
        )
        .expect(200);
    assert_eq!(shown.body["report"]["report"]["state"], "running");
    assert_eq!(
        shown.body["report"]["report"]["counters"]["reasons"]["forwarded"],
        10
    );
    // The same report again: no event.
    ctl.post(
        "/api/v1/service-engines/se1/report",
        report("running", servers),
    )
    .expect(200);
    // The configuration has two servers: a report of three is refused, and kept nowhere.
    let three = json!([{"pool": "web-pool", "ip": "192.168.33.10", "state": "up"},
                       {"pool": "web-pool", "ip": "192.168.34.10", "state": "up"},
                       {"pool": "web-pool", "ip": "192.168.34.11", "state": "up"}]);
    let refused = ctl.refused(422, "report_too_large", |c| {
        c.post(
            "/api/v1/service-engines/se1/report",
            report("running", three),
        )
    });
    assert!(
        refused
            .message()
            .contains("lists 3 servers but the configuration has 2"),
        "{}",
        refused.message()
    );
    let down = json!([{"pool": "web-pool", "ip": "192.168.33.10", "state": "down",
                       "reason": "VIP 192.168.35.241 not configured on the server"}]);
    ctl.post(
        "/api/v1/service-engines/se1/report",
        report("degraded", down),
    )
    .expect(200);

    let server = "service-engines/se1/pools/web-pool/servers/192.168.33.10".to_owned();
    let se = "service-engines/se1".to_owned();
    let s = |x: &str| x.to_owned();
    assert_eq!(
        events(&ctl, start),
        [
            (se.clone(), s("registered"), None),
            (se.clone(), s("connected"), Some(s("disconnected"))),
            (se.clone(), s("registered"), None),
            (se.clone(), s("running"), None),
            (server.clone(), s("up"), Some(s("unknown"))),
            (se.clone(), s("degraded"), Some(s("running"))),
            (server.clone(), s("down"), Some(s("up"))),
        ]
    );
    let last = &ctl.get("/api/v1/events?since=0").body["events"];
    let last = last.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last["reason"],
        "VIP 192.168.35.241 not configured on the server (engine se1)"
    );

    let list = ctl.get("/api/v1/service-engines").expect(200);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        list.body["items"][0]["report"]["report"]["state"],
        "degraded"
    );
}

#[test]
fn engine_requests_are_checked() {
    let ctl = Ctl::start();
    let r = ctl.refused(404, "not_registered", |c| {
        c.post(
            "/api/v1/service-engines/ghost/report",
            report("running", json!([])),
        )
    });
    assert!(
        r.message().contains("POST /api/v1/service-engines"),
        "{}",
        r.message()
    );
    ctl.refused(404, "not_registered", |c| {
        c.get("/api/v1/service-engines/ghost")
    });
    ctl.refused(404, "not_registered", |c| {
        c.get("/api/v1/desired?engine=ghost&after=0")
    });
    let r = ctl.refused(422, "validation_failed", |c| register(c, "se 1/x", "0.1.0"));
    assert_eq!(r.paths(), ["name"]);
    register(&ctl, "se1", "0.1.0").expect(201);
    let r = ctl.refused(400, "invalid_body", |c| {
        c.post(
            "/api/v1/service-engines/se1/report",
            json!({"state": "running", "colour": "green"}),
        )
    });
    assert_eq!(r.paths(), ["colour"]);
    let r = ctl.refused(400, "invalid_body", |c| {
        c.post(
            "/api/v1/service-engines/se1/report",
            json!({"state": "dancing"}),
        )
    });
    assert_eq!(r.paths(), ["state"]);

    ctl.delete("/api/v1/service-engines/se1").expect(200);
    ctl.refused(404, "not_registered", |c| {
        c.get("/api/v1/service-engines/se1")
    });
    ctl.refused(404, "not_registered", |c| {
        c.delete("/api/v1/service-engines/se1")
    });
}

#[test]
fn a_silent_engine_is_disconnected_and_a_polling_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = common::options(dir.path());
    o.engine_timeout = Duration::from_millis(400);
    let ctl = Ctl::start_with(dir, o);
    let start = ctl.revision();
    register(&ctl, "quiet", "0.1.0").expect(201);
    register(&ctl, "poller", "0.1.0").expect(201);
    let revision = ctl.get("/api/v1/desired").body["revision"]
        .as_u64()
        .unwrap();
    std::thread::scope(|s| {
        let poll = s.spawn(|| {
            ctl.get(&format!(
                "/api/v1/desired?engine=poller&after={revision}&wait=2"
            ))
        });
        std::thread::sleep(Duration::from_millis(1500));
        let engines = ctl.get("/api/v1/service-engines").expect(200).body;
        let connection = |name: &str| {
            engines["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .unwrap()["connection"]
                .clone()
        };
        assert_eq!(connection("quiet"), "disconnected");
        assert_eq!(connection("poller"), "connected", "waiting in a poll");
        poll.join().unwrap().expect(304);
    });
    let disconnected: Vec<String> = events(&ctl, start)
        .into_iter()
        .filter(|(_, state, _)| state == "disconnected")
        .map(|(subject, _, _)| subject)
        .collect();
    assert_eq!(disconnected, ["service-engines/quiet"]);
}

#[test]
fn stopping_the_controller_ends_waiting_polls_at_once() {
    let ctl = Ctl::start();
    let revision = ctl.get("/api/v1/desired").body["revision"]
        .as_u64()
        .unwrap();
    let url = format!("{}/api/v1/desired?after={revision}&wait=60", ctl.url);
    let token = ctl.token.clone();
    let poll = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let t = Instant::now();
        let r = agent
            .get(&url)
            .header("Authorization", format!("Bearer {token}"))
            .call();
        (r.map(|r| r.status().as_u16()), t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    drop(ctl.stop());
    let stopped_in = t.elapsed();
    let (status, waited) = poll.join().unwrap();
    assert_eq!(status.ok(), Some(503), "told to poll again");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(stopped_in < Duration::from_secs(5), "{stopped_in:?}");
}
