//! A controller as the daemon's source: register, watch the desired configuration by
//! long poll; and the copy of the last applied configuration kept on disk for a restart
//! while the controller is away. (What the engine reports back is [`crate::report`].)
//!
//! Two threads, so that nothing here ever blocks the daemon's loop (neighbour probes,
//! the state file, signals):
//! - the *watcher* registers (retrying with capped backoff until the controller
//!   answers), asks for the current configuration at once, then long-polls
//!   `GET /api/v1/desired?after=<last received>&wait=30`, and hands each answer to the
//!   daemon through a channel. After any failure it registers again and asks for the
//!   current configuration without `after`: that is the catch-up by revision, and it
//!   also covers a controller whose store was replaced (a lower revision).
//! - the *reporter* ([`crate::report::Reporter`]) posts the newest report the daemon left
//!   for it.
//!
//! Losing the controller is logged once (by whichever thread notices first) and its
//! return once; the daemon never waits for either thread, so SIGTERM stops it at once.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ricochet_api::client::{Client, ClientError, ClientOptions};
use ricochet_api::types::{Desired, EngineRegistration};
use ricochet_config::Config;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use crate::report::Reporter;

/// How long one desired-state poll waits at the controller before it answers 304.
const POLL_WAIT_SECS: u64 = 30;
/// Retry delays after a failure: from the first to the cap, doubling.
const RETRY_FIRST: Duration = Duration::from_millis(100);
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(2);
/// Granularity of the threads' sleeps, so that they notice the daemon stopping.
const TICK: Duration = Duration::from_millis(50);

/// The file, in the engine's state directory, holding the last configuration applied
/// from the controller.
pub const PERSISTED_FILE: &str = "controller-config.json";

/// Where the controller is and who this engine is.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// The controller's API, e.g. `http://10.0.0.5:8480`.
    pub url: String,
    /// The API token, or the file to read it from.
    pub token: Option<String>,
    pub token_file: PathBuf,
    /// This engine's name at the controller.
    pub name: String,
    /// How an `https://` controller's certificate is verified.
    pub tls: ricochet_api::tls::ClientTls,
}

/// The watcher: configurations from the controller.
pub struct Follower {
    /// Configurations received from the controller, in order.
    pub updates: mpsc::Receiver<Desired>,
    url: String,
    stop: Arc<AtomicBool>,
    link: Arc<LinkState>,
}

impl Follower {
    /// The controller's API.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the controller answered the engine's last call (false until it first
    /// answers).
    pub fn connected(&self) -> bool {
        self.link.connected.load(Ordering::SeqCst)
    }

    /// [`Follower::connected`] for another thread (the metrics server).
    pub fn connected_watch(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let link = self.link.clone();
        move || link.connected.load(Ordering::SeqCst)
    }
}

/// Whether the controller answers, shared by the watcher and the reporter so that a loss
/// and a return are each logged once.
pub(crate) struct LinkState {
    url: String,
    lost: AtomicBool,
    /// The last call got an answer (the metrics' `ricochet_engine_controller_connected`).
    connected: AtomicBool,
}

impl LinkState {
    pub(crate) fn failed(&self, what: &str, e: &ClientError) {
        self.connected.store(false, Ordering::SeqCst);
        if !self.lost.swap(true, Ordering::SeqCst) {
            // An answer that refuses (a wrong token, say) is not a lost controller: say
            // which, so that the operator looks at the right thing.
            let trouble = match e {
                ClientError::Api { .. } => format!("the controller at {} refuses", self.url),
                _ => format!("lost the controller at {}", self.url),
            };
            warn!(
                "{trouble} ({what}: {e}); the data plane keeps forwarding with the last \
                 configuration; retrying every {} s at most",
                RETRY_MAX.as_secs()
            );
        }
    }

    pub(crate) fn answered(&self) {
        self.connected.store(true, Ordering::SeqCst);
        if self.lost.swap(false, Ordering::SeqCst) {
            info!("the controller at {} answers again", self.url);
        }
    }
}

