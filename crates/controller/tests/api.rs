//! The REST API, served in-process: each object kind's create / list / show / update /
//! delete, every class of refusal with its status and path (and proof that it changed
//! nothing), the declarative configuration, events, and the OpenAPI document.

mod common;

use common::{health_monitor, network_profile, pool, seed_config, virtual_service, Ctl};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Create, list, show, update, delete: one test per kind
// ---------------------------------------------------------------------------------------

/// Runs the whole life of one object at `collection`: created, listed, shown, replaced
/// (`changed`, then the same again: no new revision), deleted, gone.
fn crud(ctl: &Ctl, collection: &str, object: Value, changed: Value) {
    let name = object["name"].as_str().unwrap().to_owned();
    let item = format!("{collection}/{name}");
    let before = ctl.revision();

    let created = ctl.post(collection, object.clone()).expect(201);
    assert_eq!(created.header("location"), Some(item.as_str()));
    let created_rev = created.body["revision"].as_u64().unwrap();
    assert_eq!(created_rev, before + 1, "a create takes the next revision");
    assert_eq!(created.body["object"]["name"], name.as_str());

    let list = ctl.get(collection).expect(200);
    assert_eq!(list.body["revision"], created_rev);
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["object"]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&name.as_str()), "{names:?}");

    let shown = ctl.get(&item).expect(200);
    assert_eq!(shown.body["revision"], created_rev);
    // The stored object is the sent one with its defaults applied.
    assert_sent_is_stored(&object, &shown.body["object"]);

    let replaced = ctl.put(&item, changed.clone()).expect(200);
    let replaced_rev = replaced.body["revision"].as_u64().unwrap();
    if changed == object {
        assert_eq!(
            replaced_rev, created_rev,
            "an identical replace changes nothing"
        );
    } else {
        assert_eq!(replaced_rev, created_rev + 1);
        assert_sent_is_stored(&changed, &ctl.get(&item).body["object"]);
    }
    let again = ctl.put(&item, changed).expect(200);
    assert_eq!(again.body["revision"].as_u64().unwrap(), replaced_rev);
    assert_eq!(ctl.revision(), replaced_rev, "no commit for no change");

    let deleted = ctl.delete(&item).expect(200);
    assert_eq!(deleted.body["revision"].as_u64().unwrap(), replaced_rev + 1);
    assert_eq!(deleted.body["name"], name.as_str());
    let gone = ctl.get(&item).expect(404);
    assert_eq!(gone.error(), "not_found");
}

/// Every value of `sent` is in `stored` (which has the defaults filled in besides).
#[track_caller]
fn assert_sent_is_stored(sent: &Value, stored: &Value) {
    match (sent, stored) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                assert_sent_is_stored(v, b.get(k).unwrap_or(&Value::Null));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{sent} vs {stored}");
            for (x, y) in a.iter().zip(b) {
                assert_sent_is_stored(x, y);
            }
        }
        _ => assert_eq!(sent, stored),
    }
}

#[test]
fn network_profiles_crud() {
    let ctl = Ctl::start();
    let mut changed = network_profile();
    changed["session_idle_timeout"] = json!(600);
    crud(&ctl, "/api/v1/network-profiles", network_profile(), changed);
}

#[test]
fn application_profiles_crud() {
    let ctl = Ctl::start();
    let profile = json!({"name": "my-l4", "type": "l4"});
    crud(
        &ctl,
        "/api/v1/application-profiles",
        profile.clone(),
        profile,
    );
}

#[test]
fn health_monitors_crud() {
    let ctl = Ctl::start();
    let changed = json!({"name": "web-tcp", "type": "http", "send_interval": 5,
        "receive_timeout": 2, "successful_checks": 3, "failed_checks": 3,
        "http_monitor": {"http_request": "GET /health HTTP/1.0", "http_response_code": ["http_2xx"]}});
    crud(&ctl, "/api/v1/health-monitors", health_monitor(), changed);
}

#[test]
fn pools_crud() {
    let ctl = Ctl::start();
    ctl.post("/api/v1/health-monitors", health_monitor())
        .expect(201);
    let changed = json!({"name": "web-pool", "consistent_hash": "source_ip_and_port",
        "servers": [{"ip": "192.168.33.10", "ratio": 2}, {"ip": "192.168.34.10", "enabled": false}]});
    crud(&ctl, "/api/v1/pools", pool(), changed);
}

#[test]
fn virtual_services_crud() {
    let ctl = Ctl::start();
    ctl.post("/api/v1/network-profiles", network_profile())
        .expect(201);
    ctl.post("/api/v1/health-monitors", health_monitor())
        .expect(201);
    ctl.post("/api/v1/pools", pool()).expect(201);
    let mut changed = virtual_service();
    changed["services"] = json!([{"port": 80}, {"port": 8000, "port_range_end": 8100}]);
    changed["enabled"] = json!(false);
    crud(&ctl, "/api/v1/virtual-services", virtual_service(), changed);
}

/// A group of two dual-stack engines peering with one IPv4 router (the README's example).
fn service_engine_group() -> Value {
    json!({"name": "seg-a", "hash_seed": 7,
        "engines": [
            {"name": "se1", "addresses": ["192.168.33.7", "fc00::7"]},
            {"name": "se2", "addresses": ["192.168.33.8", "fc00::8"]}
        ],
        "bgp": {"local_as": 65001, "peers": [{"ip": "192.168.33.1", "remote_as": 65000}]}})
}

