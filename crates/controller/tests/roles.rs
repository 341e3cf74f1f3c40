//! Tokens and roles: token management through the API, and the role matrix — every
//! role against every route of the router's table, so that a new route cannot be left
//! without a decision about who may call it.

mod common;

use std::collections::BTreeSet;

use common::Ctl;
use ricochet_controller::api::ROUTE_ACCESS;
use serde_json::{json, Value};

/// Creates a token with the admin token; returns the secret.
fn token(ctl: &Ctl, name: &str, role: &str, engine: Option<&str>) -> String {
    let mut body = json!({"name": name, "role": role});
    if let Some(engine) = engine {
        body["engine"] = json!(engine);
    }
    let r = ctl.post("/api/v1/tokens", body).expect(201);
    assert_eq!(r.body["role"], role);
    assert_eq!(
        r.header("location"),
        Some(&*format!("/api/v1/tokens/{name}"))
    );
    r.body["token"].as_str().unwrap().to_owned()
}

fn call(ctl: &Ctl, token: &str, method: &str, path: &str, body: Option<Value>) -> common::Reply {
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
    let authorization = format!("Bearer {token}");
    let mut headers = vec![("Authorization", authorization.as_str())];
    if bytes.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    if method != "GET" {
        // A refusal answers before the body is read, and the server then closes the
        // connection: do not let the client reuse it for the next request. Not only when
        // there is a body: a POST without one may still carry an empty chunked body, whose
        // end the server has or has not read when it refuses (a CI run lost the race).
        headers.push(("Connection", "close"));
    }
    ctl.request(method, path, &headers, bytes)
}

/// Which roles may call a route: the specification, written independently of the
/// controller's table.
fn allowed(method: &str, path: &str) -> &'static [&'static str] {
    const ALL: &[&str] = &["admin", "operator", "read_only", "engine"];
    match (method, path) {
        (_, "/healthz" | "/api/v1/openapi.json") => ALL,
        (_, p) if p.starts_with("/api/v1/tokens") => &["admin"],
        (_, p) if p.starts_with("/api/v1/sessions") => &["admin", "operator", "read_only"],
        ("POST", "/api/v1/service-engines" | "/api/v1/service-engines/{name}/report") => {
            &["admin", "operator", "engine"]
        }
        ("GET", "/api/v1/desired") => ALL,
        ("GET", _) => &["admin", "operator", "read_only"],
        _ => &["admin", "operator"],
    }
}

#[test]
fn every_role_against_every_route() {
    let ctl = Ctl::start();
    let tokens = [
        ("admin", ctl.token.clone()),
        ("operator", token(&ctl, "op", "operator", None)),
        ("read_only", token(&ctl, "ro", "read_only", None)),
        ("engine", token(&ctl, "engine-se-1", "engine", Some("se-1"))),
    ];
    // The routes the router serves, from its document, must be exactly the table's.
    let doc = ctl.get("/api/v1/openapi.json").expect(200).body;
    let mut served = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            served.insert((method.to_uppercase(), path.clone()));
        }
    }
    let declared: BTreeSet<(String, String)> = ROUTE_ACCESS
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(served, declared, "every served route has a declared access");

    for (method, route) in &served {
        // The engine's own name wherever a name goes: a refusal is then the role's.
        let path = route.replace("{name}", "se-1");
        let path = if route == "/api/v1/desired" {
            "/api/v1/desired?engine=se-1".to_owned()
        } else {
            path
        };
        let allowed = allowed(method, route);
        for (role, secret) in &tokens {
            // A body that every handler refuses (400) once authorized, so nothing changes.
            let body = matches!(method.as_str(), "POST" | "PUT").then(|| json!({"x": 1}));
            let before = ctl.revision();
            let r = call(&ctl, secret, method, &path, body);
            if allowed.contains(role) {
                assert!(
                    r.status != 401 && r.status != 403 && r.status < 500,
                    "{role} may {method} {route}, got {}: {:#}",
                    r.status,
                    r.body
                );
            } else {
                assert_eq!(
                    r.status, 403,
                    "{role} may not {method} {route}: {:#}",
                    r.body
                );
                assert_eq!(r.error(), "forbidden");
                assert!(r.message().contains(role), "{}", r.message());
                assert_eq!(ctl.revision(), before, "a refused request changed nothing");
            }
        }
    }
}

