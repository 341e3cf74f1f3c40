//! The daemon's controller-following loop, run in-process over the in-memory data plane
//! against a real controller (`ricochet-controller`, on loopback, without auth): the
//! engine registers, applies the revision it is given, reports it; a revision it cannot
//! run is refused, reported as degraded, and the running one stays.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{config, runner, StopOnDrop};
use ricochet_api::client::{Client, ClientOptions};
use ricochet_api::types::{ApplyResult, EngineRunState, ServiceEngine};
use ricochet_config::Config;
use ricochet_daemon::run::{follow_controller, start_controller};
use ricochet_daemon::source::controller::{self, ControllerOptions};
use ricochet_daemon::{state, Control};
use serde_json::Value;

/// A controller serving until dropped.
struct TestController {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestController {
    fn start(state_dir: &Path) -> Self {
        let mut options =
            ricochet_controller::Options::new("127.0.0.1:0".parse().unwrap(), state_dir.into());
        options.auth = false;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let controller = runtime
            .block_on(ricochet_controller::Controller::bind(options))
            .unwrap();
        let url = format!("http://{}", controller.local_addr());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime
                .block_on(controller.run(async {
                    let _ = rx.await;
                }))
                .unwrap();
        });
        TestController {
            url,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn client(&self) -> Client {
        Client::new(&ClientOptions {
            url: self.url.clone(),
            token: None,
            token_file: "/nonexistent/token".into(),
            tls: Default::default(),
        })
    }

    /// Applies `yaml` as the whole configuration; its revision.
    fn apply(&self, yaml: &str) -> u64 {
        let config = Config::from_yaml_str(yaml).unwrap();
        let body = serde_json::to_value(&config).unwrap();
        let (result, _) = self
            .client()
            .call::<ApplyResult>("PUT", "/api/v1/configuration", Some(&body), &[])
            .unwrap();
        assert!(result.committed);
        result.revision
    }
}

impl Drop for TestController {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The test's engine.
const NAME: &str = "se-test";

/// Waits (10 s at most) until the controller's view of the engine satisfies `ok`.
fn wait_engine(ctl: &TestController, what: &str, ok: impl Fn(&ServiceEngine) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = ctl.client();
    loop {
        let seen = client.get::<ServiceEngine>(&format!("/api/v1/service-engines/{NAME}"));
        if let Ok(engine) = &seen {
            if ok(engine) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the controller says {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_engine_applies_and_reports_the_controllers_revisions_and_refuses_what_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = TestController::start(&dir.path().join("controller"));
    let first = ctl.apply(&config("198.51.100.1", 1));

    let engine_dir = dir.path().join("engine");
    let mut runner = runner(&engine_dir);
    let (follower, reporter) = controller::connect(
        &ControllerOptions {
            url: ctl.url.clone(),
            token: None,
            token_file: "/nonexistent/token".into(),
            name: NAME.into(),
            tls: Default::default(),
        },
        vec!["192.0.2.7".parse().unwrap()],
    );
    let control = Control::new();
    std::thread::scope(|scope| {
        let running = start_controller(&mut runner, &ctl.url, None);
        assert!(running.is_none());
        let runner = &mut runner;
        let control_ref = &control;
        let looping = scope
            .spawn(move || follow_controller(runner, &follower, &reporter, running, control_ref));
        let _stop = StopOnDrop(&control);

        wait_engine(&ctl, "the first revision running", |e| {
            e.report.as_ref().is_some_and(|r| {
                r.report.state == EngineRunState::Running && r.report.revision == Some(first)
            })
        });
        let st = state::read(&engine_dir).unwrap();
        assert_eq!(st.controller.as_deref(), Some(ctl.url.as_str()));
        assert_eq!(st.controller_revision, Some(first));
        assert_eq!(st.status.services.len(), 1);
        // Kept for a restart while the controller is away.
        let kept = controller::load_persisted(&engine_dir).expect("persisted");
        assert_eq!(kept.revision, first);
        assert_eq!(kept.controller, ctl.url);

        // Valid for the controller, but this engine has no IPv6 outer source.
        let refused = ctl.apply(&config("2001:db8::1", 2));
        wait_engine(&ctl, "the refusal reported", |e| {
            e.report.as_ref().is_some_and(|r| {
                r.report.state == EngineRunState::Degraded
                    && r.report.revision == Some(first)
                    && r.report.message.as_deref().is_some_and(|m| {
                        m.contains(&format!("revision {refused} refused"))
                            && m.contains(&format!("revision {first} keeps running"))
                    })
            })
        });
        let st = state::read(&engine_dir).unwrap();
        assert_eq!(st.controller_revision, Some(first));
        assert_eq!(st.status.services.len(), 1);

        // The next revision it can run clears the refusal.
        let second = ctl.apply(&config("198.51.100.2", 3));
        wait_engine(&ctl, "the third revision running", |e| {
            e.report.as_ref().is_some_and(|r| {
                r.report.state == EngineRunState::Running
                    && r.report.revision == Some(second)
                    && r.report.message.is_none()
                    && r.report.counters.services.len() == 3
            })
        });
        control.stop();
        looping.join().unwrap();
    });
    let dp = runner.engine().dataplane();
    assert_eq!(dp.services.len(), 3);
    // The engine registered with the address it was given.
    let engine: Value = ctl.client().get("/api/v1/service-engines/se-test").unwrap();
    assert_eq!(engine["addresses"][0], "192.0.2.7");
}
