//! `GET /console/live`: what the dashboard shows, pushed as server-sent events.
//!
//! One sampler per controller (started by the first stream, stopped with the controller)
//! looks every [`TICK`] at what the engines reported and at the configuration, and
//! publishes:
//!
//! - `status`: the API's status view (`GET /api/v1/status`: each virtual service up,
//!   degraded or down with its reason, each server's health, reason and since when), when
//!   it changed;
//! - `sample`: a [`Sample`] of per-second rates when an engine's report brought new
//!   counters (about every 2 s per engine).
//!
//! A new stream first gets `history` (the last [`HISTORY`] samples, so that charts start
//! full) and the current `status`. Streams end when the controller stops, so that its
//! graceful shutdown never waits for a dashboard left open.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::Stream;
use ricochet_api::types::{Connection, StatusView};
use ricochet_config::Config;
use ricochet_controller::api::AppState;
use ricochet_controller::auth::{Access, RouteAccess};
use tokio::sync::{broadcast, mpsc};

use crate::rates::{sample, EngineRates, Sample};

/// How often the sampler looks.
pub const TICK: Duration = Duration::from_secs(1);
/// Samples kept for a new stream: about five minutes at one report every 2 s.
pub const HISTORY: usize = 150;

/// The path of the stream.
pub const LIVE_PATH: &str = "/console/live";

/// One event, serialised once for every stream.
#[derive(Debug, Clone)]
struct Message {
    kind: &'static str,
    data: Arc<str>,
}

#[derive(Default)]
struct Published {
    history: VecDeque<Arc<str>>,
    status: Option<Arc<str>>,
}

/// The sampler and what it published.
pub struct Live {
    state: AppState,
    start: Once,
    published: Mutex<Published>,
    events: broadcast::Sender<Message>,
}

/// What the stream needs: a token that may read (any role but an engine's).
pub const ACCESS: &[RouteAccess] = &[RouteAccess {
    method: "GET",
    path: LIVE_PATH,
    access: Access::Read,
}];

/// The stream's route, for [`ricochet_controller::Controller::serve_beside`]'s
/// authenticated routes.
pub fn router(live: Arc<Live>) -> Router<AppState> {
    Router::new()
        .route(LIVE_PATH, get(stream))
        .layer(Extension(live))
}

impl Live {
    /// A sampler over `state`, started by the first stream.
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            start: Once::new(),
            published: Mutex::new(Published::default()),
            events: broadcast::channel(64).0,
        }
    }

    fn published(&self) -> std::sync::MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, kind: &'static str, data: String) {
        let data: Arc<str> = data.into();
        {
            let mut p = self.published();
            match kind {
                "sample" => {
                    p.history.push_back(Arc::clone(&data));
                    while p.history.len() > HISTORY {
                        p.history.pop_front();
                    }
                }
                _ => p.status = Some(Arc::clone(&data)),
            }
        }
        // No stream listening is not an error.
        let _ = self.events.send(Message { kind, data });
    }
}

/// What the sampler keeps between ticks.
#[derive(Default)]
struct Sampler {
    /// Per engine: when its last report arrived, and its rates.
    engines: HashMap<String, (String, EngineRates)>,
    /// The configuration and the revision it was read at.
    config: Option<(u64, Config)>,
    status: Option<StatusView>,
    connected: Vec<String>,
}

impl Sampler {
    async fn tick(&mut self, live: &Live) -> Result<(), String> {
        let state = &live.state;
        let store = Arc::clone(&state.store);
        let records = tokio::task::spawn_blocking(move || store.engines())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let mut fresh = false;
        let mut connected = Vec::new();
        for view in records.into_iter().map(|r| state.engines.view(r)) {
            let Some(received) = view
                .report
                .filter(|_| view.connection == Connection::Connected)
            else {
                continue;
            };
            connected.push(view.name.clone());
            let entry = self.engines.entry(view.name).or_default();
            if entry.0 == received.received_at {
                continue;
            }
            entry.0.clone_from(&received.received_at);
            let at = humantime::parse_rfc3339(&received.received_at)
                .unwrap_or_else(|_| SystemTime::now());
            fresh |= entry.1.update(at, &received.report.counters);
        }
        self.engines.retain(|name, _| connected.contains(name));
        connected.sort();
        if fresh || connected != self.connected {
            self.connected = connected;
            let s: Sample = sample(SystemTime::now(), self.engines.values().map(|(_, r)| r));
            live.publish(
                "sample",
                serde_json::to_string(&s).expect("a sample serialises"),
            );
        }

        // The configuration is read again only when its revision moved.
        let revision = state.polls.published();
        if self.config.as_ref().is_none_or(|(r, _)| *r != revision) {
            let store = Arc::clone(&state.store);
            let snap = tokio::task::spawn_blocking(move || store.snapshot())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            self.config = Some((snap.config_revision, snap.config));
        }
        let (revision, config) = self.config.as_ref().expect("read above");
        let view = ricochet_controller::status::status_view(
            *revision,
            config,
            &state.engines.server_health(),
            &state.engines.bgp_reports(),
        );
        if self.status.as_ref() != Some(&view) {
            live.publish(
                "status",
                serde_json::to_string(&view).expect("a view serialises"),
            );
            self.status = Some(view);
        }
        Ok(())
    }
}

async fn run_sampler(live: Arc<Live>) {
    let mut shutdown = live.state.shutdown.clone();
    let mut sampler = Sampler::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = sampler.tick(&live).await {
            tracing::error!("console: sampling the engines' reports: {e}");
        }
    }
}

fn event(m: &Message) -> Event {
    Event::default().event(m.kind).data(&*m.data)
}

async fn stream(
    State(_): State<AppState>,
    Extension(live): Extension<Arc<Live>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    live.start
        .call_once(|| drop(tokio::spawn(run_sampler(Arc::clone(&live)))));
    // Subscribed before the snapshot: nothing published in between is lost (a sample may
    // come twice; the pages ignore one that is not newer than their last).
    let mut events = live.events.subscribe();
    let (history, status) = {
        let p = live.published();
        (
            p.history.iter().cloned().collect::<Vec<_>>(),
            p.status.clone(),
        )
    };
    let (tx, rx) = mpsc::channel::<Event>(16);
    let mut shutdown = live.state.shutdown.clone();
    tokio::spawn(async move {
        let history = format!(
            "[{}]",
            history.iter().map(|s| &**s).collect::<Vec<_>>().join(",")
        );
        let mut first = vec![Event::default().event("history").data(history)];
        if let Some(status) = status {
            first.push(Event::default().event("status").data(&*status));
        }
        for e in first {
            if tx.send(e).await.is_err() {
                return;
            }
        }
        loop {
            if *shutdown.borrow() {
                return;
            }
            let message = tokio::select! {
                m = events.recv() => m,
                _ = shutdown.changed() => return,
                () = tx.closed() => return,
            };
            match message {
                Ok(m) => {
                    if tx.send(event(&m)).await.is_err() {
                        return;
                    }
                }
                // A slow reader missed some: the next ones still come.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let stream =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