#[test]
fn an_engine_token_acts_only_for_its_own_engine_and_never_on_the_configuration() {
    let ctl = Ctl::start();
    ctl.seed_web();
    let se1 = token(&ctl, "se-1", "engine", Some("se-1"));
    let registration =
        |name: &str| json!({"name": name, "addresses": ["10.0.0.1"], "version": "t"});
    call(
        &ctl,
        &se1,
        "POST",
        "/api/v1/service-engines",
        Some(registration("se-1")),
    )
    .expect(201);
    let r = call(
        &ctl,
        &se1,
        "POST",
        "/api/v1/service-engines",
        Some(registration("se-2")),
    );
    assert_eq!(r.status, 403, "{:#}", r.body);
    assert!(r.message().contains("se-2"), "{}", r.message());
    ctl.post("/api/v1/service-engines", registration("se-2"))
        .expect(201);

    let report = json!({"revision": 1, "state": "running"});
    let own = call(
        &ctl,
        &se1,
        "POST",
        "/api/v1/service-engines/se-1/report",
        Some(report.clone()),
    );
    assert_eq!(own.status, 200, "{:#}", own.body);
    let other = call(
        &ctl,
        &se1,
        "POST",
        "/api/v1/service-engines/se-2/report",
        Some(report),
    );
    assert_eq!(other.status, 403, "{:#}", other.body);

    call(&ctl, &se1, "GET", "/api/v1/desired?engine=se-1", None).expect(200);
    call(&ctl, &se1, "GET", "/api/v1/desired?engine=se-2", None).expect(403);
    let r = call(&ctl, &se1, "GET", "/api/v1/desired", None).expect(403);
    assert!(r.message().contains("engine=se-1"), "{}", r.message());

    // Nothing of the configuration, not even reading it object by object.
    let before = ctl.revision();
    call(&ctl, &se1, "PUT", "/api/v1/configuration", Some(json!({}))).expect(403);
    call(
        &ctl,
        &se1,
        "DELETE",
        "/api/v1/virtual-services/web-vs",
        None,
    )
    .expect(403);
    call(&ctl, &se1, "DELETE", "/api/v1/service-engines/se-2", None).expect(403);
    call(&ctl, &se1, "GET", "/api/v1/pools", None).expect(403);
    call(
        &ctl,
        &se1,
        "POST",
        "/api/v1/tokens",
        Some(json!({"name": "x", "role": "admin"})),
    )
    .expect(403);
    assert_eq!(ctl.revision(), before);
    ctl.get("/api/v1/virtual-services/web-vs").expect(200);
}

#[test]
fn tokens_are_created_listed_and_revoked_and_only_their_hashes_are_stored() {
    let ctl = Ctl::start();
    let ro = token(&ctl, "dashboard", "read_only", None);
    call(&ctl, &ro, "GET", "/api/v1/pools", None).expect(200);

    // Refusals: duplicate, bad name, engine without engine name, engine name elsewhere.
    let r = ctl
        .post(
            "/api/v1/tokens",
            json!({"name": "dashboard", "role": "operator"}),
        )
        .expect(409);
    assert_eq!(r.paths(), ["name"]);
    let r = ctl
        .post("/api/v1/tokens", json!({"name": "a/b", "role": "operator"}))
        .expect(422);
    assert_eq!(r.paths(), ["name"]);
    let r = ctl
        .post("/api/v1/tokens", json!({"name": "se", "role": "engine"}))
        .expect(422);
    assert_eq!(r.paths(), ["engine"]);
    let r = ctl
        .post(
            "/api/v1/tokens",
            json!({"name": "op", "role": "operator", "engine": "se-1"}),
        )
        .expect(422);
    assert_eq!(r.paths(), ["engine"]);
    ctl.post("/api/v1/tokens", json!({"name": "x", "role": "root"}))
        .expect(400);

    let list = ctl.get("/api/v1/tokens").expect(200).body;
    let items = list["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "dashboard"]);
    assert_eq!(items[0]["role"], "admin");
    assert_eq!(items[1]["role"], "read_only");
    assert!(
        !list.to_string().contains(&ro),
        "a listing never shows a token"
    );
    let store = std::fs::read(ctl.dir.path().join("controller.redb")).unwrap();
    let contains = |needle: &[u8]| store.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(ro.as_bytes()), "the token itself is not stored");
    assert!(contains(ricochet_controller::auth::hash(&ro).as_bytes()));

    ctl.delete("/api/v1/tokens/dashboard").expect(200);
    let r = call(&ctl, &ro, "GET", "/api/v1/pools", None);
    assert_eq!(r.status, 401, "a revoked token stops working at once");
    ctl.delete("/api/v1/tokens/dashboard").expect(404);
    let events = ctl.get("/api/v1/events").expect(200).body;
    let revoked = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["subject"] == "tokens/dashboard" && e["state"] == "revoked");
    assert!(revoked, "{events:#}");
}

