//! The engine's life on the seed's network (shared/TESTBED.md): it stops promptly on
//! SIGTERM, and `ricochet status` states the configuration revision truthfully across a
//! restart. Needs root.

mod support;

use std::time::Duration;

use ricochet_testbed::{Process, SeedBed, VIP_V4, VIP_V6};
use support::seed::{seed_bed, sigterm, Controlled as _, FileMode as _, FILE_STATE, FLOWS};
use support::wait_until;

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples/seed.yaml");

/// The seed, its web pool also checked through the VIP path (the DSR probe: a TC program
/// and marked probe sockets, more to take down at exit).
fn with_dsr_path_monitor() -> String {
    let seed = std::fs::read_to_string(SEED).unwrap();
    let monitor = "  - name: web-dsr-path
    type: tcp
    send_interval: 2
    receive_timeout: 1
    successful_checks: 1
    failed_checks: 2
    dsr_path: true
";
    let text = seed.replacen(
        "health_monitors:\n",
        &format!("health_monitors:\n{monitor}"),
        1,
    );
    let text = text.replacen(
        "health_monitors: [web-tcp]",
        "health_monitors: [web-tcp, web-dsr-path]",
        1,
    );
    assert!(text.contains("[web-tcp, web-dsr-path]"), "{text}");
    text
}

fn start_engine(bed: &SeedBed) -> Process {
    bed.start_file_engine(FLOWS, &["--watch-interval-ms", "100"])
}

fn status(bed: &SeedBed) -> String {
    bed.status_of(FILE_STATE)
}

/// The revision in status's first line, `Ricochet on eth0 (revision N, ...`.
fn revision(status: &str) -> u64 {
    status
        .split_once("(revision ")
        .and_then(|(_, rest)| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {status}"))
}

/// Status once the state file is `engine`'s (a restarted engine rewrites it).
fn current_status(bed: &SeedBed, engine: &Process) -> String {
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let text = status(bed);
        if text.contains(&format!("engine pid {} running", engine.pid())) {
            Ok(text)
        } else {
            Err(format!("status never showed the new engine: {text}"))
        }
    })
}

/// The engine's answer to SIGTERM must come well within this.
const STOP_LIMIT: Duration = Duration::from_secs(10);

#[test]
fn the_engine_stops_promptly_and_its_revision_survives_a_restart() {
    let bed = seed_bed("lifecycle", &[VIP_V4.into(), VIP_V6.into()]);
    bed.write_config(&with_dsr_path_monitor());
    let mut engine = start_engine(&bed);
    // Health checks running, the DSR probe path set up: what the engine does all day.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        engine.stderr().contains("web-dsr-path"),
        "the VIP-path monitor runs:\n{}",
        engine.report()
    );
    let before = revision(&status(&bed));
    let took = sigterm(&mut engine, STOP_LIMIT);
    println!("SIGTERM to exit: {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "SIGTERM to exit took {took:?}:\n{}",
        engine.report()
    );

    // A restart adopts the pinned data plane; the revision goes on from there.
    let mut engine = start_engine(&bed);
    let after = current_status(&bed, &engine);
    assert!(
        revision(&after) > before,
        "the revision goes on after a restart (was {before}): {after}"
    );
    let took = sigterm(&mut engine, STOP_LIMIT);
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[test]
fn an_engine_following_a_controller_stops_promptly() {
    let bed = seed_bed("lifecycle-ctl", &[VIP_V4.into(), VIP_V6.into()]);
    let _controller = bed.start_controller();
    let mut engine = bed.start_engine(&[]);
    bed.cli(&["apply", "-f", SEED, "--yes"]);
    std::thread::sleep(Duration::from_secs(3));
    let took = sigterm(&mut engine, STOP_LIMIT);
    println!("SIGTERM to exit (controller mode): {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "SIGTERM to exit took {took:?}:\n{}",
        engine.report()
    );
}