#[test]
fn service_engine_groups_crud() {
    let ctl = Ctl::start();
    let mut changed = service_engine_group();
    changed["engines"].as_array_mut().unwrap().pop();
    changed["bgp"]["hold_time"] = json!(30);
    changed["bgp"]["bfd"] = json!(true);
    changed["bgp"]["bfd_interval_ms"] = json!(300);
    crud(
        &ctl,
        "/api/v1/service-engine-groups",
        service_engine_group(),
        changed,
    );
}

#[test]
fn a_virtual_service_names_an_existing_group_which_cannot_be_deleted_under_it() {
    let ctl = Ctl::start();
    ctl.seed_web();
    let mut vs = virtual_service();
    vs["se_group"] = json!("seg-a");
    let r = ctl.refused(422, "validation_failed", |c| {
        c.put("/api/v1/virtual-services/web-vs", vs.clone())
    });
    assert_eq!(r.paths(), [r#"virtual_services["web-vs"].se_group"#]);
    assert_eq!(
        r.body["details"][0]["message"],
        r#"service engine group "seg-a" does not exist (no service engine groups are declared)"#
    );
    assert!(ctl.get("/api/v1/virtual-services/web-vs").body["object"]
        .get("se_group")
        .is_none());

    ctl.post("/api/v1/service-engine-groups", service_engine_group())
        .expect(201);
    ctl.put("/api/v1/virtual-services/web-vs", vs).expect(200);
    let r = ctl.refused(409, "in_use", |c| {
        c.delete("/api/v1/service-engine-groups/seg-a")
    });
    assert_eq!(r.paths(), [r#"virtual_services["web-vs"].se_group"#]);
    assert_eq!(
        r.message(),
        r#"service engine group "seg-a" is in use by virtual service "web-vs"; change or delete it first"#
    );
    // A second group may not take an engine of the first.
    let mut other = service_engine_group();
    other["name"] = json!("seg-b");
    let r = ctl.refused(422, "validation_failed", |c| {
        c.post("/api/v1/service-engine-groups", other)
    });
    assert_eq!(
        r.paths(),
        [
            r#"service_engine_groups["seg-b"].engines[0].name"#,
            r#"service_engine_groups["seg-b"].engines[1].name"#
        ]
    );
    // Once no virtual service names it, it goes.
    ctl.put("/api/v1/virtual-services/web-vs", virtual_service())
        .expect(200);
    ctl.delete("/api/v1/service-engine-groups/seg-a")
        .expect(200);
}

#[test]
fn a_group_in_the_whole_configuration_is_validated_with_it() {
    let ctl = Ctl::start();
    let mut config = seed_config();
    let mut group = service_engine_group();
    group["bgp"]["peers"][0]["remote_as"] = json!(0);
    config["service_engine_groups"] = json!([group]);
    let r = ctl.refused(422, "validation_failed", |c| {
        c.put("/api/v1/configuration", config.clone())
    });
    assert_eq!(
        r.paths(),
        [r#"service_engine_groups["seg-a"].bgp.peers[0].remote_as"#]
    );
    config["service_engine_groups"][0]["bgp"]["peers"][0]["remote_as"] = json!(65000);
    let applied = ctl.put("/api/v1/configuration", config).expect(200);
    assert_eq!(
        applied.body["diff"]["service_engine_groups"]["created"],
        json!(["seg-a"])
    );
    let exported = ctl.get("/api/v1/configuration").expect(200);
    assert_eq!(
        exported.body["config"]["service_engine_groups"][0]["bgp"]["hold_time"],
        9
    );
}

#[test]
fn the_built_in_application_profile_is_listed_and_cannot_be_deleted() {
    let ctl = Ctl::start();
    let list = ctl.get("/api/v1/application-profiles").expect(200);
    assert_eq!(
        list.body["items"][0]["object"],
        json!({"name": "System-L4-Application", "type": "l4"})
    );
    let r = ctl.refused(409, "built_in", |c| {
        c.delete("/api/v1/application-profiles/System-L4-Application")
    });
    assert_eq!(
        r.paths(),
        [r#"application_profiles["System-L4-Application"]"#]
    );
    // Replacing it with itself is allowed and changes nothing.
    ctl.put(
        "/api/v1/application-profiles/System-L4-Application",
        json!({"name": "System-L4-Application", "type": "l4"}),
    )
    .expect(200);
}

// ---------------------------------------------------------------------------------------
// Refusals: status, class, path, and nothing changed
// ---------------------------------------------------------------------------------------

#[test]
fn a_bad_field_value_is_422_with_its_path() {
    let ctl = Ctl::start();
    let mut bad = pool();
    bad["servers"][0]["ratio"] = json!(50);
    bad["health_monitors"] = json!([]);
    let r = ctl.refused(422, "validation_failed", |c| c.post("/api/v1/pools", bad));
    assert_eq!(r.paths(), [r#"pools["web-pool"].servers[0].ratio"#]);
    assert_eq!(
        r.body["details"][0]["message"],
        "ratio 50 is out of range (1 to 20)"
    );
    assert!(
        r.message().contains("ratio 50 is out of range"),
        "{}",
        r.message()
    );

    let r = ctl.refused(422, "validation_failed", |c| {
        let mut profile = network_profile();
        profile["dsr"]["type"] = json!("l2");
        profile["dsr"]["encapsulation"] = json!("gue");
        c.post("/api/v1/network-profiles", profile)
    });
    assert_eq!(
        r.paths(),
        [r#"network_profiles["dsr-l3-tcp"].dsr.encapsulation"#]
    );
    assert!(ctl.get("/api/v1/pools").body["items"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn a_missing_reference_is_422_naming_the_field() {
    let ctl = Ctl::start();
    ctl.post("/api/v1/network-profiles", network_profile())
        .expect(201);
    let r = ctl.refused(422, "validation_failed", |c| {
        c.post("/api/v1/virtual-services", virtual_service())
    });
    assert_eq!(r.paths(), [r#"virtual_services["web-vs"].pool"#]);
    assert_eq!(
        r.body["details"][0]["message"],
        r#"pool "web-pool" does not exist (no pools are declared)"#
    );

    let r = ctl.refused(422, "validation_failed", |c| {
        let mut p = pool();
        p["health_monitors"] = json!(["no-such-monitor"]);
        c.post("/api/v1/pools", p)
    });
    assert_eq!(r.paths(), [r#"pools["web-pool"].health_monitors[0]"#]);

    ctl.post("/api/v1/health-monitors", health_monitor())
        .expect(201);
    ctl.post("/api/v1/pools", pool()).expect(201);
    let r = ctl.refused(422, "validation_failed", |c| {
        let mut vs = virtual_service();
        vs["application_profile"] = json!("System-L7-Application");
        c.post("/api/v1/virtual-services", vs)
    });
    assert_eq!(
        r.paths(),
        [r#"virtual_services["web-vs"].application_profile"#]
    );
}

#[test]
fn an_update_that_breaks_another_object_is_refused_at_that_object() {
    let ctl = Ctl::start();
    ctl.seed_web();
    // IPv6 servers under an IPv4 VIP: the pool itself is fine, its user is not.
    let r = ctl.refused(422, "validation_failed", |c| {
        c.put(
            "/api/v1/pools/web-pool",
            json!({"name": "web-pool", "servers": [{"ip": "fc00::10"}]}),
        )
    });
    assert_eq!(r.paths(), [r#"virtual_services["web-vs"].pool"#]);
    assert_eq!(
        ctl.get("/api/v1/pools/web-pool").body["object"]["servers"][0]["ip"],
        "192.168.33.10"
    );
}

#[test]
fn a_duplicate_name_is_409() {
    let ctl = Ctl::start();
    ctl.post("/api/v1/health-monitors", health_monitor())
        .expect(201);
    let r = ctl.refused(409, "already_exists", |c| {
        c.post("/api/v1/health-monitors", health_monitor())
    });
    assert_eq!(r.paths(), [r#"health_monitors["web-tcp"].name"#]);
    let r = ctl.refused(409, "already_exists", |c| {
        c.post(
            "/api/v1/application-profiles",
            json!({"name": "System-L4-Application", "type": "l4"}),
        )
    });
    assert!(r.message().contains("already exists"), "{}", r.message());
}

#[test]
fn deleting_an_object_in_use_is_409_naming_the_users() {
    let ctl = Ctl::start();
    ctl.seed_web();
    let r = ctl.refused(409, "in_use", |c| c.delete("/api/v1/pools/web-pool"));
    assert_eq!(r.paths(), [r#"virtual_services["web-vs"].pool"#]);
    assert_eq!(
        r.message(),
        r#"pool "web-pool" is in use by virtual service "web-vs"; change or delete it first"#
    );
    let r = ctl.refused(409, "in_use", |c| {
        c.delete("/api/v1/network-profiles/dsr-l3-tcp")
    });
    assert_eq!(r.paths(), [r#"virtual_services["web-vs"].network_profile"#]);
    let r = ctl.refused(409, "in_use", |c| {
        c.delete("/api/v1/health-monitors/web-tcp")
    });
    assert_eq!(r.paths(), [r#"pools["web-pool"].health_monitors[0]"#]);

    // In order, everything goes.
    for path in [
        "/api/v1/virtual-services/web-vs",
        "/api/v1/pools/web-pool",
        "/api/v1/health-monitors/web-tcp",
        "/api/v1/network-profiles/dsr-l3-tcp",
    ] {
        ctl.delete(path).expect(200);
    }
}

#[test]
fn a_name_differing_from_the_url_is_422() {
    let ctl = Ctl::start();
    ctl.post("/api/v1/health-monitors", health_monitor())
        .expect(201);
    let r = ctl.refused(422, "name_mismatch", |c| {
        let mut renamed = health_monitor();
        renamed["name"] = json!("other");
        c.put("/api/v1/health-monitors/web-tcp", renamed)
    });
    assert_eq!(r.paths(), ["name"]);
    assert!(r.message().contains("cannot be renamed"), "{}", r.message());
}

#[test]
fn replacing_or_deleting_a_missing_object_is_404() {
    let ctl = Ctl::start();
    let r = ctl.refused(404, "not_found", |c| {
        c.put("/api/v1/health-monitors/web-tcp", health_monitor())
    });
    assert_eq!(r.paths(), [r#"health_monitors["web-tcp"]"#]);
    ctl.refused(404, "not_found", |c| c.delete("/api/v1/pools/nope"));
    ctl.refused(404, "not_found", |c| c.get("/api/v1/virtual-services/nope"));
}

#[test]
fn unknown_fields_and_wrong_types_are_400_with_the_path_in_the_body() {
    let ctl = Ctl::start();
    let r = ctl.refused(400, "invalid_body", |c| {
        c.post(
            "/api/v1/pools",
            json!({"name": "p", "servers": [{"ip": "10.0.0.1", "wieght": 2}]}),
        )
    });
    assert_eq!(r.paths(), ["servers[0].wieght"]);
    assert!(
        r.body["details"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown field `wieght`"),
        "{:#}",
        r.body
    );
    let r = ctl.refused(400, "invalid_body", |c| {
        c.post(
            "/api/v1/virtual-services",
            json!({"name": "v", "vip": "not-an-ip", "network_profile": "n", "pool": "p"}),
        )
    });
    assert_eq!(r.paths(), ["vip"]);
    let r = ctl.refused(400, "invalid_body", |c| {
        c.post(
            "/api/v1/network-profiles",
            json!({"name": "n", "type": "tcp_turbo"}),
        )
    });
    assert_eq!(r.paths(), ["type"]);
}

#[test]
fn malformed_json_is_400() {
    let ctl = Ctl::start();
    let r = ctl.refused(400, "malformed_json", |c| {
        c.raw(
            "POST",
            "/api/v1/pools",
            Some(&c.token),
            Some("application/json"),
            Some(br#"{"name": "p", "servers": [{"ip": "10.0.0.1",]}"#.to_vec()),
        )
    });
    assert_eq!(r.paths(), ["servers[0]"]);
    assert!(r.message().contains("not valid JSON"), "{}", r.message());
    ctl.refused(400, "malformed_json", |c| {
        c.raw(
            "POST",
            "/api/v1/pools",
            Some(&c.token),
            Some("application/json"),
            Some(Vec::new()),
        )
    });
}

#[test]
fn a_wrong_method_is_405_with_the_allowed_ones() {
    let ctl = Ctl::start();
    let r = ctl.refused(405, "method_not_allowed", |c| {
        c.raw(
            "PATCH",
            "/api/v1/pools/web-pool",
            Some(&c.token),
            None,
            None,
        )
    });
    let allow = r.header("allow").unwrap().replace(' ', "");
    let mut methods: Vec<&str> = allow.split(',').collect();
    methods.sort();
    assert_eq!(methods, ["DELETE", "GET", "HEAD", "PUT"]);
    assert!(
        r.message().contains("PATCH is not allowed"),
        "{}",
        r.message()
    );
    ctl.refused(405, "method_not_allowed", |c| {
        c.post("/api/v1/pools/web-pool", pool())
    });
    ctl.refused(405, "method_not_allowed", |c| c.delete("/api/v1/events"));
}

#[test]
fn a_body_that_is_not_json_is_415() {
    let ctl = Ctl::start();
    let body = serde_json::to_vec(&health_monitor()).unwrap();
    let r = ctl.refused(415, "unsupported_media_type", |c| {
        c.raw(
            "POST",
            "/api/v1/health-monitors",
            Some(&c.token),
            Some("text/plain"),
            Some(body.clone()),
        )
    });
    assert!(r.message().contains("text/plain"), "{}", r.message());
    ctl.refused(415, "unsupported_media_type", |c| {
        c.raw(
            "POST",
            "/api/v1/health-monitors",
            Some(&c.token),
            None,
            Some(body),
        )
    });
}

#[test]
fn an_unknown_route_is_404() {
    let ctl = Ctl::start();
    let r = ctl.refused(404, "not_found", |c| c.get("/api/v1/virtual-servers"));
    assert!(
        r.message().contains("/api/v1/virtual-servers"),
        "{}",
        r.message()
    );
    ctl.refused(404, "not_found", |c| c.get("/"));
}

#[test]
fn bad_query_parameters_headers_and_oversized_bodies_are_refused() {
    let ctl = Ctl::start();
    ctl.seed_web();
    let before = ctl.get("/api/v1/configuration").body;

    // Each refusal names the parameter.
    for (path, parameter) in [
        ("/api/v1/desired?after=abc", "after"),
        ("/api/v1/desired?after=0&wait=-1", "wait"),
        ("/api/v1/desired?after=0&wait=99999999999999999999", "wait"),
        ("/api/v1/desired?after=0&colour=red", "colour"),
        ("/api/v1/events?limit=-1", "limit"),
        ("/api/v1/events?since=1&since=2", "since"),
    ] {
        let r = ctl.refused(400, "invalid_query", |c| c.get(path));
        assert!(r.message().contains(parameter), "{path}: {}", r.message());
    }
    let r = ctl.refused(400, "invalid_query", |c| {
        c.put("/api/v1/configuration?dry_run=maybe", seed_config())
    });
    assert!(r.message().contains("dry_run"), "{}", r.message());
    // The document has them in the query, where they are read.
    let doc = ctl.get("/api/v1/openapi.json").expect(200).body;
    for (path, method, names) in [
        ("/api/v1/desired", "get", &["after", "wait", "engine"][..]),
        ("/api/v1/events", "get", &["since", "limit"]),
        ("/api/v1/configuration", "put", &["dry_run"]),
    ] {
        for name in names {
            let parameter = doc["paths"][path][method]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == *name)
                .unwrap_or_else(|| panic!("{method} {path} documents no {name}"));
            assert_eq!(parameter["in"], "query", "{method} {path} {name}");
            assert_eq!(parameter["required"], false, "{method} {path} {name}");
        }
    }
    // A poll longer than the document's maximum is refused, not shortened.
    let wait = doc["paths"]["/api/v1/desired"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "wait")
        .unwrap()["schema"]
        .clone();
    assert_eq!(wait["maximum"], ricochet_controller::api::MAX_WAIT_SECS);
    let r = ctl.refused(422, "validation_failed", |c| {
        c.get(&format!(
            "/api/v1/desired?after=0&wait={}",
            ricochet_controller::api::MAX_WAIT_SECS + 1
        ))
    });
    assert_eq!(r.paths(), ["wait"]);

    let body = serde_json::to_vec(&seed_config()).unwrap();
    let apply_if = |c: &Ctl, if_match: &str| {
        let auth = format!("Bearer {}", c.token);
        c.request(
            "PUT",
            "/api/v1/configuration",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
                ("If-Match", if_match),
            ],
            Some(body.clone()),
        )
    };
    let r = ctl.refused(400, "invalid_header", |c| apply_if(c, "\"yesterday\""));
    assert!(r.message().contains("If-Match"), "{}", r.message());

    // A body over the limit (16 MiB) is refused before it is parsed.
    let mut huge = b"{\"pools\": [".to_vec();
    huge.resize((16 << 20) + 1, b' ');
    ctl.refused(413, "payload_too_large", |c| {
        c.raw(
            "PUT",
            "/api/v1/configuration",
            Some(&c.token),
            Some("application/json"),
            Some(huge),
        )
    });
    assert_eq!(ctl.get("/api/v1/configuration").body, before);

    // `If-Match: *` is "whatever the revision": the apply goes through.
    let r = apply_if(&ctl, "*").expect(200);
    assert_eq!(r.body["committed"], true, "{:#}", r.body);
}

// ---------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------

#[test]
fn requests_without_a_valid_token_are_401_and_change_nothing() {
    let ctl = Ctl::start();
    let body = serde_json::to_vec(&health_monitor()).unwrap();
    let create = |token: Option<&'static str>| {
        let body = body.clone();
        move |c: &Ctl| {
            c.raw(
                "POST",
                "/api/v1/health-monitors",
                token,
                Some("application/json"),
                Some(body),
            )
        }
    };
    let r = ctl.refused(401, "unauthorized", create(None));
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="ricochet""#)
    );
    let r = ctl.refused(401, "unauthorized", create(Some("rct_0000")));
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="ricochet", error="invalid_token""#)
    );
    // The right token with another scheme is refused too.
    let r = ctl.refused(401, "unauthorized", |c| {
        let basic = format!("Basic {}", c.token);
        c.request("GET", "/api/v1/pools", &[("Authorization", &basic)], None)
    });
    assert!(r.header("www-authenticate").is_some());
    // Nothing is revealed without a token, not even which routes exist.
    ctl.refused(401, "unauthorized", |c| {
        c.raw("GET", "/api/v1/no-such-route", None, None, None)
    });
    ctl.refused(401, "unauthorized", |c| {
        c.raw("GET", "/api/v1/configuration", Some("wrong"), None, None)
    });
    assert!(ctl.get("/api/v1/health-monitors").body["items"]
        .as_array()
        .unwrap()
        .is_empty());
    // The right token works.
    ctl.refused(401, "unauthorized", create(Some("")));
    ctl.raw(
        "POST",
        "/api/v1/health-monitors",
        Some(&ctl.token),
        Some("application/json"),
        Some(body.clone()),
    )
    .expect(201);
}

#[test]
fn health_and_the_openapi_document_need_no_token() {
    let ctl = Ctl::start();
    let h = ctl.raw("GET", "/healthz", None, None, None).expect(200);
    assert_eq!(h.body["status"], "ok");
    let doc = ctl
        .raw("GET", "/api/v1/openapi.json", None, None, None)
        .expect(200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
}

#[test]
fn only_the_hash_of_the_token_is_stored_and_the_file_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let ctl = Ctl::start();
    let file = ctl.dir.path().join("admin-token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let store = std::fs::read(ctl.dir.path().join("controller.redb")).unwrap();
    let contains = |needle: &[u8]| store.windows(needle.len()).any(|w| w == needle);
    assert!(
        !contains(ctl.token.as_bytes()),
        "the token itself is not stored"
    );
    assert!(
        contains(ricochet_controller::auth::hash(&ctl.token).as_bytes()),
        "its hash is"
    );
}

#[test]
fn the_token_survives_a_restart_and_can_be_replaced() {
    let ctl = Ctl::start();
    let token = ctl.token.clone();
    let dir = ctl.stop();
    let o = common::options(dir.path());
    let ctl = Ctl::start_with(dir, o);
    assert_eq!(ctl.token, token, "the same token after a restart");
    ctl.get("/api/v1/pools").expect(200);

    let dir = ctl.stop();
    let mut o = common::options(dir.path());
    o.new_admin_token = true;
    let ctl = Ctl::start_with(dir, o);
    assert_ne!(ctl.token, token);
    ctl.get("/api/v1/pools").expect(200);
    let r = ctl.raw("GET", "/api/v1/pools", Some(&token), None, None);
    assert_eq!(r.status, 401, "the replaced token no longer works");
}

#[test]
fn authentication_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = common::options(dir.path());
    o.auth = false;
    let ctl = Ctl::start_with(dir, o);
    assert!(!ctl.dir.path().join("admin-token").exists());
    ctl.raw(
        "POST",
        "/api/v1/health-monitors",
        None,
        Some("application/json"),
        Some(serde_json::to_vec(&health_monitor()).unwrap()),
    )
    .expect(201);
}

// ---------------------------------------------------------------------------------------
// The whole configuration
// ---------------------------------------------------------------------------------------

#[test]
fn declarative_apply_previews_then_commits_atomically() {
    let ctl = Ctl::start();
    let start = ctl.revision();
    let preview = ctl
        .put("/api/v1/configuration?dry_run=true", seed_config())
        .expect(200);
    assert_eq!(preview.body["dry_run"], true);
    assert_eq!(preview.body["committed"], false);
    assert_eq!(
        preview.body["diff"]["virtual_services"]["created"],
        json!(["dns-vs", "web-vs", "web-vs-v6"])
    );
    assert_eq!(
        preview.body["diff"]["application_profiles"],
        json!({"created": [], "changed": [], "deleted": []}),
        "declaring the built-in profile is no change"
    );
    assert_eq!(ctl.revision(), start, "a preview commits nothing");
    assert!(ctl.get("/api/v1/pools").body["items"]
        .as_array()
        .unwrap()
        .is_empty());

    let applied = ctl.put("/api/v1/configuration", seed_config()).expect(200);
    assert_eq!(applied.body["committed"], true);
    let revision = applied.body["revision"].as_u64().unwrap();
    assert_eq!(revision, start + 1, "one revision for the whole apply");
    let got = ctl.get("/api/v1/configuration").expect(200);
    assert_eq!(got.body["revision"], revision);
    assert_eq!(got.header("etag"), Some(format!("\"{revision}\"").as_str()));
    let stored: ricochet_config::Config =
        serde_json::from_value(got.body["config"].clone()).unwrap();
    let seed = ricochet_config::Config::from_yaml_str(common::SEED_YAML).unwrap();
    assert!(
        ricochet_controller::diff::ConfigDiff::between(&seed, &stored).is_empty(),
        "the stored configuration is the seed"
    );
    // Every object carries the apply's revision.
    let pools = ctl.get("/api/v1/pools").body;
    assert!(pools["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["revision"] == revision));

    let same = ctl.put("/api/v1/configuration", seed_config()).expect(200);
    assert_eq!(same.body["committed"], false);
    assert_eq!(same.body["revision"], revision);

    // Drop the DNS service, weigh a server: deleted, changed with the field's path.
    let mut next = seed_config();
    next["virtual_services"]
        .as_array_mut()
        .unwrap()
        .retain(|v| v["name"] != "dns-vs");
    next["pools"]
        .as_array_mut()
        .unwrap()
        .retain(|p| p["name"] != "dns-pool");
    next["pools"][0]["servers"][1]["ratio"] = json!(3);
    next["application_profiles"] = json!([]);
    let r = ctl.put("/api/v1/configuration", next).expect(200);
    let diff = &r.body["diff"];
    assert_eq!(diff["virtual_services"]["deleted"], json!(["dns-vs"]));
    assert_eq!(diff["pools"]["deleted"], json!(["dns-pool"]));
    assert_eq!(
        diff["pools"]["changed"],
        json!([{"name": "web-pool", "fields": [{"path": "servers[1].ratio", "old": 1, "new": 3}]}])
    );
    assert_eq!(
        ctl.get("/api/v1/application-profiles").body["items"][0]["object"]["name"],
        "System-L4-Application",
        "a configuration without the built-in profile leaves it in place"
    );
}

#[test]
fn a_refused_apply_changes_nothing() {
    let ctl = Ctl::start();
    ctl.put("/api/v1/configuration", seed_config()).expect(200);
    let before = ctl.get("/api/v1/configuration").body;

    let mut bad = seed_config();
    bad["virtual_services"][0]["pool"] = json!("web-pol");
    bad["pools"][0]["servers"][0]["ratio"] = json!(0);
    let r = ctl.refused(422, "validation_failed", |c| {
        c.put("/api/v1/configuration", bad)
    });
    assert_eq!(
        r.paths(),
        [
            r#"pools["web-pool"].servers[0].ratio"#,
            r#"virtual_services["web-vs"].pool"#
        ]
    );
    assert!(r.message().contains("2 problems"), "{}", r.message());

    let mut unknown = seed_config();
    unknown["pools"][1]["servers"][0]["wieght"] = json!(1);
    let r = ctl.refused(400, "invalid_body", |c| {
        c.put("/api/v1/configuration", unknown)
    });
    assert_eq!(r.paths(), ["pools[1].servers[0].wieght"]);

    // An apply prepared (previewed) at an older revision is refused; at the current
    // one it goes through.
    let current = before["revision"].as_u64().unwrap();
    let body = serde_json::to_vec(&seed_config()).unwrap();
    let apply_if = |c: &Ctl, revision: u64| {
        let auth = format!("Bearer {}", c.token);
        let etag = format!("\"{revision}\"");
        c.request(
            "PUT",
            "/api/v1/configuration",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
                ("If-Match", &etag),
            ],
            Some(body.clone()),
        )
    };
    let r = ctl.refused(412, "revision_mismatch", |c| apply_if(c, current - 1));
    assert!(
        r.message().contains("changed since revision"),
        "{}",
        r.message()
    );
    apply_if(&ctl, current).expect(200);
    assert_eq!(ctl.get("/api/v1/configuration").body, before);
}

#[test]
fn events_record_each_change_with_its_reason_and_revision() {
    let ctl = Ctl::start();
    let start = ctl.revision();
    ctl.seed_web();
    let r = ctl
        .get(&format!("/api/v1/events?since={start}"))
        .expect(200);
    let events = r.body["events"].as_array().unwrap();
    let summary: Vec<(u64, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["revision"].as_u64().unwrap(),
                e["subject"].as_str().unwrap(),
                e["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (start + 1, "network-profiles/dsr-l3-tcp", "created"),
            (start + 2, "health-monitors/web-tcp", "created"),
            (start + 3, "pools/web-pool", "created"),
            (start + 4, "virtual-services/web-vs", "created"),
        ]
    );
    assert_eq!(events[2]["reason"], "POST /api/v1/pools by admin");
    assert!(events[0]["time"].as_str().unwrap().ends_with('Z'));
    let later = ctl
        .get(&format!("/api/v1/events?since={}", start + 3))
        .expect(200);
    assert_eq!(later.body["events"].as_array().unwrap().len(), 1);
    assert_eq!(
        ctl.get("/api/v1/events?limit=1").body["events"][0]["subject"],
        "application-profiles/System-L4-Application"
    );
    let r = ctl.refused(400, "invalid_query", |c| {
        c.get("/api/v1/events?since=yesterday")
    });
    assert!(r.message().contains("since"), "{}", r.message());
}

// ---------------------------------------------------------------------------------------
// The document covers every route
// ---------------------------------------------------------------------------------------

#[test]
fn the_openapi_document_lists_every_route_and_every_listed_route_exists() {
    let ctl = Ctl::start();
    let doc = ctl.get("/api/v1/openapi.json").expect(200).body;
    let mut listed = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            listed.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    listed.sort();
    let mut expected = vec![
        "GET /healthz".to_owned(),
        "GET /api/v1/openapi.json".to_owned(),
        "GET /metrics".to_owned(),
        "GET /api/v1/configuration".to_owned(),
        "PUT /api/v1/configuration".to_owned(),
        "GET /api/v1/events".to_owned(),
        "GET /api/v1/status".to_owned(),
        "GET /api/v1/desired".to_owned(),
        "GET /api/v1/service-engines".to_owned(),
        "POST /api/v1/service-engines".to_owned(),
        "GET /api/v1/service-engines/{name}".to_owned(),
        "DELETE /api/v1/service-engines/{name}".to_owned(),
        "POST /api/v1/service-engines/{name}/report".to_owned(),
        "GET /api/v1/tokens".to_owned(),
        "POST /api/v1/tokens".to_owned(),
        "DELETE /api/v1/tokens/{name}".to_owned(),
        "POST /api/v1/sessions".to_owned(),
        "DELETE /api/v1/sessions/current".to_owned(),
    ];
    for kind in [
        "network-profiles",
        "application-profiles",
        "health-monitors",
        "pools",
        "service-engine-groups",
        "virtual-services",
    ] {
        for m in ["GET", "POST"] {
            expected.push(format!("{m} /api/v1/{kind}"));
        }
        for m in ["GET", "PUT", "DELETE"] {
            expected.push(format!("{m} /api/v1/{kind}/{{name}}"));
        }
    }
    expected.sort();
    assert_eq!(listed, expected);

    // Every documented route is served (neither 404-for-route nor 405).
    for route in &listed {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path.replace("{name}", "nothing-by-this-name");
        let body = matches!(method, "POST" | "PUT").then(|| b"{}".to_vec());
        let r = ctl.raw(
            method,
            &path,
            Some(&ctl.token),
            Some("application/json"),
            body,
        );
        assert_ne!(r.status, 405, "{route}");
        assert!(
            r.status != 404 || r.error() != "not_found" || !r.message().contains("in this API"),
            "{route} is documented but not served"
        );
    }

    for schema in [
        "Pool",
        "VirtualService",
        "NetworkProfile",
        "HealthMonitor",
        "ErrorBody",
        "Config",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // The model's own documentation reaches the document.
    assert!(
        doc["components"]["schemas"]["Server"]["properties"]["ratio"]["description"]
            .as_str()
            .unwrap()
            .contains("1..=20")
    );
}

#[test]
fn names_outside_the_rule_are_422_with_their_path_and_change_nothing() {
    let ctl = Ctl::start();
    let huge = "p".repeat(8 << 20);
    for name in [
        "a\u{1}b",
        "a/b",
        "a b",
        "-lead",
        "\u{e9}t\u{e9}",
        &"p".repeat(129),
        &huge,
    ] {
        let mut body = pool();
        body["name"] = json!(name);
        body["health_monitors"] = json!([]);
        let r = ctl.refused(422, "validation_failed", |c| c.post("/api/v1/pools", body));
        assert_eq!(r.paths(), ["pools[0].name"], "{name:.40?}");
        assert!(r.message().contains("is not valid"), "{}", r.message());
        assert!(
            r.message().len() < 400,
            "the refusal does not echo a huge name"
        );
    }
    assert!(ctl.get("/api/v1/pools").body["items"]
        .as_array()
        .unwrap()
        .is_empty());
    // The longest and the widest valid names work, and Location leads to the object.
    for name in ["p".repeat(128), "web:pool.v1_a-b".to_owned()] {
        let mut body = pool();
        body["name"] = json!(name);
        body["health_monitors"] = json!([]);
        let r = ctl.post("/api/v1/pools", body).expect(201);
        let location = r.header("location").unwrap().to_owned();
        assert!(!location.contains(':'), "percent-encoded: {location}");
        assert_eq!(ctl.get(&location).expect(200).body["object"]["name"], name);
    }
}

// ---------------------------------------------------------------------------------------
// Edits of one object against the revision they were prepared from
// ---------------------------------------------------------------------------------------

#[test]
fn an_edit_prepared_against_an_older_revision_of_the_object_is_refused() {
    let ctl = Ctl::start();
    ctl.seed_web();
    let shown = ctl.get("/api/v1/pools/web-pool").expect(200);
    let revision = shown.body["revision"].as_u64().unwrap();
    assert_eq!(
        shown.header("etag"),
        Some(format!("\"{revision}\"").as_str())
    );
    let put_if = |c: &Ctl, if_match: &str, pool: &Value| {
        let auth = format!("Bearer {}", c.token);
        c.request(
            "PUT",
            "/api/v1/pools/web-pool",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
                ("If-Match", if_match),
            ],
            Some(serde_json::to_vec(pool).unwrap()),
        )
    };
    let etag = format!("\"{revision}\"");

    // A change to another object does not move this one's revision: still accepted.
    let mut monitor = health_monitor();
    monitor["send_interval"] = 12.into();
    ctl.put("/api/v1/health-monitors/web-tcp", monitor)
        .expect(200);
    let mut first = shown.body["object"].clone();
    first["servers"][0]["enabled"] = false.into();
    let saved = put_if(&ctl, &etag, &first).expect(200);
    let now = saved.body["revision"].as_u64().unwrap();
    assert!(now > revision);
    assert_eq!(saved.header("etag"), Some(format!("\"{now}\"").as_str()));

    // The second editor prepared theirs against the same old revision: refused, with both
    // revisions named, and nothing changes.
    let mut second = shown.body["object"].clone();
    second["servers"][1]["ratio"] = 3.into();
    let r = ctl.refused(412, "revision_mismatch", |c| put_if(c, &etag, &second));
    assert!(
        r.message().contains(&format!("since revision {revision}"))
            && r.message().contains(&format!("at revision {now}")),
        "{}",
        r.message()
    );
    assert_eq!(r.paths(), [r#"pools["web-pool"]"#]);
    let stored = ctl.get("/api/v1/pools/web-pool").expect(200);
    assert_eq!(stored.body["object"], first);

    ctl.refused(400, "invalid_header", |c| put_if(c, "\"soon\"", &second));
    // The document's pattern for the header: `"N"`, `W/"N"`, `N` or `*`, nothing else.
    let doc = ctl.get("/api/v1/openapi.json").expect(200).body;
    let parameters = doc["paths"]["/api/v1/pools/{name}"]["put"]["parameters"]
        .as_array()
        .unwrap();
    let if_match = parameters.iter().find(|p| p["name"] == "If-Match").unwrap();
    assert_eq!(
        if_match["schema"]["pattern"],
        r#"^(\*|(W/)?("[0-9]+"|[0-9]+))$"#
    );
    for refused in [
        "\"+5\"",
        "W/W/\"5\"",
        "\"\"5\"\"",
        "\"5",
        "W/",
        "5 6",
        "null",
    ] {
        ctl.refused(400, "invalid_header", |c| put_if(c, refused, &second));
    }
    for stale in [format!("W/\"{revision}\""), revision.to_string()] {
        ctl.refused(412, "revision_mismatch", |c| put_if(c, &stale, &second));
    }
    // A revision no u64 holds is well formed, and matches nothing.
    let r = ctl.refused(412, "revision_mismatch", |c| {
        put_if(c, "\"99999999999999999999\"", &second)
    });
    assert!(
        r.message().contains("99999999999999999999"),
        "{}",
        r.message()
    );
    // `*` and no header: whatever the revision.
    put_if(&ctl, "*", &second).expect(200);
}

/// A refusal that answers before reading the body (no token, say) says
/// `Connection: close` (RFC 9112 §9.6), since the server may close the connection after
/// it: a client reusing it for its next request would lose that request. An answer that
/// read its body keeps the connection.
#[test]
fn a_refusal_that_leaves_the_body_unread_closes_the_connection_and_says_so() {
    let ctl = Ctl::start();
    // Small enough to arrive with the header: a large one would still be in flight when
    // the server closes, and the kernel would answer it with a reset.
    let unread = vec![b' '; 100];
    let no_token = ctl.raw(
        "POST",
        "/api/v1/pools",
        None,
        Some("application/json"),
        Some(unread),
    );
    assert_eq!(no_token.status, 401);
    assert_eq!(no_token.header("connection"), Some("close"));
    // Read to its end, refused or not: the connection stays.
    let read = ctl.post("/api/v1/network-profiles", network_profile());
    assert_eq!(read.status, 201);
    assert_eq!(read.header("connection"), None);
    let invalid = ctl.post("/api/v1/pools", json!({"name": "p", "servers": "nope"}));
    assert_eq!(invalid.status, 400);
    assert_eq!(invalid.header("connection"), None);
}
