//! The command line's answers to bad input: clear errors, exit codes, nothing touched.

use std::process::Command;

const RICOCHET: &str = env!("CARGO_BIN_EXE_ricochet");
const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples/seed.yaml");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(RICOCHET)
        .args(args)
        .output()
        .expect("running ricochet");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A file holding `text` in a temporary directory removed when the guard drops.
fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    (dir, p)
}

#[test]
fn check_config_accepts_the_seed() {
    let (code, out, err) = run(&["check-config", SEED]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid"), "{out}");
    assert!(
        out.contains("virtual service web-vs: TCP 192.168.35.241 80 -> pool web-pool in ipinip"),
        "{out}"
    );
}

#[test]
fn check_config_names_the_object_and_field() {
    let seed = std::fs::read_to_string(SEED).unwrap();
    let bad = seed.replacen("pool: web-pool\n", "pool: web-pol\n", 1);
    let (_dir, p) = temp_file("dangling.yaml", &bad);
    let (code, _, err) = run(&["check-config", p.to_str().unwrap()]);
    assert_eq!(code, 2, "invalid configuration exits 2: {err}");
    assert!(err.contains(r#"virtual_services["web-vs"].pool"#), "{err}");
    assert!(err.contains(r#"pool "web-pol" does not exist"#), "{err}");
}

#[test]
fn check_config_reports_syntax_errors_with_line() {
    let (_dir, p) = temp_file(
        "syntax.yaml",
        "pools:\n  - name: p\n    servers: [{ ip: 10.0.0.1, wieght: 2 }]\n",
    );
    let (code, _, err) = run(&["check-config", p.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("wieght") && err.contains(":3:"),
        "line and field named: {err}"
    );
}

#[test]
fn engine_refuses_an_invalid_config_before_touching_the_kernel() {
    let seed = std::fs::read_to_string(SEED).unwrap();
    // A server that is also a VIP.
    let bad = seed.replacen("{ ip: 192.168.33.10 }", "{ ip: 192.168.35.241 }", 1);
    let (dir, p) = temp_file("server-is-vip.yaml", &bad);
    let pins = dir.path().join("pins");
    let (code, _, err) = run(&[
        "engine",
        "--config",
        p.to_str().unwrap(),
        "--interface",
        "lo",
        "--pin-dir",
        pins.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("192.168.35.241") && err.contains("pools"),
        "{err}"
    );
    assert!(!pins.exists(), "nothing pinned for a refused configuration");
}

#[test]
fn unknown_interface_and_bad_flags_are_named() {
    let (code, _, err) = run(&["engine", "--config", SEED, "--interface", "no-such-if0"]);
    assert_ne!(code, 0);
    assert!(err.contains("no-such-if0"), "{err}");
    let (code, _, err) = run(&[
        "engine",
        "--config",
        SEED,
        "--interface",
        "lo",
        "--xdp-mode",
        "turbo",
    ]);
    assert_eq!(code, 2, "clap usage error");
    assert!(
        err.contains("turbo") && err.contains("native, generic or auto"),
        "{err}"
    );
}

#[test]
fn status_without_an_engine_says_so() {
    let dir = std::env::temp_dir().join(format!("ricochet-cli-nostate-{}", std::process::id()));
    let (code, _, err) = run(&["status", "--state-dir", dir.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("is the engine running"), "{err}");
}

#[test]
fn engine_source_flags_are_checked_before_anything_starts() {
    let pins = std::env::temp_dir().join(format!("ricochet-cli-srcpins-{}", std::process::id()));
    let pin_dir = pins.to_str().unwrap();
    let engine = |extra: &[&str]| {
        let mut args = vec!["engine", "--interface", "lo", "--pin-dir", pin_dir];
        args.extend_from_slice(extra);
        run(&args)
    };
    let (code, _, err) = engine(&["--config", SEED, "--controller", "http://127.0.0.1:1"]);
    assert_eq!(code, 2, "clap usage error: {err}");
    assert!(
        err.contains("--config") && err.contains("--controller"),
        "{err}"
    );
    let (code, _, err) = engine(&[]);
    assert_eq!(code, 2, "a source is required: {err}");
    assert!(err.contains("--config"), "{err}");

    let (code, _, err) = engine(&["--controller", "127.0.0.1:8480"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--controller \"127.0.0.1:8480\"") && err.contains("http://"),
        "{err}"
    );
    let (code, _, err) = engine(&["--controller", "http://127.0.0.1:1", "--name", "se 1"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("engine name \"se 1\" is not valid") && err.contains("--name"),
        "{err}"
    );
    let (code, _, err) = run(&["all-in-one", "--interface", "lo", "--name", "se/1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("engine name \"se/1\" is not valid"), "{err}");
    assert!(!pins.exists(), "nothing pinned for refused flags");
}
