//! schemathesis (from PyPI, installed by `cargo xtask setup`) against the OpenAPI document
//! of a real controller: generated requests, valid and invalid by the document, must get
//! no server error, only documented statuses, and answers that fit the documented schemas.
//! Bounded: 10 examples per operation, no stateful phase (about a minute here).

mod common;

use std::process::Command;

use common::Ctl;

const SCHEMATHESIS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../target/schemathesis-venv/bin/schemathesis"
);

#[test]
fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    assert!(
        std::path::Path::new(SCHEMATHESIS).exists(),
        "{SCHEMATHESIS} is missing: run `cargo xtask setup`"
    );
    let ctl = Ctl::start();
    ctl.seed_web();
    let doc = ctl.get("/api/v1/openapi.json").expect(200).body;
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(SCHEMATHESIS)
        // Its reports and cache go to the temporary directory.
        .current_dir(work.path())
        .args(["run", &format!("{}/api/v1/openapi.json", ctl.url)])
        .args(["-H", &format!("Authorization: Bearer {}", ctl.token)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "10", "--phases", "examples,fuzzing"])
        .args(["--seed", "1", "--no-color", "--request-timeout", "30"])
        .output()
        .expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It ran every operation and generated cases (not an empty run that passes).
    // schemathesis reports one operation fewer than the document lists (40 listed, 39
    // tested when this was written); a new route raises both.
    assert!(
        stdout.contains(&format!("Tested: {}", operations - 1)),
        "{operations} operations: {stdout}"
    );
    assert!(stdout.contains(" passed"), "{stdout}");
}