/// Starts following the controller: the watcher, and the reporter of what runs.
/// `addresses` are the engine's, as it registers them.
pub fn connect(options: &ControllerOptions, addresses: Vec<IpAddr>) -> (Follower, Reporter) {
    let client = Arc::new(Client::new(&ClientOptions {
        url: options.url.clone(),
        token: options.token.clone(),
        token_file: options.token_file.clone(),
        tls: options.tls.clone(),
    }));
    if let Some(why) = client.token_problem() {
        warn!(
            "no API token: {why}; the controller refuses this engine unless it runs \
             with --no-auth (pass --token or --token-file)"
        );
    }
    let link = Arc::new(LinkState {
        url: options.url.clone(),
        // Nothing logged until the first failure: "lost" then means "not reached".
        lost: AtomicBool::new(false),
        connected: AtomicBool::new(false),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, updates) = mpsc::channel();
    let registration = EngineRegistration {
        name: options.name.clone(),
        addresses,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    {
        let (client, link, stop) = (client.clone(), link.clone(), stop.clone());
        std::thread::Builder::new()
            .name("controller-watch".into())
            .spawn(move || watch(&client, &link, &stop, &registration, &tx))
            .expect("spawning a thread");
    }
    let reporter = Reporter::start(client, link.clone(), &options.name);
    let follower = Follower {
        updates,
        url: options.url.clone(),
        stop,
        link,
    };
    (follower, reporter)
}

impl Drop for Follower {
    fn drop(&mut self) {
        // The thread ends at its next tick; a long poll in flight ends with the process
        // or within its wait.
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Sleeps `delay` unless `stop` is set first; whether to go on.
pub(crate) fn pause(stop: &AtomicBool, delay: Duration) -> bool {
    let mut left = delay;
    while !left.is_zero() {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let step = left.min(TICK);
        std::thread::sleep(step);
        left -= step;
    }
    !stop.load(Ordering::SeqCst)
}

fn watch(
    client: &Client,
    link: &LinkState,
    stop: &AtomicBool,
    registration: &EngineRegistration,
    updates: &mpsc::Sender<Desired>,
) {
    let body = serde_json::to_value(registration).expect("registrations serialize");
    let name = &registration.name;
    let mut delay = RETRY_FIRST;
    let mut registered_once = false;
    'connect: while !stop.load(Ordering::SeqCst) {
        if let Err(e) = client.call::<Value>("POST", "/api/v1/service-engines", Some(&body), &[]) {
            link.failed("registering", &e);
            if !pause(stop, delay) {
                return;
            }
            delay = (delay * 2).min(RETRY_MAX);
            continue;
        }
        link.answered();
        if !registered_once {
            info!(engine = %name, "registered with the controller at {}", link.url);
            registered_once = true;
        }
        // First the current configuration, whatever its revision: the catch-up.
        let mut after: Option<u64> = None;
        while !stop.load(Ordering::SeqCst) {
            let path = match after {
                None => format!("/api/v1/desired?engine={name}"),
                Some(r) => {
                    format!("/api/v1/desired?after={r}&wait={POLL_WAIT_SECS}&engine={name}")
                }
            };
            match client.get_unless_not_modified::<Desired>(&path) {
                Ok(Some(desired)) => {
                    link.answered();
                    delay = RETRY_FIRST;
                    after = Some(desired.revision);
                    if updates.send(desired).is_err() {
                        return; // the daemon is gone
                    }
                }
                Ok(None) => {} // nothing new within the wait: poll again
                Err(e) => {
                    link.failed("watching the configuration", &e);
                    if !pause(stop, delay) {
                        return;
                    }
                    delay = (delay * 2).min(RETRY_MAX);
                    // Register again: the controller may have lost us (a new store).
                    continue 'connect;
                }
            }
        }
    }
}

/// The last configuration applied from the controller, as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    /// The controller's configuration revision.
    pub revision: u64,
    /// The controller it came from.
    pub controller: String,
    /// The configuration.
    pub config: Config,
}

pub fn persisted_path(state_dir: &Path) -> PathBuf {
    state_dir.join(PERSISTED_FILE)
}

/// Reads the persisted configuration; `None` when there is none. A damaged file is
/// reported and ignored (the engine then waits for the controller).
pub fn load_persisted(state_dir: &Path) -> Option<Persisted> {
    let path = persisted_path(state_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(
                "cannot read {}: {e}; waiting for the controller",
                path.display()
            );
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(p) => Some(p),
        Err(e) => {
            warn!(
                "ignoring {}: {e}; waiting for the controller",
                path.display()
            );
            None
        }
    }
}

/// Writes the applied configuration so that a restart without the controller starts
/// with it: a temporary file in `state_dir`, fsync, renamed over the old one, so a crash
/// leaves the old or the new one whole (and a failed write leaves no temporary file).
pub fn save_persisted(state_dir: &Path, persisted: &Persisted) -> anyhow::Result<()> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let path = persisted_path(state_dir);
    let bytes = serde_json::to_vec_pretty(persisted)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{PERSISTED_FILE}."))
        .tempfile_in(state_dir)
        .with_context(|| format!("creating a temporary file in {}", state_dir.display()))?;
    // Readable by all, as a file written plainly would be (temporary files are 0600).
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .and_then(|()| tmp.write_all(&bytes))
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    // The error's own copy of the temporary file goes with it: removed now, not when
    // the caller drops the error.
    tmp.persist(&path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Checks `--controller`: an `http://` or `https://` URL with a host (and perhaps a path
/// prefix), without the trailing slash. Refused at start: the watcher would otherwise
/// retry a URL that can never work, forever.
pub fn controller_url(text: &str) -> anyhow::Result<String> {
    let url = text.trim().trim_end_matches('/');
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("--controller {text:?} is not a URL ({e}); give the controller's API, e.g. http://10.0.0.5:8480"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|h| !h.is_empty());
    if !scheme_ok || !host_ok || uri.query().is_some() {
        anyhow::bail!(
            "--controller {text:?} is not the controller's API: give http:// or https:// and \
             its address, e.g. http://10.0.0.5:8480"
        );
    }
    Ok(url.to_owned())
}

/// Checks an engine name (`--name`, or the host name) against the controller's rule, so
/// that a name the controller would refuse stops the engine at start instead of failing
/// every registration.
pub fn engine_name(name: String) -> anyhow::Result<String> {
    if ricochet_api::types::is_valid_engine_name(&name) {
        Ok(name)
    } else {
        anyhow::bail!(
            "engine name {name:?} is not valid: use {} (--name, RICOCHET_ENGINE_NAME)",
            ricochet_api::types::ENGINE_NAME_RULE
        )
    }
}

/// The host name, the default engine name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ricochet-engine".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persisted_configuration_round_trips_and_a_damaged_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_persisted(dir.path()), None);
        let config =
            Config::from_yaml_str(include_str!("../../../config/examples/seed.yaml")).unwrap();
        let p = Persisted {
            revision: 42,
            controller: "http://127.0.0.1:8480".into(),
            config,
        };
        save_persisted(dir.path(), &p).unwrap();
        assert_eq!(load_persisted(dir.path()), Some(p));
        std::fs::write(persisted_path(dir.path()), b"{\"revision\": 4").unwrap();
        assert_eq!(load_persisted(dir.path()), None);
    }

    #[test]
    fn saving_replaces_the_file_whole_readable_and_leaves_no_temporary_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("engine");
        let seed =
            Config::from_yaml_str(include_str!("../../../config/examples/seed.yaml")).unwrap();
        let big = Persisted {
            revision: 7,
            controller: "http://127.0.0.1:8480".into(),
            config: seed,
        };
        save_persisted(&state_dir, &big).unwrap();
        // A smaller configuration over a larger one: nothing of the old one may remain.
        let small = Persisted {
            revision: 8,
            controller: "http://127.0.0.1:8480".into(),
            config: Config::from_yaml_str("virtual_services: []\n").unwrap(),
        };
        save_persisted(&state_dir, &small).unwrap();
        let path = persisted_path(&state_dir);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            serde_json::to_vec_pretty(&small).unwrap(),
            "the file is the new configuration, whole"
        );
        assert_eq!(load_persisted(&state_dir), Some(small));
        let names: Vec<_> = std::fs::read_dir(&state_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [PERSISTED_FILE], "no temporary file stays");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "readable by all: {mode:o}");

        // A save that fails at the rename (a directory where the file goes) says so and
        // leaves no temporary file either.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(persisted_path(&blocked)).unwrap();
        let e = save_persisted(&blocked, &big).unwrap_err();
        assert!(
            format!("{e:#}").contains(PERSISTED_FILE),
            "the error names the file: {e:#}"
        );
        let names: Vec<_> = std::fs::read_dir(&blocked)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [PERSISTED_FILE], "no temporary file stays");
    }

    #[test]
    fn controller_urls_and_engine_names_are_checked() {
        assert_eq!(
            controller_url("http://10.0.0.5:8480/").unwrap(),
            "http://10.0.0.5:8480"
        );
        assert_eq!(
            controller_url("https://ctl.example/ricochet").unwrap(),
            "https://ctl.example/ricochet"
        );
        for bad in [
            "10.0.0.5:8480",
            "ftp://10.0.0.5",
            "http://",
            "",
            "http://h:8480/?x=1",
        ] {
            let e = controller_url(bad).unwrap_err().to_string();
            assert!(e.contains("--controller"), "{bad:?}: {e}");
        }
        assert_eq!(engine_name("se-1.lab_a".into()).unwrap(), "se-1.lab_a");
        for bad in ["", "se 1", "se/1", "se?1"] {
            let e = engine_name(bad.into()).unwrap_err().to_string();
            assert!(e.contains("--name"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn pause_stops_early() {
        let stop = AtomicBool::new(true);
        let t = std::time::Instant::now();
        assert!(!pause(&stop, Duration::from_secs(5)));
        assert!(t.elapsed() < Duration::from_secs(1));
        let go = AtomicBool::new(false);
        assert!(pause(&go, Duration::from_millis(60)));
    }
}
