//! The console served by an in-process controller: its files without a token, with their
//! security headers; the live stream only with a valid token, its first events, and its end
//! when the controller stops. No root needed.

use std::io::{BufRead as _, BufReader};
use std::time::{Duration, Instant};

use ricochet_controller::{Controller, Options};
use sha2::{Digest as _, Sha256};

struct Ctl {
    url: String,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Ctl {
    fn start() -> Ctl {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::new("127.0.0.1:0".parse().unwrap(), dir.path().to_owned());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut controller = Controller::bind(options).await.unwrap();
                ricochet_console::attach(&mut controller);
                ready_tx.send(controller.local_addr()).unwrap();
                controller
                    .run(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = ready_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        let token = std::fs::read_to_string(dir.path().join("admin-token"))
            .unwrap()
            .trim()
            .to_owned();
        Ctl {
            url: format!("http://{addr}"),
            token,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn get(&self, path: &str, token: Option<&str>) -> ureq::http::Response<ureq::Body> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let mut request = agent.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        request.call().unwrap()
    }

    /// Stops the controller; how long that took.
    fn stop(&mut self) -> Duration {
        let t = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        t.elapsed()
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        self.stop();
    }
}

fn header<'a>(r: &'a ureq::http::Response<ureq::Body>, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

#[test]
fn the_pages_are_served_without_a_token_with_a_strict_policy() {
    let ctl = Ctl::start();
    for path in ["/", "/console"] {
        let r = ctl.get(path, None);
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(header(&r, "location"), "/console/");
    }
    let mut index = ctl.get("/console/", None);
    assert_eq!(index.status(), 200);
    assert_eq!(header(&index, "content-type"), "text/html; charset=utf-8");
    let csp = header(&index, "content-security-policy").to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(header(&index, "x-content-type-options"), "nosniff");
    let html = index.body_mut().read_to_string().unwrap();
    // Every file the page names is served, and none comes from elsewhere.
    for asset in [
        "vendor/uPlot.iife.min.js",
        "vendor/uPlot.min.css",
        "console.css",
        "app.js",
    ] {
        assert!(html.contains(&format!("\"{asset}\"")), "{asset}");
    }
    assert!(!html.contains("http://") && !html.contains("https://"));
    for asset in ricochet_console::assets::ASSETS {
        let mut r = ctl.get(&format!("/console/{}", asset.path), None);
        assert_eq!(r.status(), 200, "{}", asset.path);
        assert_eq!(header(&r, "content-type"), asset.content_type);
        let body = r.body_mut().read_to_vec().unwrap();
        assert_eq!(body, asset.bytes, "{}", asset.path);
        if asset.path.ends_with(".js") && !asset.path.starts_with("vendor/") {
            let text = String::from_utf8(body).unwrap();
            // Modules import each other only.
            for line in text.lines().filter(|l| l.contains(" from '")) {
                assert!(line.contains("from './"), "{}: {line}", asset.path);
            }
        }
    }
    let r = ctl.get("/console/nothing.js", None);
    assert_eq!(r.status(), 404);
    // The API itself still needs the token.
    assert_eq!(ctl.get("/api/v1/status", None).status(), 401);
}

#[test]
fn the_vendored_chart_library_is_the_pinned_one() {
    for (path, sha) in ricochet_console::assets::PINNED {
        let asset = ricochet_console::assets::find(path).unwrap();
        let hex: String = Sha256::digest(asset.bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(&hex, sha, "{path} differs from the pinned file");
    }
    let js = ricochet_console::assets::find("vendor/uPlot.iife.min.js").unwrap();
    assert!(std::str::from_utf8(js.bytes)
        .unwrap()
        .starts_with("/*! https://github.com/leeoniya/uPlot (v1.6.32) */"));
}

#[test]
fn the_live_stream_needs_a_valid_token_and_ends_with_the_controller() {
    let mut ctl = Ctl::start();
    let r = ctl.get("/console/live", None);
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate").starts_with("Bearer"));
    let r = ctl.get("/console/live", Some("rct_wrong"));
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate").contains("invalid_token"));

    let r = ctl.get("/console/live", Some(&ctl.token.clone()));
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/event-stream");
    let mut lines = BufReader::new(r.into_body().into_reader()).lines();
    let mut events = Vec::new();
    let mut data = Vec::new();
    // history first, then the status view (the sampler's first tick).
    while data.len() < 2 {
        let line = lines.next().unwrap().unwrap();
        if let Some(e) = line.strip_prefix("event: ") {
            events.push(e.to_owned());
        } else if let Some(d) = line.strip_prefix("data: ") {
            data.push(d.to_owned());
        }
    }
    assert_eq!(events, ["history", "status"]);
    assert_eq!(data[0], "[]", "no engine reported yet");
    let status: serde_json::Value = serde_json::from_str(&data[1]).unwrap();
    assert_eq!(status["virtual_services"], serde_json::json!([]));

    // An open stream does not hold the controller's graceful stop.
    let took = ctl.stop();
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    let rest: Vec<_> = lines.map_while(Result::ok).collect();
    assert!(rest.len() < 10, "the stream ended: {rest:?}");
}
