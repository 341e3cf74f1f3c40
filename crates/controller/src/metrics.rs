//! `GET /metrics`: the controller's metrics in the Prometheus text format (0.0.4).
//!
//! - API requests by method, route *template* (`/api/v1/pools/{name}`, never the raw
//!   path, so object names do not multiply series; `unmatched` for paths no route has)
//!   and status, with their durations;
//! - the store's revision and configuration revision, and the duration of its commits;
//! - service engines by connection and reported state, and each engine's revision.
//!
//! The route needs a token like the rest of the API: the metrics name every engine, and
//! the controller's tokens are what Prometheus sends (`authorization: { credentials_file:
//! ... }` in its scrape config). It is in the OpenAPI document, so the document still
//! lists exactly the routes served.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::api::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::types::{Connection, EngineRunState, ServiceEngine};

/// A request's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The HTTP method.
    pub method: String,
    /// The route template, or `unmatched`.
    pub route: String,
    /// The status code answered.
    pub status: String,
}

/// A route's labels (durations are per route, not per status).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The HTTP method.
    pub method: String,
    /// The route template, or `unmatched`.
    pub route: String,
}

type DurationFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The requests the API answered.
#[derive(Debug)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    durations: DurationFamily,
}

fn request_histogram() -> Histogram {
    // 1 ms to 33 s: desired-state polls wait up to 30 s by design.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The histogram of store commits: 0.1 ms to 3.3 s (an fsync each).
pub fn commit_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            durations: Family::new_with_constructor(request_histogram as fn() -> Histogram),
        }
    }
}

/// The middleware counting each request under its route template and status (401s of
/// the token check included: it runs inside this layer).
pub async fn track(
    State(metrics): State<Arc<ApiMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let took = started.elapsed().as_secs_f64();
    metrics
        .durations
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(took);
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16().to_string(),
        })
        .inc();
    response
}

/// The controller's metrics.
///
/// Prometheus text format (version 0.0.4): API requests by route and status, store revision and commit durations, engines by state. Needs a token like the rest of the API.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain", body = String),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub async fn scrape(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (engines, (revision, config_revision)) =
        state.store(|s| Ok((s.engines()?, s.revisions()?))).await?;
    let engines: Vec<ServiceEngine> = engines.into_iter().map(|r| state.engines.view(r)).collect();
    let mut registry = Registry::default();
    registry.register(
        "ricochet_controller_http_requests",
        "API requests answered, by method, route template and status",
        state.metrics.requests.clone(),
    );
    registry.register(
        "ricochet_controller_http_request_duration_seconds",
        "Time to answer API requests, by method and route template (desired-state polls wait up to 30 s)",
        state.metrics.durations.clone(),
    );
    registry.register(
        "ricochet_controller_store_commit_duration_seconds",
        "Time each store commit took (one write transaction, fsync included)",
        state.store.commit_durations().clone(),
    );
    registry.register_collector(Box::new(StateCollector {
        revision,
        config_revision,
        engines,
        polls_waiting: state.polls.waiting(),
        poll_wake_interval: state.polls.interval(),
    }));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .map_err(|e| ApiError::internal("encoding the metrics", &e))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

#[derive(Debug)]
struct StateCollector {
    revision: u64,
    config_revision: u64,
    engines: Vec<ServiceEngine>,
    polls_waiting: usize,
    poll_wake_interval: std::time::Duration,
}

fn gauge_family(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Vec<(&'static str, String)>, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn state_name(s: Option<EngineRunState>) -> &'static str {
    match s {
        None => "unreported",
        Some(EngineRunState::Starting) => "starting",
        Some(EngineRunState::Running) => "running",
        Some(EngineRunState::Degraded) => "degraded",
        Some(EngineRunState::Failed) => "failed",
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge_family(
            &mut e,
            "ricochet_controller_store_revision",
            "The store's revision: one more per committed change (configuration, engines, events)",
            [(vec![], self.revision as i64)],
        )?;
        gauge_family(
            &mut e,
            "ricochet_controller_config_revision",
            "The revision of the last configuration change (what engines fetch and run)",
            [(vec![], self.config_revision as i64)],
        )?;
        gauge_family(
            &mut e,
            "ricochet_controller_desired_polls_waiting",
            "Desired-state long polls waiting for a newer configuration revision",
            [(vec![], self.polls_waiting as i64)],
        )?;
        let mut interval = e.encode_descriptor(
            "ricochet_controller_desired_poll_wake_interval_seconds",
            "The least time between two wakes of the waiting polls: 0.5 s, or four times what \
             the last wake's answers took if longer",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.poll_wake_interval.as_secs_f64())
            .encode(interval.encode_family(&Vec::<(&str, String)>::new())?)?;
        let connection = |c: Connection| match c {
            Connection::Connected => "connected",
            Connection::Disconnected => "disconnected",
        };
        let mut series = Vec::new();
        for c in [Connection::Connected, Connection::Disconnected] {
            for s in [
                None,
                Some(EngineRunState::Starting),
                Some(EngineRunState::Running),
                Some(EngineRunState::Degraded),
                Some(EngineRunState::Failed),
            ] {
                let n = self
                    .engines
                    .iter()
                    .filter(|e| e.connection == c && e.report.as_ref().map(|r| r.report.state) == s)
                    .count();
                series.push((
                    vec![
                        ("connection", connection(c).to_owned()),
                        ("state", state_name(s).to_owned()),
                    ],
                    n as i64,
                ));
            }
        }
        gauge_family(
            &mut e,
            "ricochet_controller_engines",
            "Registered service engines by connection and last reported state",
            series,
        )?;
        gauge_family(
            &mut e,
            "ricochet_controller_engine_connected",
            "1 while a registered engine is connected, 0 otherwise",
            self.engines.iter().map(|e| {
                (
                    vec![("engine", e.name.clone())],
                    i64::from(e.connection == Connection::Connected),
                )
            }),
        )?;
        gauge_family(
            &mut e,
            "ricochet_controller_engine_revision",
            "The configuration revision each engine last reported running",
            self.engines.iter().filter_map(|e| {
                let r = e.report.as_ref()?.report.revision?;
                Some((vec![("engine", e.name.clone())], r as i64))
            }),
        )?;
        Ok(())
    }
}
