//! What the printing commands do with their output: a reader that goes away early
//! (`ricochet ... | head`) ends them quietly, and an invalid file's message says
//! "invalid configuration" once.

mod support;

use std::process::Command;

use support::{assert_quiet_end, run_into_closed_pipe, ControllerProcess, RICOCHET};

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples/seed.yaml");

#[test]
fn check_config_into_a_closed_pipe_ends_quietly() {
    let mut cmd = Command::new(RICOCHET);
    cmd.args(["check-config", SEED]);
    assert_quiet_end("check-config", run_into_closed_pipe(cmd));
}

#[test]
fn controller_clients_into_a_closed_pipe_end_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(dir.path());
    let (code, _, err) = controller.cli(&["apply", "-f", SEED, "--yes"]);
    assert_eq!(code, 0, "{err}");
    for args in [
        &["get", "virtualservices"][..],
        &["get", "pools", "-o", "yaml"],
        &["events"],
    ] {
        let mut cmd = Command::new(RICOCHET);
        cmd.args(args)
            .env("RICOCHET_URL", &controller.url)
            .env("RICOCHET_TOKEN_FILE", controller.token_file())
            .env_remove("RICOCHET_TOKEN");
        assert_quiet_end(&args.join(" "), run_into_closed_pipe(cmd));
    }
}

#[test]
fn an_invalid_file_says_invalid_configuration_once() {
    let seed = std::fs::read_to_string(SEED).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.yaml");
    std::fs::write(
        &one,
        seed.replacen("pool: web-pool\n", "pool: web-pol\n", 1),
    )
    .unwrap();
    let out = Command::new(RICOCHET)
        .args(["check-config"])
        .arg(&one)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{}: invalid configuration: virtual_services[\"web-vs\"].pool: pool \"web-pol\" \
             does not exist (known pools: web-pool, web-pool-v6, dns-pool)\n",
            one.display()
        )
    );

    let two = dir.path().join("two.yaml");
    let bad = seed
        .replacen("pool: web-pool\n", "pool: web-pol\n", 1)
        .replacen("pool: dns-pool\n", "pool: dns-pol\n", 1);
    std::fs::write(&two, bad).unwrap();
    let out = Command::new(RICOCHET)
        .args(["check-config"])
        .arg(&two)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "{}: invalid configuration (2 errors):\n  - ",
            two.display()
        )),
        "{err}"
    );
    assert_eq!(err.matches("invalid configuration").count(), 1, "{err}");

    // The engine refuses the same file with the same words, once.
    let pins = dir.path().join("pins");
    let out = Command::new(RICOCHET)
        .args(["engine", "--interface", "lo", "--config"])
        .arg(&one)
        .arg("--pin-dir")
        .arg(&pins)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "error: {}: invalid configuration: virtual_services[\"web-vs\"].pool: pool \"web-pol\" does not exist",
            one.display()
        )),
        "{err}"
    );
    assert_eq!(err.matches("invalid configuration").count(), 1, "{err}");
}
