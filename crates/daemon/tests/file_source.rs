//! The daemon's file-following loop, run in-process over the in-memory data plane: no
//! binary, no kernel, no privileges. The state file (what `ricochet status` reads) shows
//! what runs while the loop runs; the data plane's maps are checked once it stopped.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ricochet_daemon::run::{follow_file, start_file};
use ricochet_daemon::source::file::FileSource;
use ricochet_daemon::{state, Control, Runner, RunnerOptions, StateFile};
use ricochet_dataplane::kernel::AttachMode;
use ricochet_dataplane::memory::MemoryDataplane;
use ricochet_dataplane::Capacities;
use ricochet_engine::Engine;

/// A configuration of one pool (two servers of the VIP's family) and `services` virtual
/// services on the VIP `vip` (port 80, 81, ...). No health monitor: the test sends no packet.
fn config(vip: &str, services: u16) -> String {
    let mut text = String::from(
        "network_profiles:\n  - name: dsr\n    type: tcp_fast_path\n    dsr: { enabled: true, type: l3, encapsulation: ipinip }\n\
         pools:\n  - name: web-pool\n    servers:\n",
    );
    let servers = if vip.contains(':') {
        ["2001:db8:1::10", "2001:db8:1::11"]
    } else {
        ["192.0.2.10", "192.0.2.11"]
    };
    for ip in servers {
        text.push_str(&format!("      - {{ ip: \"{ip}\" }}\n"));
    }
    text.push_str("virtual_services:\n");
    for i in 0..services {
        text.push_str(&format!(
            "  - name: vs-{i}\n    vip: \"{vip}\"\n    services: [{{ port: {} }}]\n    network_profile: dsr\n    pool: web-pool\n",
            80 + i
        ));
    }
    text
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    state_dir: PathBuf,
}

fn setup(first: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, first).unwrap();
    let state_dir = dir.path().join("state");
    Setup {
        config,
        state_dir,
        _dir: dir,
    }
}

/// A runner over the in-memory data plane with an IPv4 outer source only.
fn runner(state_dir: &Path) -> Runner<MemoryDataplane> {
    let caps = Capacities {
        maglev_slots: 65_537 * 4,
        ..Capacities::default()
    };
    let mut engine = Engine::new(MemoryDataplane::new(caps));
    let source_v4 = Some(Ipv4Addr::new(192, 0, 2, 7));
    engine
        .set_settings(&ricochet_engine::settings(source_v4, None, 0))
        .unwrap();
    Runner::new(
        engine,
        RunnerOptions {
            interface: "test0".into(),
            xdp_mode: AttachMode::Native,
            pin_dir: "/nonexistent/pins".into(),
            state_dir: state_dir.to_owned(),
            source_v4,
            source_v6: None,
        },
    )
    .unwrap()
}

/// Stops the loop when dropped, also when an assertion fails (the scope joins it).
struct StopOnDrop<'a>(&'a Control);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

fn names(st: &StateFile) -> Vec<String> {
    st.status.services.iter().map(|s| s.name.clone()).collect()
}