#[test]
fn a_looser_state_directory_is_tightened_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = common::options(dir.path());
    let ctl = Ctl::start_with(dir, o);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(ctl.dir.path()), 0o700);
    assert_eq!(mode(&ctl.dir.path().join("controller.redb")), 0o600);
    assert_eq!(mode(&ctl.dir.path().join("admin-token")), 0o600);
    // A store file left readable by others is made private at the next start.
    let store = ctl.dir.path().join("controller.redb");
    let dir = ctl.stop();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = common::options(dir.path());
    let ctl = Ctl::start_with(dir, o);
    assert_eq!(mode(&ctl.dir.path().join("controller.redb")), 0o600);
}

#[test]
fn a_state_directory_of_another_user_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to give the directory to another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let e = runtime
        .block_on(ricochet_controller::Controller::bind(common::options(
            dir.path(),
        )))
        .err()
        .expect("refused");
    let message = e.to_string();
    assert!(
        message.contains("mode 777") && message.contains("uid 65534"),
        "{message}"
    );
    assert!(
        !dir.path().join("controller.redb").exists(),
        "nothing was created"
    );
}

#[test]
fn a_session_acts_as_its_token_until_signed_out_or_the_token_is_revoked() {
    let ctl = Ctl::start();
    let ro = token(&ctl, "dashboard", "read_only", None);
    let start = |t: &str| {
        let r = call(&ctl, t, "POST", "/api/v1/sessions", None).expect(201);
        assert_eq!(r.body["name"], "dashboard");
        assert_eq!(r.body["role"], "read_only");
        assert!(r.body["expires_at"].as_str().unwrap().ends_with('Z'));
        r.body["session"].as_str().unwrap().to_owned()
    };
    let session = start(&ro);
    assert!(
        session.starts_with("rcs_") && session.len() == 68,
        "{session}"
    );
    // It has the token's role, no more.
    call(&ctl, &session, "GET", "/api/v1/pools", None).expect(200);
    call(&ctl, &session, "DELETE", "/api/v1/pools/x", None).expect(403);

    // Signing out with the token itself is refused: it would end nothing.
    let r = call(&ctl, &ro, "DELETE", "/api/v1/sessions/current", None).expect(409);
    assert_eq!(r.error(), "not_a_session");
    assert!(r.message().contains("revoke"), "{}", r.message());

    // Signing out ends this session only; the token and its other sessions go on.
    let other = start(&session);
    call(&ctl, &session, "DELETE", "/api/v1/sessions/current", None).expect(204);
    let r = call(&ctl, &session, "GET", "/api/v1/pools", None).expect(401);
    assert!(r.message().contains("not valid"), "{}", r.message());
    call(&ctl, &session, "DELETE", "/api/v1/sessions/current", None).expect(401);
    call(&ctl, &ro, "GET", "/api/v1/pools", None).expect(200);
    call(&ctl, &other, "GET", "/api/v1/pools", None).expect(200);

    // An engine token has no console to sign in to.
    let se1 = token(&ctl, "se-1", "engine", Some("se-1"));
    call(&ctl, &se1, "POST", "/api/v1/sessions", None).expect(403);

    // One token's sessions are bounded: past the limit its oldest ends.
    let first = start(&ro);
    for _ in 0..40 {
        start(&ro);
    }
    call(&ctl, &first, "GET", "/api/v1/pools", None).expect(401);
    let last = start(&ro);
    call(&ctl, &last, "GET", "/api/v1/pools", None).expect(200);

    // Revoking the token ends every session made from it.
    ctl.delete("/api/v1/tokens/dashboard").expect(200);
    call(&ctl, &last, "GET", "/api/v1/pools", None).expect(401);
    call(&ctl, &other, "GET", "/api/v1/pools", None).expect(401);
}

#[test]
fn sessions_are_refused_when_authentication_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = common::options(dir.path());
    options.auth = false;
    let ctl = Ctl::start_with(dir, options);
    let r = ctl.post("/api/v1/sessions", json!({})).expect(409);
    assert_eq!(r.error(), "auth_disabled");
}
