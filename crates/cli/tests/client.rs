//! The controller's command-line clients against a real `ricochet controller`: apply the
//! seed and see it, refusals that name the path and change nothing, and the messages for
//! an unreachable controller or a missing token.

mod support;

use support::{ControllerProcess, RICOCHET};

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples/seed.yaml");

fn controller() -> (tempfile::TempDir, ControllerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let ctl = ControllerProcess::start(&dir.path().join("state"));
    (dir, ctl)
}

/// The configuration revision, from `get configuration -o json`.
fn config_revision(ctl: &ControllerProcess) -> u64 {
    let (code, out, err) = ctl.cli(&["get", "configuration", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["revision"].as_u64().unwrap()
}

#[test]
fn apply_the_seed_then_get_shows_it() {
    let (_dir, ctl) = controller();
    let (code, out, err) = ctl.cli(&["apply", "-f", SEED, "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("  + virtual service web-vs\n"), "{out}");
    assert!(out.contains("  + network profile dsr-l3-tcp\n"), "{out}");
    assert!(out.contains("Applied: configuration revision"), "{out}");

    let (code, out, err) = ctl.cli(&["get", "vs"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAME", "VIP", "PORTS", "POOL", "NETWORK", "PROFILE", "SE", "GROUP", "ENABLED",
            "REVISION"
        ]
    );
    assert!(
        lines.iter().any(|l| l[..7]
            == [
                "web-vs",
                "192.168.35.241",
                "80",
                "web-pool",
                "dsr-l3-tcp",
                "-",
                "yes"
            ]),
        "{out}"
    );
    assert_eq!(lines.len(), 4, "three virtual services: {out}");

    let (code, out, _) = ctl.cli(&["get", "pool", "web-pool"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("192.168.33.10, 192.168.34.10")
            && out.contains("source_ip")
            && out.contains("web-tcp"),
        "{out}"
    );

    // The same file again changes nothing.
    let revision = config_revision(&ctl);
    let (code, out, _) = ctl.cli(&["apply", "-f", SEED, "--yes"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("No changes"), "{out}");
    assert_eq!(config_revision(&ctl), revision);

    // `get ... -o yaml` gives back a file `apply -f` takes, with no change.
    let (code, exported, _) = ctl.cli(&["get", "config", "-o", "yaml"]);
    assert_eq!(code, 0);
    let file = ctl.state_dir.join("exported.yaml");
    std::fs::write(&file, exported).unwrap();
    let (code, out, err) = ctl.cli(&["apply", "-f", file.to_str().unwrap(), "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("No changes"), "{out}");
}

#[test]
fn a_bad_file_shows_the_path_and_changes_nothing() {
    let (_dir, ctl) = controller();
    let seed = std::fs::read_to_string(SEED).unwrap();
    let revision = config_revision(&ctl);

    let bad = ctl.state_dir.join("dangling.yaml");
    std::fs::write(
        &bad,
        seed.replacen("pool: web-pool\n", "pool: web-pol\n", 1),
    )
    .unwrap();
    let (code, out, err) = ctl.cli(&["apply", "-f", bad.to_str().unwrap(), "--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains(r#"virtual_services["web-vs"].pool"#), "{err}");
    assert!(err.contains(r#"pool "web-pol" does not exist"#), "{err}");
    assert!(err.contains("nothing was applied"), "{err}");

    // A syntax error is found in the file, with its line.
    let typo = ctl.state_dir.join("typo.yaml");
    std::fs::write(
        &typo,
        seed.replacen(
            "{ ip: 192.168.33.10 }",
            "{ ip: 192.168.33.10, wieght: 2 }",
            1,
        ),
    )
    .unwrap();
    let (code, _, err) = ctl.cli(&["apply", "-f", typo.to_str().unwrap(), "--yes"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("wieght") && err.contains("typo.yaml:"),
        "{err}"
    );

    assert_eq!(config_revision(&ctl), revision, "nothing changed");
    let (_, out, _) = ctl.cli(&["get", "vs"]);
    assert!(out.contains("(no virtual services)"), "{out}");
}

#[test]
fn apply_previews_and_asks() {
    let (_dir, ctl) = controller();
    let revision = config_revision(&ctl);
    let (code, out, _) = ctl.cli(&["apply", "-f", SEED, "--dry-run"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("  + pool web-pool\n") && out.contains("Dry run"),
        "{out}"
    );
    // Not a terminal and no --yes: refused rather than applied unseen.
    let (code, _, err) = ctl.cli(&["apply", "-f", SEED]);
    assert_eq!(code, 1);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(config_revision(&ctl), revision);

    // A change shows the fields that change.
    ctl.cli(&["apply", "-f", SEED, "--yes"]);
    let seed = std::fs::read_to_string(SEED).unwrap();
    let next = ctl.state_dir.join("next.yaml");
    std::fs::write(
        &next,
        seed.replacen(
            "- { ip: 192.168.34.10 }",
            "- { ip: 192.168.34.10, ratio: 3 }",
            1,
        ),
    )
    .unwrap();
    let (code, out, _) = ctl.cli(&["apply", "-f", next.to_str().unwrap(), "--dry-run"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("  ~ pool web-pool\n      servers[1].ratio: 1 -> 3\n"),
        "{out}"
    );
}

#[test]
fn create_replace_delete_one_object() {
    let (_dir, ctl) = controller();
    let file = ctl.state_dir.join("hm.yaml");
    std::fs::write(
        &file,
        "name: web-http\ntype: http\nhttp_monitor:\n  http_request: GET /health HTTP/1.0\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (code, out, err) = ctl.cli(&["create", "hm", "-f", f]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("created health monitor web-http"), "{out}");
    let (code, _, err) = ctl.cli(&["create", "health-monitor", "-f", f]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");

    let (code, yaml, _) = ctl.cli(&["get", "monitor", "web-http", "-o", "yaml"]);
    assert_eq!(code, 0);
    std::fs::write(
        &file,
        yaml.replace("send_interval: 10", "send_interval: 30"),
    )
    .unwrap();
    let (code, out, err) = ctl.cli(&["replace", "hm", "-f", f]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("web-http"), "{out}");
    let (_, out, _) = ctl.cli(&["get", "hm"]);
    assert!(out.contains("30s"), "{out}");

    // JSON works as well as YAML; a bad value names its path.
    std::fs::write(
        &file,
        r#"{"name": "p", "servers": [{"ip": "10.0.0.1", "ratio": 99}]}"#,
    )
    .unwrap();
    let (code, _, err) = ctl.cli(&["create", "pool", "-f", f]);
    assert_eq!(code, 1);
    assert!(err.contains(r#"pools["p"].servers[0].ratio"#), "{err}");

    let (code, out, err) = ctl.cli(&["delete", "hm", "web-http"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("deleted health monitor web-http"), "{out}");
    let (code, _, err) = ctl.cli(&["get", "hm", "web-http"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(r#"health monitor "web-http" does not exist"#),
        "{err}"
    );

    let (code, _, err) = ctl.cli(&["get", "vips"]);
    assert_eq!(code, 2, "a usage error");
    assert!(err.contains("unknown kind"), "{err}");
}

#[test]
fn a_service_engine_group_from_a_file_carries_a_virtual_service() {
    let (_dir, ctl) = controller();
    ctl.cli(&["apply", "-f", SEED, "--yes"]);
    let file = ctl.state_dir.join("seg.yaml");
    std::fs::write(
        &file,
        r#"name: seg-a
engines:
  - { name: se1, addresses: [192.168.33.7, "fc00::7"] }
  - { name: se2, addresses: [192.168.33.8, "fc00::8"] }
bgp:
  local_as: 65001
  peers: [{ ip: 192.168.33.1, remote_as: 65000 }]
"#,
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (code, out, err) = ctl.cli(&["create", "seg", "-f", f]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("created service engine group seg-a"),
        "{out}"
    );
    let (code, out, err) = ctl.cli(&["get", "service-engine-groups"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "ENGINES", "BGP", "HOLD", "BFD", "REVISION"]
    );
    assert!(
        lines[1].starts_with(
            "seg-a  se1 (192.168.33.7 fc00::7), se2 (192.168.33.8 fc00::8)  \
             AS 65001 \u{2192} 192.168.33.1 AS 65000  9s    off"
        ),
        "{out}"
    );

    // The YAML out is a file replace takes.
    let (code, yaml, _) = ctl.cli(&["get", "seg", "seg-a", "-o", "yaml"]);
    assert_eq!(code, 0);
    std::fs::write(&file, yaml.replace("hold_time: 9", "hold_time: 30")).unwrap();
    let (code, _, err) = ctl.cli(&["replace", "seg", "-f", f]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = ctl.cli(&["get", "seg"]);
    assert!(out.contains("30s"), "{out}");

    // web-vs shares its VIP with dns-vs: alone, it cannot move to the group.
    let (_, yaml, _) = ctl.cli(&["get", "vs", "web-vs", "-o", "yaml"]);
    let vs_file = ctl.state_dir.join("vs.yaml");
    std::fs::write(&vs_file, format!("{yaml}se_group: seg-a\n")).unwrap();
    let (code, _, err) = ctl.cli(&["replace", "vs", "-f", vs_file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(r#"virtual_services["web-vs"].se_group: virtual service "dns-vs""#),
        "{err}"
    );
    // A virtual service in the group shows it; the group is then in use.
    let (_, yaml, _) = ctl.cli(&["get", "vs", "web-vs-v6", "-o", "yaml"]);
    std::fs::write(&vs_file, format!("{yaml}se_group: seg-a\n")).unwrap();
    let (code, _, err) = ctl.cli(&["replace", "vs", "-f", vs_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = ctl.cli(&["get", "vs", "web-vs-v6"]);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[5], "seg-a", "{out}");
    let (code, _, err) = ctl.cli(&["delete", "seg", "seg-a"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(r#"service engine group "seg-a" is in use by virtual service "web-vs-v6""#),
        "{err}"
    );
    // apply shows a group's changes field by field, with the other kinds'.
    let (_, exported, _) = ctl.cli(&["get", "config", "-o", "yaml"]);
    let next = ctl.state_dir.join("next.yaml");
    std::fs::write(&next, exported.replace("hold_time: 30", "hold_time: 60")).unwrap();
    let (code, out, err) = ctl.cli(&["apply", "-f", next.to_str().unwrap(), "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("  ~ service engine group seg-a\n      bgp.hold_time: 30 -> 60\n"),
        "{out}"
    );
    // A missing group is refused with its path, and changes nothing.
    std::fs::write(&vs_file, format!("{yaml}se_group: seg-b\n")).unwrap();
    let (code, _, err) = ctl.cli(&["replace", "vs", "-f", vs_file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(r#"virtual_services["web-vs-v6"].se_group"#),
        "{err}"
    );
}

#[test]
fn in_use_objects_name_their_users() {
    let (_dir, ctl) = controller();
    ctl.cli(&["apply", "-f", SEED, "--yes"]);
    let (code, _, err) = ctl.cli(&["delete", "pool", "web-pool"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(r#"pool "web-pool" is in use by virtual service "web-vs""#),
        "{err}"
    );
    let (code, _, err) = ctl.cli(&["delete", "appprof", "System-L4-Application"]);
    assert_eq!(code, 1);
    assert!(err.contains("built in"), "{err}");
}

#[test]
fn events_and_engines_are_listed() {
    let (_dir, ctl) = controller();
    ctl.cli(&["apply", "-f", SEED, "--yes"]);
    let (code, out, _) = ctl.cli(&["events"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("REVISION"), "{out}");
    assert!(
        out.contains("virtual-services/web-vs") && out.contains("created"),
        "{out}"
    );
    let (code, out, _) = ctl.cli(&["get", "se"]);
    assert_eq!(code, 0);
    assert!(out.contains("(no service engines registered)"), "{out}");
}

#[test]
fn an_unreachable_controller_says_how_to_start_it() {
    let out = std::process::Command::new(RICOCHET)
        .args(["get", "vs", "--url", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the controller is not reachable at http://127.0.0.1:1")
            && err.contains("ricochet controller"),
        "{err}"
    );
}

#[test]
fn a_missing_or_wrong_token_is_explained() {
    let (_dir, ctl) = controller();
    let out = std::process::Command::new(RICOCHET)
        .args([
            "get",
            "pools",
            "--url",
            &ctl.url,
            "--token-file",
            "/nonexistent/token",
        ])
        .env_remove("RICOCHET_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/token could not be read"),
        "{err}"
    );
    let out = std::process::Command::new(RICOCHET)
        .args(["get", "pools", "--url", &ctl.url, "--token", "rct_wrong"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the token is not valid"), "{err}");
}

/// POSTs `body` to the controller with `token`; the status.
fn post(ctl: &ControllerProcess, token: &str, path: &str, body: serde_json::Value) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .post(format!("{}{path}", ctl.url))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(serde_json::to_vec(&body).unwrap())
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn tokens_are_created_listed_used_and_revoked_from_the_command_line() {
    let (_dir, ctl) = controller();
    let (code, out, err) = ctl.cli(&["token", "create", "dash", "--role", "read-only", "-q"]);
    assert_eq!(code, 0, "{err}");
    let ro = out.trim().to_owned();
    assert!(ro.starts_with("rct_"), "{out}");
    let (code, out, err) = ctl.cli(&[
        "token", "create", "se1", "--role", "engine", "--engine", "se1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("role engine for engine se1") && out.contains("only this once"),
        "{out}"
    );

    let (code, out, _) = ctl.cli(&["token", "list"]);
    assert_eq!(code, 0);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "ROLE", "ENGINE", "CREATED"]);
    assert_eq!(rows[1][..3], ["admin", "admin", "-"]);
    assert_eq!(rows[2][..3], ["dash", "read_only", "-"]);
    assert_eq!(rows[3][..3], ["se1", "engine", "se1"]);
    assert!(!out.contains(&ro));

    // The read-only token reads and cannot write; the refusal says why.
    let as_ro = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--token", &ro]);
        ctl.cli(&all)
    };
    assert_eq!(as_ro(&["get", "pools"]).0, 0);
    let (code, _, err) = as_ro(&["delete", "pool", "web-pool"]);
    assert_ne!(code, 0);
    assert!(err.contains("role read_only"), "{err}");
    let (code, _, err) = as_ro(&["token", "list"]);
    assert_ne!(code, 0);
    assert!(err.contains("only an admin token"), "{err}");

    let (code, out, err) = ctl.cli(&["token", "revoke", "dash"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("revoked token dash"), "{out}");
    let (code, _, err) = as_ro(&["get", "pools"]);
    assert_ne!(code, 0);
    assert!(err.contains("not valid"), "{err}");
    let (code, _, err) = ctl.cli(&["token", "create", "x", "--role", "root"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown role"), "{err}");
}

#[test]
fn remote_text_is_printed_with_terminal_controls_escaped() {
    let (_dir, ctl) = controller();
    let token = ctl.token();
    let registration = serde_json::json!({"name": "se1", "addresses": ["10.0.0.1"],
        "version": "1\u{1b}]0;owned\u{7}"});
    assert_eq!(
        post(&ctl, &token, "/api/v1/service-engines", registration),
        201
    );
    let report = serde_json::json!({"state": "degraded",
        "message": "bad \u{1b}[2J\u{9b}31m news"});
    assert_eq!(
        post(&ctl, &token, "/api/v1/service-engines/se1/report", report),
        200
    );
    for args in [
        &["get", "se"][..],
        &["get", "se", "se1"],
        &["get", "se", "-o", "json"],
        &["get", "se", "-o", "yaml"],
        &["events"],
    ] {
        let (code, out, err) = ctl.cli(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            !out.contains(['\u{1b}', '\u{9b}', '\u{7}']),
            "{args:?} printed a raw control character: {out:?}"
        );
    }
    let (_, out, _) = ctl.cli(&["get", "se", "se1"]);
    assert!(
        out.contains("1\\u{1b}]0;owned"),
        "escaped, still readable: {out}"
    );
    // Errors quote the controller too.
    let (code, _, err) = ctl.cli(&["delete", "pool", "a\u{1b}[2J"]);
    assert_ne!(code, 0);
    assert!(!err.contains('\u{1b}'), "{err:?}");
    // A name longer than any name is refused before a request (it used to panic).
    let long = "a".repeat(70_000);
    let (code, _, err) = ctl.cli(&["get", "pool", &long]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is no name"), "{:.300}", err);
}