/// Waits (5 s at most) until the state file satisfies `ok`; the last one read.
fn wait_state(dir: &Path, what: &str, ok: impl Fn(&StateFile) -> bool) -> StateFile {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(st) = state::read(dir) {
            if ok(&st) {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the state file still says {:?} (revision {})",
                names(&st),
                st.status.revision
            );
        }
        assert!(Instant::now() < deadline, "{what}: no state file");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_changed_file_is_applied_a_refused_one_keeps_the_running_configuration_and_stop_ends_the_loop()
{
    let s = setup(&config("198.51.100.1", 1));
    let mut runner = runner(&s.state_dir);
    let (file, config1, first) = FileSource::open(&s.config, Duration::from_millis(20)).unwrap();
    start_file(&mut runner, &file, &config1, &first).unwrap();
    assert!(runner.attached());
    let st = state::read(&s.state_dir).unwrap();
    assert_eq!(names(&st), ["vs-0"]);
    assert_eq!(st.config.as_deref(), Some(s.config.as_path()));
    assert_eq!(st.interface, "test0");
    let control = Control::new();

    std::thread::scope(|scope| {
        let looping = scope.spawn(|| follow_file(&mut runner, file, &control));
        let _stop = StopOnDrop(&control);

        // A valid change: applied.
        std::fs::write(&s.config, config("198.51.100.1", 2)).unwrap();
        let st = wait_state(&s.state_dir, "the second service", |st| {
            names(st) == ["vs-0", "vs-1"]
        });
        let applied = st.status.revision;

        // A file that does not validate (a virtual service naming no pool), then one
        // that validates but cannot run here (an IPv6 VIP, and the engine has no IPv6
        // outer source): both refused, the running configuration stays.
        let broken = config("198.51.100.1", 3).replace("pool: web-pool\n", "pool: no-such-pool\n");
        std::fs::write(&s.config, broken).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        std::fs::write(&s.config, config("2001:db8::1", 3)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let st = state::read(&s.state_dir).unwrap();
        assert_eq!(names(&st), ["vs-0", "vs-1"]);
        assert_eq!(st.status.revision, applied);

        // The loop still follows the file.
        std::fs::write(&s.config, config("198.51.100.2", 3)).unwrap();
        let st = wait_state(&s.state_dir, "the third configuration", |st| {
            st.status.services.len() == 3
        });
        assert!(st
            .status
            .services
            .iter()
            .all(|s| s.vip.to_string() == "198.51.100.2"));
        assert_eq!(st.status.revision, applied + 1);

        let asked = Instant::now();
        control.stop();
        looping.join().unwrap();
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "the loop took {:?} to stop",
            asked.elapsed()
        );
    });

    // The data plane's maps hold the last configuration applied: three ports of one VIP.
    let dp = runner.engine().dataplane();
    assert_eq!(dp.vips.len(), 1);
    assert_eq!(dp.services.len(), 3);
}

#[test]
fn a_reload_reads_the_file_without_waiting_for_the_watch() {
    let s = setup(&config("198.51.100.1", 1));
    let mut runner = runner(&s.state_dir);
    // A watch interval the test never reaches: only the reload makes the loop read.
    let (file, config1, first) = FileSource::open(&s.config, Duration::from_secs(3600)).unwrap();
    start_file(&mut runner, &file, &config1, &first).unwrap();
    let control = Control::new();
    std::thread::scope(|scope| {
        let looping = scope.spawn(|| follow_file(&mut runner, file, &control));
        let _stop = StopOnDrop(&control);
        std::fs::write(&s.config, config("198.51.100.1", 2)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(names(&state::read(&s.state_dir).unwrap()), ["vs-0"]);
        control.reload();
        wait_state(&s.state_dir, "the reloaded file", |st| {
            names(st) == ["vs-0", "vs-1"]
        });
        control.stop();
        looping.join().unwrap();
    });
}

#[test]
fn a_first_configuration_the_engine_cannot_run_is_refused_before_attaching() {
    let s = setup(&config("2001:db8::1", 1));
    let mut runner = runner(&s.state_dir);
    let (file, config1, first) = FileSource::open(&s.config, Duration::from_millis(20)).unwrap();
    let e = start_file(&mut runner, &file, &config1, &first).unwrap_err();
    assert!(
        format!("{e:#}").contains("IPv6 virtual services need an outer source"),
        "{e:#}"
    );
    assert!(!runner.attached());
    assert!(!state::state_file(&s.state_dir).exists());
}

#[test]
fn a_file_that_does_not_validate_is_refused_at_start() {
    let s = setup(&config("198.51.100.1", 1).replace("pool: web-pool\n", "pool: nope\n"));
    let e = FileSource::open(&s.config, Duration::from_millis(20))
        .err()
        .expect("refused");
    let text = format!("{e:#}");
    assert!(text.contains("invalid configuration"), "{text}");
    assert!(text.contains("nope"), "{text}");
}
