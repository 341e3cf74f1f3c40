//! A controller served in-process on 127.0.0.1:0 with a temporary state directory, and a
//! blocking HTTP client for it.
#![allow(dead_code, reason = "each test crate uses a different subset")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ricochet_controller::{Controller, Options};
use serde_json::{json, Value};

/// A running controller; stopped (and its store closed) when dropped.
pub struct Ctl {
    pub url: String,
    pub token: String,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    agent: ureq::Agent,
}

/// An answer: status, headers, and the body parsed as JSON (`Value::Null` if empty).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `details[i].path` values of an error body.
    pub fn paths(&self) -> Vec<String> {
        self.body["details"]
            .as_array()
            .map(|d| {
                d.iter()
                    .map(|x| x["path"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status, status, "unexpected answer: {:#}", self.body);
        self
    }
}

pub fn options(dir: &Path) -> Options {
    let mut o = Options::new("127.0.0.1:0".parse().unwrap(), dir.to_owned());
    o.engine_timeout = Duration::from_secs(15);
    o
}

impl Ctl {
    /// A controller with authentication on and a fresh state directory.
    pub fn start() -> Ctl {
        let dir = tempfile::tempdir().unwrap();
        let o = options(dir.path());
        Ctl::start_with(dir, o)
    }

    /// A controller with `options` on the state directory `dir` (which it keeps).
    pub fn start_with(dir: tempfile::TempDir, options: Options) -> Ctl {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let controller = Controller::bind(options).await.expect("controller starts");
                let token_file = controller.admin_token_file().map(Path::to_path_buf);
                ready_tx
                    .send((controller.local_addr(), token_file))
                    .unwrap();
                controller
                    .run(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .expect("controller serves");
            });
        });
        let (addr, token_file): (std::net::SocketAddr, Option<PathBuf>) =
            ready_rx.recv().expect("controller started");
        let token = token_file
            .map(|f| std::fs::read_to_string(f).unwrap().trim().to_owned())
            .unwrap_or_default();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Ctl {
            url: format!("http://{addr}"),
            token,
            dir,
            stop: Some(stop),
            thread: Some(thread),
            agent,
        }
    }

    /// Stops the controller and returns its state directory (to start it again).
    pub fn stop(mut self) -> tempfile::TempDir {
        self.shutdown();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("controller thread");
        }
    }

    /// A request with the admin token; `body` is sent as JSON.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
        let content_type = bytes.as_ref().map(|_| "application/json");
        self.raw(method, path, Some(&self.token), content_type, bytes)
    }

    /// A request as given: any token (or none), content type and body.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let authorization = token.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(a) = &authorization {
            headers.push(("Authorization", a.as_str()));
        }
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct));
        }
        self.request(method, path, &headers, body)
    }

    /// A request with exactly these headers.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let result = match body {
            Some(bytes) => self.agent.run(request.body(bytes).unwrap()),
            None => self.agent.run(request.body(()).unwrap()),
        };
        let mut response = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response
            .body_mut()
            .with_config()
            .limit(ricochet_api::MAX_MESSAGE_BYTES as u64)
            .read_to_string()
            .unwrap_or_default();
        let json = headers
            .get("content-type")
            .is_none_or(|v| v.to_str().unwrap_or_default().contains("json"));
        let body = if text.is_empty() {
            Value::Null
        } else if !json {
            // /metrics answers the Prometheus text format.
            Value::String(text)
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path}: answer is not JSON ({e}): {text}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: Value) -> Reply {
        self.call("POST", path, Some(body))
    }

    pub fn put(&self, path: &str, body: Value) -> Reply {
        self.call("PUT", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.call("DELETE", path, None)
    }

    /// The store's revision (from `/healthz`, which needs no token).
    pub fn revision(&self) -> u64 {
        let r = self.raw("GET", "/healthz", None, None, None).expect(200);
        r.body["revision"].as_u64().unwrap()
    }

    /// Runs `request`, asserts it was refused with `status` and `error`, and that the
    /// store's revision did not move.
    #[track_caller]
    pub fn refused(&self, status: u16, error: &str, request: impl FnOnce(&Ctl) -> Reply) -> Reply {
        let before = self.revision();
        let reply = request(self);
        assert_eq!(reply.status, status, "unexpected answer: {:#}", reply.body);
        assert_eq!(reply.error(), error, "{:#}", reply.body);
        assert!(!reply.message().is_empty(), "a message for a person");
        assert_eq!(
            self.revision(),
            before,
            "a refused request changed the store"
        );
        reply
    }

    /// Creates the seed's TCP objects: network profile, health monitor, pool, virtual
    /// service.
    pub fn seed_web(&self) {
        self.post("/api/v1/network-profiles", network_profile())
            .expect(201);
        self.post("/api/v1/health-monitors", health_monitor())
            .expect(201);
        self.post("/api/v1/pools", pool()).expect(201);
        self.post("/api/v1/virtual-services", virtual_service())
            .expect(201);
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub fn network_profile() -> Value {
    json!({"name": "dsr-l3-tcp", "type": "tcp_fast_path",
           "dsr": {"enabled": true, "type": "l3", "encapsulation": "ipinip"}})
}

pub fn health_monitor() -> Value {
    json!({"name": "web-tcp", "type": "tcp", "send_interval": 10, "receive_timeout": 4})
}

pub fn pool() -> Value {
    json!({"name": "web-pool", "consistent_hash": "source_ip",
           "servers": [{"ip": "192.168.33.10"}, {"ip": "192.168.34.10"}],
           "health_monitors": ["web-tcp"]})
}

pub fn virtual_service() -> Value {
    json!({"name": "web-vs", "vip": "192.168.35.241", "services": [{"port": 80}],
           "application_profile": "System-L4-Application",
           "network_profile": "dsr-l3-tcp", "pool": "web-pool"})
}

pub const SEED_YAML: &str = include_str!("../../../config/examples/seed.yaml");

/// The seed configuration as JSON.
pub fn seed_config() -> Value {
    let config = ricochet_config::Config::from_yaml_str(SEED_YAML).unwrap();
    serde_json::to_value(config).unwrap()
}
