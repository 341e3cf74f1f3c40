//! The engine's life on the seed's network (shared/TESTBED.md): it stops promptly on
//! SIGTERM, and `ricochet status` states the configuration revision truthfully across a
//! restart. Needs root.

mod support;

use std::time::{Duration, Instant};

use ricochet_testbed::{Process, SeedBed, VIP_V4, VIP_V6};
use support::seed::{seed_bed, started, Controlled as _};
use support::RICOCHET;

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
    let p = bed
        .topo
        .se1
        .ns
        .spawn(&[
            RICOCHET,
            "engine",
            "--config",
            &bed.path("ricochet.yaml"),
            "--interface",
            bed.topo.se1.iface,
            "--pin-dir",
            bed.pin_dir("se1").to_str().unwrap(),
            "--state-dir",
            &bed.path("state"),
            "--flows",
            "65536",
            "--watch-interval-ms",
            "100",
        ])
        .unwrap();
    started(p, "engine running")
}

fn status(bed: &SeedBed) -> String {
    let out = bed
        .topo
        .se1
        .ns
        .output(&[RICOCHET, "status", "--state-dir", &bed.path("state")])
        .unwrap();
    assert!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = status(bed);
        if text.contains(&format!("engine pid {} running", engine.pid())) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed the new engine: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM, then how long until the process has exited (panics after 10 s).
fn stop_timed(engine: &mut Process) -> Duration {
    let t = Instant::now();
    engine.signal(libc::SIGTERM).unwrap();
    let status = engine
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap_or_else(|| panic!("the engine ignored SIGTERM:\n{}", engine.report()));
    let took = t.elapsed();
    assert!(status.success(), "{status}: {}", engine.report());
    took
}

#[test]
fn the_engine_stops_promptly_and_its_revision_survives_a_restart() {
    let bed = seed_bed("lifecycle", &[VIP_V4.into(), VIP_V6.into()]);
    std::fs::write(bed.dir().join("ricochet.yaml"), with_dsr_path_monitor()).unwrap();
    let mut engine = start_engine(&bed);
    // Health checks running, the DSR probe path set up: what the engine does all day.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        engine.stderr().contains("web-dsr-path"),
        "the VIP-path monitor runs:\n{}",
        engine.report()
    );
    let before = revision(&status(&bed));
    let took = stop_timed(&mut engine);
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
    let took = stop_timed(&mut engine);
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[test]
fn an_engine_following_a_controller_stops_promptly() {
    let bed = seed_bed("lifecycle-ctl", &[VIP_V4.into(), VIP_V6.into()]);
    let _controller = bed.start_controller();
    let mut engine = bed.start_engine(&[]);
    bed.cli(&["apply", "-f", SEED, "--yes"]);
    std::thread::sleep(Duration::from_secs(3));
    let took = stop_timed(&mut engine);
    println!("SIGTERM to exit (controller mode): {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "SIGTERM to exit took {took:?}:\n{}",
        engine.report()
    );
}
