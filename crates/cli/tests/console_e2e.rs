//! The web console in a real browser, on the seed's network: Debian's Chromium, headless,
//! driven through chromedriver (WebDriver, the `fantoccini` client) from this test.
//!
//! `ricochet all-in-one` runs in se1's namespace with its engine on se1's interface; web01
//! and web02 are DSR-ready and serve with nginx. Chromium and chromedriver run in se1's
//! namespace too (the console is on se1's loopback) and the WebDriver client runs on a thread
//! that joined it, so nothing leaves the test's namespaces. The walk is the seed's, through
//! the pages: a wrong token is refused; the operator signs in, creates the network profile
//! (a refused save first: its error next to its field, nothing stored), the health monitor,
//! the pool with web01 and web02, the virtual service, a service engine group of another
//! engine (listed with its BGP peer, offered by the virtual service form); the dashboard shows it up and its
//! charts move while curl sends traffic from the client; nginx stops on web01 and the
//! server turns red with its reason; nginx back, web01 is disabled on the pool page and new
//! connections avoid it; an edit of the pool that someone else changed meanwhile is refused;
//! a page of 1,000 virtual services renders; signing out ends the session at the
//! controller (its secret refused afterwards).
//!
//! Screenshots of each step: target/console-screenshots/NN-step.png. Needs root.

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use ricochet_testbed::{self as tb, Topology, VIP_V4};
use serde_json::{json, Value};
use support::seed::{seed_bed, started, CONTROLLER, ENGINE_STATE, FLOWS};
use support::RICOCHET;

const CHROMEDRIVER_PORT: u16 = 9515;
const WEB01: &str = "192.168.33.10";
const WEB02: &str = "192.168.34.10";
/// Generous: the machine is shared.
const WAIT: Duration = Duration::from_secs(30);

/// Chromium without the background traffic it makes by default (updates, sync, QUIC,
/// first-run pages), with a profile of its own, at a laptop's size.
fn chromium_args(profile: &str) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--window-size=1366,900",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={profile}")])
    .collect()
}

struct Browser {
    client: Client,
    shots: PathBuf,
    n: usize,
    base: String,
}

