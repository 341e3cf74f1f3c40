//! The daemon's file-following loop, run in-process over the in-memory data plane: no
//! binary, no kernel, no privileges. The state file (what `ricochet status` reads) shows
//! what runs while the loop runs; the data plane's maps are checked once it stopped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

use common::{config, runner, StopOnDrop};
use ricochet_daemon::run::{follow_file, start_file};
use ricochet_daemon::source::file::FileSource;
use ricochet_daemon::{state, Control, StateFile};

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

/// Replaces the followed file whole (a temporary file renamed over it), as a careful
/// operator does: the loop then reads the old content or the new one, never the moment
/// between a truncation and the write that `std::fs::write` has.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
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
        replace(&s.config, &config("198.51.100.1", 2));
        let st = wait_state(&s.state_dir, "the second service", |st| {
            names(st) == ["vs-0", "vs-1"]
        });
        let applied = st.status.revision;

        // A file that does not validate (a virtual service naming no pool), then one
        // that validates but cannot run here (an IPv6 VIP, and the engine has no IPv6
        // outer source): both refused, the running configuration stays.
        let broken = config("198.51.100.1", 3).replace("pool: web-pool\n", "pool: no-such-pool\n");
        replace(&s.config, &broken);
        std::thread::sleep(Duration::from_millis(200));
        replace(&s.config, &config("2001:db8::1", 3));
        std::thread::sleep(Duration::from_millis(200));
        let st = state::read(&s.state_dir).unwrap();
        assert_eq!(names(&st), ["vs-0", "vs-1"]);
        assert_eq!(st.status.revision, applied);

        // The loop still follows the file.
        replace(&s.config, &config("198.51.100.2", 3));
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
        replace(&s.config, &config("198.51.100.1", 2));
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

/// A followed file that becomes empty (as one rewritten in place is for a moment, and
/// `std::fs::write` does) is refused: applying it would remove every service.
#[test]
fn an_emptied_file_is_refused_and_the_running_configuration_stays() {
    let s = setup(&config("198.51.100.1", 2));
    let mut runner = runner(&s.state_dir);
    let (file, config1, first) = FileSource::open(&s.config, Duration::from_secs(3600)).unwrap();
    start_file(&mut runner, &file, &config1, &first).unwrap();
    let before = state::read(&s.state_dir).unwrap().status.revision;
    let control = Control::new();
    std::thread::scope(|scope| {
        let looping = scope.spawn(|| follow_file(&mut runner, file, &control));
        let _stop = StopOnDrop(&control);
        // Empty, then only blank lines: each read on a reload, each refused.
        for emptied in ["", "\n  \n"] {
            replace(&s.config, emptied);
            control.reload();
            std::thread::sleep(Duration::from_millis(300));
            let st = state::read(&s.state_dir).unwrap();
            assert_eq!(names(&st), ["vs-0", "vs-1"], "{emptied:?}");
            assert_eq!(st.status.revision, before, "{emptied:?}");
        }
        // The explicit way to run without services is applied.
        replace(&s.config, "virtual_services: []\n");
        control.reload();
        wait_state(&s.state_dir, "no services", |st| {
            st.status.services.is_empty()
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