impl Browser {
    async fn shot(&mut self, step: &str) {
        self.n += 1;
        // Let the page settle (charts draw on the next frame).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{:02}-{step}.png", self.n));
        std::fs::write(&path, png).unwrap();
        println!("screenshot {}", path.display());
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    /// Polls `script` until it returns something truthy; returns it. A panic naming `what`
    /// and the last value otherwise. A script that throws counts as not yet: it polls a
    /// page that may still be rendering (an element it reads not there yet); the error
    /// is the last value reported if it never passes.
    async fn wait_js(&self, what: &str, script: &str, within: Duration) -> Value {
        let t = Instant::now();
        loop {
            let (v, last) = match self.client.execute(script, Vec::new()).await {
                Ok(v) => {
                    let last = v.to_string();
                    (v, last)
                }
                Err(e) => (Value::Null, format!("the script threw: {e}")),
            };
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            assert!(
                t.elapsed() < within,
                "{what}: not within {within:?} (last: {last})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn go(&self, hash: &str) {
        self.client
            .goto(&format!("{}/console/{hash}", self.base))
            .await
            .unwrap();
    }

    async fn el(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    async fn fill(&self, css: &str, text: &str) {
        let e = self.el(css).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.el(css).await.click().await.unwrap();
    }

    async fn select(&self, css: &str, value: &str) {
        self.el(css).await.select_by_value(value).await.unwrap();
    }

    /// Every input, select and button of the page has an accessible name (a label, a
    /// legend-labelled group's own label, or aria-label).
    async fn assert_labelled(&self, what: &str) {
        let unlabelled = self
            .js(
                "return [...document.querySelectorAll('main input, main select')]
                 .filter(e => !e.hidden && e.type !== 'hidden' && !(e.labels && e.labels.length)
                              && !e.getAttribute('aria-label'))
                 .map(e => e.outerHTML);",
            )
            .await;
        assert_eq!(unlabelled, json!([]), "{what}: fields without a label");
    }

    /// Submits the form in view and waits for the list page it returns to.
    async fn save(&self, list: &str) {
        self.click("form.object-form button[type=submit]").await;
        self.wait_js(
            &format!("back on #/{list} after saving"),
            &format!(
                "return location.hash === '#/{list}' && document.querySelector('.notice-ok')
                 ? document.querySelector('.notice-ok').textContent : null;"
            ),
            WAIT,
        )
        .await;
    }
}

/// curl from the client to the VIP on new connections, until stopped or `max` requests.
struct Traffic {
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(topo: &Topology, max: usize) -> Traffic {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let sent = std::sync::Arc::new(AtomicUsize::new(0));
        let ns = format!("--net={}", topo.client.ns.path().display());
        let (s, n) = (stop.clone(), sent);
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) && n.load(Ordering::Relaxed) < max {
                let _ = std::process::Command::new("nsenter")
                    .args([ns.as_str(), "--", "curl", "-s", "-o", "/dev/null"])
                    .args(["--max-time", "2", &format!("http://{VIP_V4}/")])
                    .status();
                n.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `n` curls from the client on new connections; who answered each.
fn who_answers(topo: &Topology, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut by = std::collections::BTreeMap::new();
    for _ in 0..n {
        let out = topo
            .client
            .ns
            .output(&[
                "curl",
                "-s",
                "--max-time",
                "2",
                &format!("http://{VIP_V4}/"),
            ])
            .unwrap();
        let who = if out.status.success() {
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        } else {
            format!("curl failed: {}", out.status)
        };
        *by.entry(who).or_insert(0) += 1;
    }
    by
}

/// The API on se1's loopback, from a thread in se1's namespace.
fn api(method: &str, path: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{CONTROLLER}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json");
    let result = match body {
        Some(b) => agent.run(request.body(serde_json::to_vec(b).unwrap()).unwrap()),
        None => agent.run(request.body(()).unwrap()),
    };
    let mut r = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let text = r.body_mut().read_to_string().unwrap();
    (
        r.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

fn store_revision(token: &str) -> u64 {
    api("GET", "/healthz", token, None).1["revision"]
        .as_u64()
        .unwrap()
}

#[test]
fn the_operator_runs_the_seed_from_the_console() {
    let started_at = Instant::now();
    let mut bed = seed_bed("console", &[VIP_V4.into()]);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();

    let aio = bed
        .topo
        .se1
        .ns
        .spawn(&[
            RICOCHET,
            "all-in-one",
            "--interface",
            bed.topo.se1.iface,
            "--listen",
            CONTROLLER,
            "--state-dir",
            &bed.path("controller"),
            "--engine-state-dir",
            &bed.path(ENGINE_STATE),
            "--pin-dir",
            bed.pin_dir("se1").to_str().unwrap(),
            "--name",
            "se1",
            "--flows",
            FLOWS,
        ])
        .unwrap();
    let aio = started(aio, "engine running");
    assert!(
        aio.stderr()
            .contains(&format!("web console on http://{CONTROLLER}/console/")),
        "says where the console is:\n{}",
        aio.report()
    );
    let token = std::fs::read_to_string(bed.path("controller/admin-token"))
        .unwrap()
        .trim()
        .to_owned();

    let mut driver = bed
        .topo
        .se1
        .ns
        .spawn(&[
            "chromedriver",
            &format!("--port={CHROMEDRIVER_PORT}"),
            "--log-level=WARNING",
        ])
        .unwrap();
    driver
        .wait_for_tcp_listen(CHROMEDRIVER_PORT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", driver.report()));
    let profile = bed.path("chromium-profile");

    let (nginx, topo) = (&mut bed.nginx, &bed.topo);
    topo.se1
        .ns
        .run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(walk(topo, nginx, &token, &profile, shots))
        })
        .unwrap();
    drop(driver);
    drop(aio);
    println!(
        "console_e2e: the whole walk took {:.1} s",
        started_at.elapsed().as_secs_f64()
    );
}

async fn walk(
    topo: &Topology,
    nginx: &mut [tb::Process],
    token: &str,
    profile: &str,
    shots: PathBuf,
) {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium", "args": chromium_args(profile)}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{CHROMEDRIVER_PORT}"))
        .await
        .expect("a WebDriver session with Chromium");
    let mut b = Browser {
        client,
        shots,
        n: 0,
        base: format!("http://{CONTROLLER}"),
    };

    // ---- Without a token nothing shows; a wrong one is refused and not kept.
    b.client
        .goto(&format!("http://{CONTROLLER}/"))
        .await
        .unwrap();
    b.el("#token").await;
    assert!(b
        .client
        .current_url()
        .await
        .unwrap()
        .as_str()
        .ends_with("/console/"));
    b.go("#/pools").await;
    b.wait_js(
        "a page without a token shows the sign-in form only",
        "return !document.getElementById('signin').hidden && document.getElementById('app').hidden;",
        WAIT,
    )
    .await;
    b.fill(
        "#token",
        "rct_0000000000000000000000000000000000000000000000000000000000000000",
    )
    .await;
    b.click("#signin-button").await;
    let refused = b
        .wait_js(
            "the wrong token refused",
            "const e = document.getElementById('signin-error'); return !e.hidden && e.textContent;",
            WAIT,
        )
        .await;
    assert!(
        refused.as_str().unwrap().contains("refused this token")
            && refused.as_str().unwrap().contains("not valid"),
        "{refused}"
    );
    assert_eq!(
        b.js("return [sessionStorage.length, document.getElementById('app').hidden];")
            .await,
        json!([0, true])
    );
    b.shot("wrong-token-refused").await;

    // ---- Sign in with the admin token, from the keyboard (Enter submits).
    // The page asked for before signing in is the one shown after.
    b.fill("#token", &format!("{token}\u{E007}")).await;
    b.wait_js(
        "signed in, on the pools page asked for",
        "const h = document.querySelector('main h1');
         return location.hash === '#/pools' && !document.getElementById('app').hidden
           && h && h.textContent === 'Pools';",
        WAIT,
    )
    .await;
    b.go("#/dashboard").await;
    b.el(".dash-vs").await;
    b.wait_js(
        "the live stream connected",
        "return document.getElementById('live-state').textContent === 'live';",
        WAIT,
    )
    .await;
    b.shot("signed-in-empty-dashboard").await;
    // The tab holds a session made from the token, never the token itself.
    let session = b
        .js("return sessionStorage.getItem('ricochet.token');")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        session.starts_with("rcs_") && session != token,
        "the tab holds a session, not the token: {session:?}"
    );
    assert_eq!(api("GET", "/api/v1/status", &session, None).0, 200);

    // ---- Templates > Profiles > TCP/UDP: TCP fast path, DSR L3, ipinip. First with an
    // idle timeout out of range: refused, the error next to its field, nothing stored.
    b.go("#/network-profiles").await;
    b.click("a[href='#/network-profiles/new']").await;
    b.fill("[data-path='name']", "dsr-l3-tcp").await;
    b.select("[data-path='type']", "tcp_fast_path").await;
    b.click("[data-path='dsr.enabled']").await;
    b.select("[data-path='dsr.type']", "l3").await;
    b.select("[data-path='dsr.encapsulation']", "ipinip").await;
    b.fill("[data-path='session_idle_timeout']", "3").await;
    b.assert_labelled("the network profile form").await;
    let before = store_revision(token);
    b.click("form.object-form button[type=submit]").await;
    let error = b
        .wait_js(
            "the refusal next to the idle timeout",
            "const i = document.querySelector('[data-path=\"session_idle_timeout\"]');
             const e = document.getElementById(i.getAttribute('aria-describedby'));
             return i.getAttribute('aria-invalid') === 'true'
               && e.closest('.field') === i.closest('.field') && e.textContent
               && {error: e.textContent, focused: document.activeElement === i,
                   summary: document.querySelector('.summary .notice-error').textContent};",
            WAIT,
        )
        .await;
    println!("form error: {error}");
    assert!(
        error["error"].as_str().unwrap().contains("out of range"),
        "{error}"
    );
    assert_eq!(error["focused"], true, "the field in error has the focus");
    assert_eq!(
        store_revision(token),
        before,
        "a refused save changes nothing"
    );
    assert_eq!(
        api("GET", "/api/v1/network-profiles", token, None).1["items"],
        json!([])
    );
    b.shot("network-profile-error-next-to-field").await;
    b.fill("[data-path='session_idle_timeout']", "300").await;
    b.save("network-profiles").await;
    b.shot("network-profile-created").await;
    let (_, np) = api("GET", "/api/v1/network-profiles/dsr-l3-tcp", token, None);
    assert_eq!(
        np["object"],
        json!({"name": "dsr-l3-tcp", "type": "tcp_fast_path", "session_idle_timeout": 300,
               "dsr": {"enabled": true, "type": "l3", "encapsulation": "ipinip"}})
    );
    // A GUE profile with its UDP port, as an operator of GUE servers makes it.
    b.go("#/network-profiles/new").await;
    b.fill("[data-path='name']", "dsr-gue-udp").await;
    b.select("[data-path='type']", "udp_fast_path").await;
    b.click("[data-path='dsr.enabled']").await;
    b.select("[data-path='dsr.encapsulation']", "gue").await;
    b.fill("[data-path='dsr.gue_port']", "7000").await;
    b.save("network-profiles").await;
    let (_, np) = api("GET", "/api/v1/network-profiles/dsr-gue-udp", token, None);
    assert_eq!(
        np["object"]["dsr"],
        json!({"enabled": true, "type": "l3", "encapsulation": "gue", "gue_port": 7000})
    );

    // ---- The health monitor (Avi's smallest timing: down within 2 s × 2).
    b.go("#/health-monitors/new").await;
    b.fill("[data-path='name']", "web-tcp").await;
    b.select("[data-path='type']", "tcp").await;
    b.fill("[data-path='send_interval']", "2").await;
    b.fill("[data-path='receive_timeout']", "1").await;
    b.fill("[data-path='successful_checks']", "2").await;
    b.fill("[data-path='failed_checks']", "2").await;
    b.assert_labelled("the health monitor form").await;
    b.save("health-monitors").await;

    // ---- The pool: web01 and web02 by their own IPs, the monitor; source IP and port, so
    // that one client's new connections spread over both.
    b.go("#/pools/new").await;
    b.fill("[data-path='name']", "web-pool").await;
    b.select("[data-path='consistent_hash']", "source_ip_and_port")
        .await;
    for (i, ip) in [WEB01, WEB02].iter().enumerate() {
        b.click("fieldset[data-path='servers'] > button").await;
        b.fill(&format!("[data-path='servers[{i}].ip']"), ip).await;
    }
    b.click("fieldset[data-path='health_monitors'] input[value='web-tcp']")
        .await;
    b.assert_labelled("the pool form").await;
    b.shot("pool-form").await;
    b.save("pools").await;

    // ---- The virtual service with System-L4-Application, the profile and the pool.
    b.go("#/virtual-services/new").await;
    b.fill("[data-path='name']", "web-vs").await;
    b.fill("[data-path='vip']", &VIP_V4.to_string()).await;
    b.fill("[data-path='services[0].port']", "80").await;
    b.select("[data-path='application_profile']", "System-L4-Application")
        .await;
    b.select("[data-path='network_profile']", "dsr-l3-tcp")
        .await;
    b.select("[data-path='pool']", "web-pool").await;
    b.assert_labelled("the virtual service form").await;
    b.shot("virtual-service-form").await;
    b.save("virtual-services").await;
    b.shot("virtual-services-list").await;

    // ---- A service engine group of another engine, with a BGP peer: listed with its
    // announcement; the virtual service form offers it, and web-vs stays in none.
    b.go("#/service-engine-groups/new").await;
    b.fill("[data-path='name']", "seg-spare").await;
    b.click("fieldset[data-path='engines'] > button").await;
    b.fill("[data-path='engines[0].name']", "se9").await;
    b.fill("[data-path='engines[0].v4']", "192.168.33.9").await;
    b.click("[data-path='announce_bgp']").await;
    b.fill("[data-path='bgp.local_as']", "65001").await;
    b.fill("[data-path='bgp.peers[0].ip']", "192.168.33.1")
        .await;
    b.fill("[data-path='bgp.peers[0].remote_as']", "65000")
        .await;
    b.assert_labelled("the service engine group form").await;
    b.save("service-engine-groups").await;
    b.wait_js(
        "seg-spare listed with its members and peer",
        "const r = document.querySelector('tr[data-group=\"seg-spare\"]');
         return r && r.textContent.includes('se9 192.168.33.9')
           && r.textContent.includes('AS 65001 → 192.168.33.1 AS 65000')
           && r.textContent.includes('9 s') && r.textContent.includes('0 virtual services');",
        WAIT,
    )
    .await;
    b.shot("service-engine-groups-list").await;
    b.go("#/virtual-services").await;
    b.wait_js(
        "web-vs in no service engine group",
        "const h = [...document.querySelectorAll('table.list thead th')].map(t => t.textContent);
         const r = document.querySelector('tr[data-vs=\"web-vs\"]');
         return r && r.children[h.indexOf('SE group')].textContent === '—';",
        WAIT,
    )
    .await;
    b.go("#/virtual-services/edit/web-vs").await;
    b.wait_js(
        "the virtual service form offers seg-spare",
        "return !!document.querySelector(\"[data-path='se_group'] option[value='seg-spare']\");",
        WAIT,
    )
    .await;

    // ---- The dashboard: web-vs up; with curl traffic from the client, its charts move.
    b.go("#/dashboard").await;
    b.wait_js(
        "web-vs up on the dashboard",
        "const r = document.querySelector('tr[data-vs=\"web-vs\"]'); return r && r.dataset.state === 'up';",
        WAIT,
    )
    .await;
    let answered = who_answers(topo, 30);
    assert_eq!(
        answered.keys().cloned().collect::<Vec<_>>(),
        ["web01", "web02"],
        "{answered:?}"
    );
    let traffic = Traffic::start(topo, 3000);
    let first = b
        .wait_js(
            "packets per second in web-vs's chart",
            "const c = document.getElementById('chart-packets');
             const last = c && c.dataset.last ? JSON.parse(c.dataset.last) : [];
             return last[0] > 0 && {points: Number(c.dataset.points), last};",
            WAIT,
        )
        .await;
    let points = first["points"].as_u64().unwrap();
    let moved = b
        .wait_js(
            "the charts take new samples without a reload",
            &format!(
                "const c = document.getElementById('chart-packets');
                 const f = JSON.parse(document.getElementById('chart-flows').dataset.last);
                 return Number(c.dataset.points) > {points} + 1 && f[0] > 0
                   && {{points: Number(c.dataset.points), packets: JSON.parse(c.dataset.last), flows: f,
                       cell: document.querySelector('tr[data-vs=\"web-vs\"] td.num').textContent}};"
            ),
            WAIT,
        )
        .await;
    println!("charts moving: {first} then {moved}");
    // Both servers get new flows (the VS's line is [0], then web01, web02).
    let flows = moved["flows"].as_array().unwrap();
    assert!(
        flows[1].as_f64().unwrap() > 0.0 && flows[2].as_f64().unwrap() > 0.0,
        "{moved}"
    );
    assert_ne!(moved["cell"], "0", "the table's packets/s: {moved}");
    let forwarded = b
        .wait_js(
            "the verdicts",
            "const r = document.querySelector('tr[data-reason=\"forwarded\"]'); return r && r.textContent;",
            WAIT,
        )
        .await;
    println!("verdicts: {forwarded}");
    b.shot("dashboard-up-charts-moving").await;

    // ---- nginx stops on web01: the server turns red with its reason, web-vs degraded.
    nginx[0].stop().unwrap();
    let stopped = Instant::now();
    let down = b
        .wait_js(
            "web01 down on the dashboard",
            &format!(
                "const s = document.querySelector('.detail tbody[data-server=\"{WEB01}\"]');
                 const v = document.querySelector('tr[data-vs=\"web-vs\"]');
                 return s && s.dataset.state === 'down' && v.dataset.state === 'degraded'
                   && {{reason: s.querySelector('td.reason').textContent,
                       since: s.querySelector('td.since').textContent,
                       vs: v.querySelector('td.reason').textContent,
                       colour: getComputedStyle(s.querySelector('.badge')).backgroundColor}};"
            ),
            WAIT,
        )
        .await;
    println!(
        "web01 red on the dashboard {:.1} s after nginx stopped: {down}",
        stopped.elapsed().as_secs_f64()
    );
    assert!(
        down["reason"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{down}"
    );
    assert!(down["vs"]
        .as_str()
        .unwrap()
        .starts_with("1 of 2 servers down"));
    assert_eq!(down["colour"], "rgb(201, 42, 42)", "red");
    b.shot("web01-down-red-with-reason").await;
    drop(traffic);

    // ---- nginx back: up again. Then web01 is disabled on the pool page (drained): new
    // connections avoid it although it is healthy.
    nginx[0] = tb::start_nginx(&topo.web01.ns, "web01").unwrap();
    b.wait_js(
        "web01 up again",
        &format!(
            "const s = document.querySelector('.detail tbody[data-server=\"{WEB01}\"]');
             return s && s.dataset.state === 'up';"
        ),
        WAIT,
    )
    .await;
    b.go("#/pools").await;
    b.wait_js(
        "the pools page shows web01's health",
        &format!(
            "const r = document.querySelector('[data-pool=\"web-pool\"] tr[data-server=\"{WEB01}\"]');
             return r && r.querySelector('.badge-up');"
        ),
        WAIT,
    )
    .await;
    b.click(&format!(
        "button[aria-label='Disable server {WEB01} in pool web-pool']"
    ))
    .await;
    b.wait_js(
        "web01 disabled",
        &format!(
            "const r = document.querySelector('[data-pool=\"web-pool\"] tr[data-server=\"{WEB01}\"]');
             return r && r.textContent.includes('disabled (draining)')
               && document.querySelector('.notice-ok');"
        ),
        WAIT,
    )
    .await;
    b.shot("pool-web01-disabled").await;
    let (_, pool) = api("GET", "/api/v1/pools/web-pool", token, None);
    assert_eq!(pool["object"]["servers"][0]["enabled"], false);
    // The engine applies it within well under a second; then every new connection lands on
    // web02.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = who_answers(topo, 30);
    assert_eq!(after, [("web02".to_owned(), 30)].into(), "{after:?}");
    b.go("#/dashboard").await;
    let traffic = Traffic::start(topo, 3000);
    let drained = b
        .wait_js(
            "new flows only to web02 in the chart",
            &format!(
                "const f = JSON.parse(document.getElementById('chart-flows').dataset.last || '[]');
                 const s = document.querySelector('.detail tbody[data-server=\"{WEB01}\"]');
                 return f[0] > 0 && f[1] === 0 && f[2] > 0 && s.dataset.state === 'disabled' && f;"
            ),
            WAIT,
        )
        .await;
    println!("after draining web01, new flows/s (web-vs, web01, web02): {drained}");
    b.shot("dashboard-web01-drained").await;
    drop(traffic);

    // ---- A concurrent edit: the pool form is open when someone else changes the pool.
    b.go("#/pools/edit/web-pool").await;
    b.el("[data-path='servers[1].ratio']").await;
    let mut theirs = pool["object"].clone();
    theirs["servers"][0]["ratio"] = json!(3);
    let (status, _) = api("PUT", "/api/v1/pools/web-pool", token, Some(&theirs));
    assert_eq!(status, 200);
    b.fill("[data-path='servers[1].ratio']", "2").await;
    let before = store_revision(token);
    b.click("form.object-form button[type=submit]").await;
    let conflict = b
        .wait_js(
            "the concurrent edit refused",
            "const n = document.querySelector('.summary .notice-error'); return n && n.textContent;",
            WAIT,
        )
        .await;
    println!("concurrent edit: {conflict}");
    assert!(
        conflict
            .as_str()
            .unwrap()
            .contains("was changed by someone else"),
        "{conflict}"
    );
    assert_eq!(store_revision(token), before);
    let (_, now) = api("GET", "/api/v1/pools/web-pool", token, None);
    assert_eq!(now["object"], theirs, "theirs is kept, ours not applied");
    b.shot("concurrent-edit-refused").await;

    // ---- A thousand virtual services: every row renders.
    let (_, config) = api("GET", "/api/v1/configuration", token, None);
    let mut config = config["config"].clone();
    let many = config["virtual_services"].as_array_mut().unwrap();
    for i in 0..1000u32 {
        many.push(json!({
            "name": format!("vs-{i:04}"),
            "vip": format!("192.168.{}.{}", 40 + i / 250, 1 + i % 250),
            "services": [{"port": 80}],
            "network_profile": "dsr-l3-tcp",
            "pool": "web-pool",
        }));
    }
    let (status, applied) = api("PUT", "/api/v1/configuration", token, Some(&config));
    assert_eq!(status, 200, "{applied}");
    // Measured once the engine runs them (until then the controller shares the CPU with
    // the engine's apply).
    let revision = applied["revision"].clone();
    let t = Instant::now();
    loop {
        let (_, se) = api("GET", "/api/v1/service-engines/se1", token, None);
        let report = &se["report"]["report"];
        if report["revision"] == revision && report["state"] == "running" {
            break;
        }
        assert!(
            t.elapsed() < WAIT,
            "the engine runs 1,001 virtual services: {se}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "the engine runs 1,001 virtual services {:.1} s after the apply",
        t.elapsed().as_secs_f64()
    );
    for (page, selector) in [
        ("#/virtual-services", "table.list tbody tr[data-vs]"),
        ("#/dashboard", ".dash-vs tbody tr[data-vs]"),
    ] {
        // Navigated by the page itself, timed by the page's clock: from the link followed
        // to the page complete (its data fetched, every row built).
        b.js(&format!(
            "window.__t0 = performance.now(); location.hash = '{page}'; return 0;"
        ))
        .await;
        let took = b
            .wait_js(
                &format!("1,001 rows on {page}"),
                &format!(
                    "const m = document.getElementById('main');
                     return document.querySelectorAll('{selector}').length === 1001
                       && Number(m.dataset.shownAt) > window.__t0
                       && [Math.round(Number(m.dataset.shownAt) - window.__t0), Number(m.dataset.renderMs)];"
                ),
                WAIT,
            )
            .await;
        println!(
            "{page}: 1,001 virtual services painted {} ms after following the link (their rows built in {} ms)",
            took[0], took[1]
        );
    }
    b.fill("#dash-filter", "vs-0999").await;
    b.wait_js(
        "the filter",
        "return [...document.querySelectorAll('.dash-vs tbody tr')].filter(r => !r.hidden).length === 1;",
        WAIT,
    )
    .await;
    b.fill("#dash-filter", "").await;
    b.shot("dashboard-1001-virtual-services").await;

    // ---- Signing out ends it: the controller refuses the session from then on (the
    // operator's token stays valid), the tab forgets it, no page shows without signing in
    // again.
    b.click("#signout").await;
    b.wait_js(
        "signed out",
        "return !document.getElementById('signin').hidden && sessionStorage.length === 0
           && document.getElementById('signin-error').textContent === 'Signed out.';",
        WAIT,
    )
    .await;
    let (code, body) = api("GET", "/api/v1/status", &session, None);
    assert_eq!(code, 401, "the ended session is refused: {body}");
    assert_eq!(api("GET", "/api/v1/status", token, None).0, 200);
    b.go("#/dashboard").await;
    b.wait_js(
        "the dashboard needs a new sign-in",
        "return !document.getElementById('signin').hidden && document.getElementById('main').children.length === 0;",
        WAIT,
    )
    .await;
    b.shot("signed-out").await;
    b.client.close().await.unwrap();
}
