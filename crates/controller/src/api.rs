//! The REST API: routes, handlers and the OpenAPI document generated from them.
//!
//! Every route is registered through `utoipa_axum`'s router from a handler annotated with
//! `#[utoipa::path]`, so the document served at `/api/v1/openapi.json` lists exactly the
//! routes that exist.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use ricochet_config::{
    ApplicationProfile, Config, HealthMonitor, NetworkProfile, Pool, ServiceEngineGroup,
    VirtualService,
};
use serde::Deserialize;
use tokio::sync::watch;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Access, Actor, AuthState, EngineName, Principal, RouteAccess, Tokens};
use crate::engines::Engines;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_json, ApiJson, ApiPath, ApiQuery, JsonBytes};
use crate::index::Indexed;
use crate::kind::{ConfigObject, Kind};
use crate::metrics::ApiMetrics;
use crate::poll_wakes::PollWakes;
use crate::store::{Edit, Store, StoreError};
use crate::types::{
    is_valid_engine_name, is_valid_token_name, ApplyResult, Configuration, CreatedSession,
    CreatedToken, Deleted, Desired, EngineRegistration, EngineReport, EventList, Health, NewToken,
    ObjectList, Role, ServiceEngine, ServiceEngineList, TokenInfo, TokenList, Versioned,
    ENGINE_NAME_RULE, TOKEN_NAME_RULE,
};

/// Longest desired-state poll (`wait`); a longer one is refused. The document's `maximum`
/// of `wait` says the same (a test compares them).
pub const MAX_WAIT_SECS: u64 = 300;
/// Desired-state poll wait when `wait` is not given.
pub const DEFAULT_WAIT_SECS: u64 = 30;
/// Largest request body (a whole configuration): the API's one message limit.
const BODY_LIMIT: usize = ricochet_api::MAX_MESSAGE_BYTES;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<Store>,
    /// The configuration revision desired-state polls wait on, published after the
    /// commits that change it, paced.
    pub polls: Arc<PollWakes>,
    /// Live engines.
    pub engines: Arc<Engines>,
    /// Becomes true when the controller stops: waiting polls return at once.
    pub shutdown: watch::Receiver<bool>,
    /// Requests by route and status, for `GET /metrics`.
    pub metrics: Arc<ApiMetrics>,
    /// The desired-state document of the newest revision, shared by all pollers.
    pub desired: Arc<crate::desired::DesiredCache>,
}

impl AppState {
    /// Runs `f` on the store off the async threads (redb blocks, and commits fsync).
    pub(crate) async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ApiError::internal("a store task failed", &e))?
            .map_err(ApiError::from)
    }

    /// Wakes desired-state polls (paced: [`crate::poll_wakes`]).
    fn publish(&self, config_revision: u64) {
        self.polls.commit(config_revision);
    }

    /// Records engine events; a failure is logged, not returned: the request it came
    /// with (a report, a poll) has succeeded.
    async fn record(&self, events: Vec<crate::store::NewEvent>) {
        if events.is_empty() {
            return;
        }
        if let Err(e) = self.store(move |s| s.record(events)).await {
            tracing::error!("recording engine events: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------------------

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ricochet controller API",
        description = "Ricochet's configuration (VMware Avi's object model: network and \
application profiles, health monitors, pools, service engine groups, virtual services), the \
service engines that run it, and the events of both. Every request needs \
`Authorization: Bearer <token>` except `/healthz` and this document; the admin token is \
created on the controller's first start in `<state_dir>/admin-token`.\n\nErrors are `{\"error\", \"message\", \"details\": [{\"path\", \
\"message\"}]}`; paths are configuration paths such as `virtual_services[\"web-vs\"].pool`, or \
paths within the request body for malformed bodies. A refused request changes nothing.\n\n\
Revisions: every committed change takes the next store revision; objects carry the revision \
that last changed them, and the configuration the revision of its last change.",
        license(name = "MIT OR Apache-2.0")
    ),
    modifiers(&BearerSecurity),
    security(("bearer" = [])),
    tags(
        (name = "network-profiles", description = "Avi NetworkProfile: TCP/UDP fast path with DSR"),
        (name = "application-profiles", description = "Avi ApplicationProfile (System-L4-Application is built in)"),
        (name = "health-monitors", description = "Avi HealthMonitor"),
        (name = "pools", description = "Avi Pool: servers by their own IP"),
        (name = "service-engine-groups", description = "Avi ServiceEngineGroup: the engines that carry a virtual service, and their BGP announcement of its VIP"),
        (name = "virtual-services", description = "Avi VirtualService with its VIP"),
        (name = "configuration", description = "The whole configuration: export and declarative apply"),
        (name = "service-engines", description = "Engines: registration, reports, desired state"),
        (name = "events", description = "State changes with time, reason and revision"),
        (name = "status", description = "Virtual services up, degraded or down from their servers' health"),
        (name = "tokens", description = "API tokens and their roles (admin only)"),
        (name = "sessions", description = "Sign-in sessions made from a token (the console's), ended by sign-out"),
        (name = "system", description = "Health and this document"),
    )
)]
struct ApiDoc;

struct BearerSecurity;

impl Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The admin token from <state_dir>/admin-token"))
                    .build(),
            ),
        );
    }
}

/// Adds the answers of the authorization layer to every operation that needs a token, so
/// that the document cannot forget them on a route.
struct AuthResponses;

impl Modify for AuthResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                // `security(())` marks a public operation: an empty requirement.
                let public = op
                    .security
                    .as_ref()
                    .is_some_and(|s| s.iter().all(|r| r == &Default::default()));
                if public {
                    continue;
                }
                let responses = &mut op.responses.responses;
                responses
                    .entry("401".to_owned())
                    .or_insert_with(|| error("No valid token").into());
                responses.entry("403".to_owned()).or_insert_with(|| {
                    error("The token's role does not allow this request").into()
                });
            }
        }
    }
}

/// Every route with its documentation.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(network_profiles::list, network_profiles::create))
        .routes(routes!(
            network_profiles::show,
            network_profiles::replace,
            network_profiles::delete
        ))
        .routes(routes!(
            application_profiles::list,
            application_profiles::create
        ))
        .routes(routes!(
            application_profiles::show,
            application_profiles::replace,
            application_profiles::delete
        ))
        .routes(routes!(health_monitors::list, health_monitors::create))
        .routes(routes!(
            health_monitors::show,
            health_monitors::replace,
            health_monitors::delete
        ))
        .routes(routes!(pools::list, pools::create))
        .routes(routes!(pools::show, pools::replace, pools::delete))
        .routes(routes!(
            service_engine_groups::list,
            service_engine_groups::create
        ))
        .routes(routes!(
            service_engine_groups::show,
            service_engine_groups::replace,
            service_engine_groups::delete
        ))
        .routes(routes!(virtual_services::list, virtual_services::create))
        .routes(routes!(
            virtual_services::show,
            virtual_services::replace,
            virtual_services::delete
        ))
        .routes(routes!(get_configuration, put_configuration))
        .routes(routes!(list_events))
        .routes(routes!(status))
        .routes(routes!(list_engines, register_engine))
        .routes(routes!(show_engine, unregister_engine))
        .routes(routes!(engine_report))
        .routes(routes!(desired))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(start_session))
        .routes(routes!(end_session))
        .routes(routes!(healthz))
        .routes(routes!(openapi_json))
        .routes(routes!(crate::metrics::scrape))
}

/// What each route requires: every route the router serves must be here (a route
/// missing is refused at run time and fails the role-matrix test).
pub const ROUTE_ACCESS: &[RouteAccess] = &{
    use Access::*;
    const fn r(method: &'static str, path: &'static str, access: Access) -> RouteAccess {
        RouteAccess {
            method,
            path,
            access,
        }
    }
    const NP: &str = "/api/v1/network-profiles";
    const NP1: &str = "/api/v1/network-profiles/{name}";
    const AP: &str = "/api/v1/application-profiles";
    const AP1: &str = "/api/v1/application-profiles/{name}";
    const HM: &str = "/api/v1/health-monitors";
    const HM1: &str = "/api/v1/health-monitors/{name}";
    const PO: &str = "/api/v1/pools";
    const PO1: &str = "/api/v1/pools/{name}";
    const SG: &str = "/api/v1/service-engine-groups";
    const SG1: &str = "/api/v1/service-engine-groups/{name}";
    const VS: &str = "/api/v1/virtual-services";
    const VS1: &str = "/api/v1/virtual-services/{name}";
    const SE: &str = "/api/v1/service-engines";
    const SE1: &str = "/api/v1/service-engines/{name}";
    [
        r("GET", NP, Read),
        r("POST", NP, Write),
        r("GET", NP1, Read),
        r("PUT", NP1, Write),
        r("DELETE", NP1, Write),
        r("GET", AP, Read),
        r("POST", AP, Write),
        r("GET", AP1, Read),
        r("PUT", AP1, Write),
        r("DELETE", AP1, Write),
        r("GET", HM, Read),
        r("POST", HM, Write),
        r("GET", HM1, Read),
        r("PUT", HM1, Write),
        r("DELETE", HM1, Write),
        r("GET", PO, Read),
        r("POST", PO, Write),
        r("GET", PO1, Read),
        r("PUT", PO1, Write),
        r("DELETE", PO1, Write),
        r("GET", SG, Read),
        r("POST", SG, Write),
        r("GET", SG1, Read),
        r("PUT", SG1, Write),
        r("DELETE", SG1, Write),
        r("GET", VS, Read),
        r("POST", VS, Write),
        r("GET", VS1, Read),
        r("PUT", VS1, Write),
        r("DELETE", VS1, Write),
        r("GET", "/api/v1/configuration", Read),
        r("PUT", "/api/v1/configuration", Write),
        r("GET", "/api/v1/events", Read),
        r("GET", "/api/v1/status", Read),
        r("GET", SE, Read),
        r("POST", SE, EngineWrite(EngineName::Body)),
        r("GET", SE1, Read),
        r("DELETE", SE1, Write),
        r(
            "POST",
            "/api/v1/service-engines/{name}/report",
            EngineWrite(EngineName::Path),
        ),
        r("GET", "/api/v1/desired", EngineRead),
        r("GET", "/api/v1/tokens", Admin),
        r("POST", "/api/v1/tokens", Admin),
        r("DELETE", "/api/v1/tokens/{name}", Admin),
        // Every role that reads may sign in (an engine token has no console to sign in to).
        r("POST", "/api/v1/sessions", Read),
        r("DELETE", "/api/v1/sessions/current", Read),
        r("GET", "/healthz", Public),
        r("GET", "/api/v1/openapi.json", Public),
        // Names every engine: not public; Prometheus gets a read-only token.
        r("GET", "/metrics", Read),
    ]
};

/// The API: routes, the document, JSON errors for unknown routes and wrong methods, and
/// authentication (`tokens`; `None` turns it off).
pub fn router(state: AppState, tokens: Option<Tokens>) -> Router {
    let metrics = state.metrics.clone();
    let (router, openapi) = split();
    let router = router
        .layer(Extension(Arc::new(openapi)))
        .layer(Extension(tokens.clone()))
        // Unknown routes are 404 only to a valid token: without one, nothing tells which
        // routes exist.
        .fallback({
            let tokens = tokens.clone();
            move |request: Request| async move {
                match tokens.as_ref().map(|t| auth::authenticate(t, &request)) {
                    Some(Err(e)) => e,
                    _ => not_found(request).await,
                }
            }
        })
        // Inside authorization: what reaches it has passed with a token (the connection
        // limit keeps such connections; public routes carry no actor).
        .route_layer(middleware::from_fn(crate::connections::mark_authenticated))
        // After routing, so that it knows the matched route; before the handler's
        // extractors, so that a refused request's body is not even read.
        .route_layer(middleware::from_fn_with_state(
            AuthState {
                tokens,
                routes: ROUTE_ACCESS,
            },
            auth::authorize,
        ))
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            metrics,
            crate::metrics::track,
        ));
    // A layer on a router runs inside each route, before axum adds the `Allow` header to
    // a 405; so the 405 rewrite wraps the whole router instead.
    Router::new()
        .fallback_service(router)
        .layer(middleware::from_fn(method_not_allowed_as_json))
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "there is no {} {} in this API (see /api/v1/openapi.json)",
            request.method(),
            request.uri().path()
        ),
    )
}

/// axum answers a known path with a wrong method 405 with an empty body: give it the
/// API's error body, naming the methods the `Allow` header lists.
async fn method_not_allowed_as_json(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response
        .headers()
        .get(header::ALLOW)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(""));
    let allowed = allow.to_str().unwrap_or_default().replace(',', ", ");
    let mut answer = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {path}; allowed: {allowed}"),
    )
    .into_response();
    answer.headers_mut().insert(header::ALLOW, allow);
    answer
}

// ---------------------------------------------------------------------------------------
// Objects, generic over the kind; the per-kind handlers below only add the documentation.
// ---------------------------------------------------------------------------------------

fn cause(actor: &Actor, method: &str, path: &str) -> String {
    format!("{method} {path} by {}", actor.0)
}

fn collection(kind: Kind) -> String {
    format!("/api/v1/{}", kind.segment())
}

async fn list_objects<T: ConfigObject>(state: AppState) -> Result<Json<ObjectList<T>>, ApiError> {
    let (revision, items) = state.store(|s| s.list::<T>()).await?;
    Ok(Json(ObjectList { revision, items }))
}

async fn show_object<T: ConfigObject>(state: AppState, name: String) -> Result<Response, ApiError> {
    let found = {
        let name = name.clone();
        state.store(move |s| s.get::<T>(&name)).await?
    };
    found
        .map(versioned_response)
        .ok_or_else(|| ApiError::object_not_found(T::KIND, &name))
}

/// An object with its revision as the `ETag`, for a later `If-Match`.
fn versioned_response<T: serde::Serialize>(v: Versioned<T>) -> Response {
    ([(header::ETAG, etag(v.revision))], Json(v)).into_response()
}

/// The revision `If-Match` expects: `None` without the header or with `*` (whatever the
/// current revision, RFC 9110). A revision is `"12"` (the `ETag`), `W/"12"` or `12`: the
/// document's pattern for the header says the same (`tests/api.rs` sends both kinds).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text);
    let digits = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(tag);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_header",
            format!("If-Match must be a revision such as \"12\", or *, not {text:?}"),
        ));
    }
    // Digits beyond any u64 are a well-formed tag that no revision has: the precondition
    // fails, as for any other revision that is not the current one.
    digits.parse().map(Some).map_err(|_| {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "revision_mismatch",
            format!(
                "If-Match names revision {digits}, which nothing has ever had; nothing was saved"
            ),
        )
    })
}

async fn create_object<T: Indexed>(
    state: AppState,
    actor: Actor,
    object: T,
) -> Result<Response, ApiError> {
    let kind = T::KIND;
    let name = object.name().to_owned();
    let reason = cause(&actor, "POST", &collection(kind));
    let stored = object.clone();
    let change = {
        let name = name.clone();
        state
            .store(move |s| s.change_object(&name, Edit::Create(stored), &reason, None))
            .await?
    };
    state.publish(change.applied.config_revision);
    let location = format!("{}/{}", collection(kind), percent_encode_segment(&name));
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(Versioned {
            revision: change.applied.config_revision,
            object,
        }),
    )
        .into_response())
}

/// `name` as one URL path segment: every byte but unreserved ones (RFC 3986) encoded, so
/// that `Location` always names the object that was created.
pub fn percent_encode_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn replace_object<T: Indexed>(
    state: AppState,
    actor: Actor,
    name: String,
    expect: Option<u64>,
    object: T,
) -> Result<Response, ApiError> {
    let kind = T::KIND;
    if object.name() != name {
        // A well-formed request refused for what it says: 422, like every such refusal
        // (400 is for requests that cannot be read).
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name_mismatch",
            format!(
                "the body names {kind} {:?} but the URL names {name:?}; an object cannot be \
                 renamed: create the new name and delete the old one",
                object.name()
            ),
        )
        .with_detail("name", format!("must be {name:?}, as in the URL")));
    }
    let reason = cause(&actor, "PUT", &format!("{}/{name}", collection(kind)));
    let change = {
        let name = name.clone();
        state
            .store(move |s| s.change_object(&name, Edit::Replace(object), &reason, expect))
            .await?
    };
    if change.applied.committed {
        state.publish(change.applied.config_revision);
    }
    // Unchanged: the stored object with the revision of its last change.
    change
        .stored
        .map(versioned_response)
        .ok_or_else(|| ApiError::object_not_found(kind, &name))
}

async fn delete_object<T: Indexed>(
    state: AppState,
    actor: Actor,
    name: String,
) -> Result<Json<Deleted>, ApiError> {
    let kind = T::KIND;
    let reason = cause(&actor, "DELETE", &format!("{}/{name}", collection(kind)));
    let change = {
        let name = name.clone();
        state
            .store(move |s| s.change_object::<T>(&name, Edit::Delete, &reason, None))
            .await?
    };
    state.publish(change.applied.config_revision);
    Ok(Json(Deleted {
        revision: change.applied.config_revision,
        kind: kind.segment().to_owned(),
        name,
    }))
}

/// The five handlers of one kind, each documented for the OpenAPI document.
macro_rules! object_api {
    ($module:ident, $ty:ident, $noun:tt, $tag:tt, $collection:tt, $item:tt,
     $list:ident, $create:ident, $show:ident, $replace:ident, $delete:ident) => {
        pub(crate) mod $module {
            use super::*;

            #[utoipa::path(get, path = $collection, tag = $tag, summary = concat!("List every ", $noun, ", sorted by name"),
                operation_id = stringify!($list),
                responses(
                    (status = 200, description = "The objects", body = ObjectList<$ty>),
                    (status = 401, description = "No valid token", body = ErrorBody),
                ))]
            pub async fn list(State(state): State<AppState>) -> Result<Json<ObjectList<$ty>>, ApiError> {
                list_objects::<$ty>(state).await
            }

            #[utoipa::path(post, path = $collection, tag = $tag, summary = concat!("Create a new ", $noun),
                operation_id = stringify!($create),
                request_body(content = $ty, content_type = "application/json"),
                responses(
                    (status = 201, description = "Created; `Location` names it", body = Versioned<$ty>),
                    (status = 400, description = "Malformed JSON, unknown field or wrong type (path within the body)", body = ErrorBody),
                    (status = 401, description = "No valid token", body = ErrorBody),
                    (status = 409, description = "The name exists", body = ErrorBody),
                    (status = 415, description = "Not JSON", body = ErrorBody),
                    (status = 422, description = "The resulting configuration does not validate", body = ErrorBody),
                ))]
            pub async fn create(
                State(state): State<AppState>,
                Extension(actor): Extension<Actor>,
                ApiJson(object): ApiJson<$ty>,
            ) -> Result<Response, ApiError> {
                create_object::<$ty>(state, actor, object).await
            }

            #[utoipa::path(get, path = $item, tag = $tag, summary = concat!("Show one ", $noun),
                operation_id = stringify!($show),
                params(("name" = String, Path, description = "The object's name")),
                responses(
                    (status = 200, description = "The object", body = Versioned<$ty>,
                     headers(("ETag" = String, description = "The object's revision, quoted: send it as `If-Match` to replace it"))),
                    (status = 401, description = "No valid token", body = ErrorBody),
                    (status = 404, description = "No such object", body = ErrorBody),
                ))]
            pub async fn show(
                State(state): State<AppState>,
                ApiPath(name): ApiPath<String>,
            ) -> Result<Response, ApiError> {
                show_object::<$ty>(state, name).await
            }

            #[utoipa::path(put, path = $item, tag = $tag, summary = concat!("Replace one ", $noun, " (the body's name must be the URL's)"),
                operation_id = stringify!($replace),
                params(("name" = String, Path, description = "The object's name"),
                    ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|(W/)?("[0-9]+"|[0-9]+))$"#,
                     description = "The object's revision this edit was prepared against (its `ETag`); `*` for any")),
                request_body(content = $ty, content_type = "application/json"),
                responses(
                    (status = 200, description = "Replaced (or unchanged: same revision)", body = Versioned<$ty>,
                     headers(("ETag" = String, description = "The object's revision, quoted"))),
                    (status = 400, description = "Malformed body or `If-Match`", body = ErrorBody),
                    (status = 401, description = "No valid token", body = ErrorBody),
                    (status = 404, description = "No such object", body = ErrorBody),
                    (status = 412, description = "The object changed since the `If-Match` revision", body = ErrorBody),
                    (status = 415, description = "Not JSON", body = ErrorBody),
                    (status = 422, description = "The body's name differs from the URL's, or the resulting configuration does not validate", body = ErrorBody),
                ))]
            pub async fn replace(
                State(state): State<AppState>,
                Extension(actor): Extension<Actor>,
                ApiPath(name): ApiPath<String>,
                headers: HeaderMap,
                ApiJson(object): ApiJson<$ty>,
            ) -> Result<Response, ApiError> {
                replace_object::<$ty>(state, actor, name, if_match(&headers)?, object).await
            }

            #[utoipa::path(delete, path = $item, tag = $tag, summary = concat!("Delete one ", $noun, " that nothing refers to"),
                operation_id = stringify!($delete),
                params(("name" = String, Path, description = "The object's name")),
                responses(
                    (status = 200, description = "Deleted", body = Deleted),
                    (status = 401, description = "No valid token", body = ErrorBody),
                    (status = 404, description = "No such object", body = ErrorBody),
                    (status = 409, description = "In use by another object (named in the details), or built in", body = ErrorBody),
                ))]
            pub async fn delete(
                State(state): State<AppState>,
                Extension(actor): Extension<Actor>,
                ApiPath(name): ApiPath<String>,
            ) -> Result<Json<Deleted>, ApiError> {
                delete_object::<$ty>(state, actor, name).await
            }
        }
    };
}

object_api!(
    network_profiles,
    NetworkProfile,
    "network profile",
    "network-profiles",
    "/api/v1/network-profiles",
    "/api/v1/network-profiles/{name}",
    list_network_profiles,
    create_network_profile,
    show_network_profile,
    replace_network_profile,
    delete_network_profile
);
object_api!(
    application_profiles,
    ApplicationProfile,
    "application profile",
    "application-profiles",
    "/api/v1/application-profiles",
    "/api/v1/application-profiles/{name}",
    list_application_profiles,
    create_application_profile,
    show_application_profile,
    replace_application_profile,
    delete_application_profile
);
object_api!(
    health_monitors,
    HealthMonitor,
    "health monitor",
    "health-monitors",
    "/api/v1/health-monitors",
    "/api/v1/health-monitors/{name}",
    list_health_monitors,
    create_health_monitor,
    show_health_monitor,
    replace_health_monitor,
    delete_health_monitor
);
object_api!(
    pools,
    Pool,
    "pool",
    "pools",
    "/api/v1/pools",
    "/api/v1/pools/{name}",
    list_pools,
    create_pool,
    show_pool,
    replace_pool,
    delete_pool
);
object_api!(
    service_engine_groups,
    ServiceEngineGroup,
    "service engine group",
    "service-engine-groups",
    "/api/v1/service-engine-groups",
    "/api/v1/service-engine-groups/{name}",
    list_service_engine_groups,
    create_service_engine_group,
    show_service_engine_group,
    replace_service_engine_group,
    delete_service_engine_group
);
object_api!(
    virtual_services,
    VirtualService,
    "virtual service",
    "virtual-services",
    "/api/v1/virtual-services",
    "/api/v1/virtual-services/{name}",
    list_virtual_services,
    create_virtual_service,
    show_virtual_service,
    replace_virtual_service,
    delete_virtual_service
);

// ---------------------------------------------------------------------------------------
// The whole configuration
// ---------------------------------------------------------------------------------------

fn etag(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).expect("digits are a valid header")
}

/// The whole configuration.
///
/// `ETag` is the configuration revision.
#[utoipa::path(get, path = "/api/v1/configuration", tag = "configuration",
    responses(
        (status = 200, description = "The configuration", body = Configuration,
         headers(("ETag" = String, description = "The configuration revision, quoted"))),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn get_configuration(State(state): State<AppState>) -> Result<Response, ApiError> {
    let snap = state.store(|s| s.snapshot()).await?;
    let revision = snap.config_revision;
    Ok((
        [(header::ETAG, etag(revision))],
        Json(Configuration {
            revision,
            config: snap.config,
        }),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ApplyParams {
    /// Only compute and return the diff; commit nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Replace the whole configuration (declarative apply).
///
/// One transaction: objects absent from the body are deleted (except the built-in application profile), the others created or
/// replaced. With `dry_run=true`, returns the diff without committing. `If-Match` with the
/// revision of a preview refuses the apply (412) if the configuration changed since.
#[utoipa::path(put, path = "/api/v1/configuration", tag = "configuration",
    params(ApplyParams,
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|(W/)?("[0-9]+"|[0-9]+))$"#,
         description = "The configuration revision this apply expects, quoted or not; `*` for any")),
    request_body(content = Config, content_type = "application/json"),
    responses(
        (status = 200, description = "Applied, previewed, or nothing to change", body = ApplyResult),
        (status = 400, description = "Malformed JSON, unknown field or wrong type (path within the body); bad `dry_run` or `If-Match`", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 412, description = "The configuration changed since the expected revision", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "The configuration does not validate", body = ErrorBody),
    ))]
async fn put_configuration(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiQuery(params): ApiQuery<ApplyParams>,
    headers: HeaderMap,
    ApiJson(config): ApiJson<Config>,
) -> Result<Json<ApplyResult>, ApiError> {
    let expect = if_match(&headers)?;
    let dry_run = params.dry_run;
    let reason = cause(&actor, "PUT", "/api/v1/configuration");
    let applied = state
        .store(move |s| {
            s.change_config(
                |c| {
                    *c = config;
                    Ok(())
                },
                &reason,
                expect,
                dry_run,
            )
        })
        .await?;
    if applied.committed {
        state.publish(applied.config_revision);
    }
    Ok(Json(ApplyResult {
        revision: applied.config_revision,
        dry_run,
        committed: applied.committed,
        diff: applied.diff,
    }))
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct EventParams {
    /// Only events of revisions above this one (default 0: all kept events).
    #[serde(default)]
    #[param(value_type = ricochet_config::openapi::U64, inline)]
    since: u64,
    /// At most this many, oldest first (default 1000).
    #[serde(default = "default_event_limit")]
    #[param(value_type = ricochet_config::openapi::U64, inline)]
    limit: u64,
}

fn default_event_limit() -> u64 {
    1000
}

/// State changes after a revision.
///
/// Configuration objects created, changed and deleted; engines
/// registered, connected, disconnected, and their reported states; servers up and down
/// as engines report them. Each with its time, reason and revision.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(EventParams),
    responses(
        (status = 200, description = "The events, oldest first", body = EventList),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn list_events(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<Json<EventList>, ApiError> {
    let (revision, events) = state
        // A limit beyond memory is no limit: every kept event.
        .store(move |s| {
            s.events(
                params.since,
                usize::try_from(params.limit).unwrap_or(usize::MAX),
            )
        })
        .await?;
    Ok(Json(EventList { revision, events }))
}

/// The status of every virtual service and server.
///
/// Each virtual service is up, degraded, down, unknown or disabled, from the
/// health of its pool's servers as the connected engines report it, with the reason (e.g.
/// `1 of 2 servers down: 192.168.33.10 monitor web-tcp: connection refused ...`); each
/// server with its state, reason and since when.
#[utoipa::path(get, path = "/api/v1/status", tag = "status",
    responses(
        (status = 200, description = "Every virtual service, sorted by name", body = crate::types::StatusView),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn status(State(state): State<AppState>) -> Result<Json<crate::types::StatusView>, ApiError> {
    let snap = state.store(|s| s.snapshot()).await?;
    let reports = state.engines.server_health();
    Ok(Json(crate::status::status_view(
        snap.config_revision,
        &snap.config,
        &reports,
        &state.engines.bgp_reports(),
    )))
}

// ---------------------------------------------------------------------------------------
// Service engines
// ---------------------------------------------------------------------------------------

fn engine_not_registered(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_registered",
        format!("service engine {name:?} is not registered; register it with POST /api/v1/service-engines"),
    )
    .with_detail(format!("service_engines[{name:?}]"), "no engine has this name")
}

/// Refuses a registration whose name is not a valid engine name.
fn check_engine_name(name: &str) -> Result<(), ApiError> {
    if is_valid_engine_name(name) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        format!("service engine name {name:?} is not valid: use {ENGINE_NAME_RULE}"),
    )
    .with_detail("name", ENGINE_NAME_RULE))
}

/// A registered engine as the API shows it (one key read: reports and polls of every
/// engine come through here).
async fn engine_view(state: &AppState, name: String) -> Result<ServiceEngine, ApiError> {
    let record = {
        let name = name.clone();
        state.store(move |s| s.engine(&name)).await?
    };
    let record = record.ok_or_else(|| engine_not_registered(&name))?;
    Ok(state.engines.view(record))
}

/// List registered service engines.
///
/// With their connection state and last report.
#[utoipa::path(get, path = "/api/v1/service-engines", tag = "service-engines",
    responses(
        (status = 200, description = "The engines", body = ServiceEngineList),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn list_engines(State(state): State<AppState>) -> Result<Json<ServiceEngineList>, ApiError> {
    let (records, (revision, _)) = state.store(|s| Ok((s.engines()?, s.revisions()?))).await?;
    let items = records.into_iter().map(|r| state.engines.view(r)).collect();
    Ok(Json(ServiceEngineList { revision, items }))
}

/// Register a service engine.
///
/// Idempotent by name: registering again updates its addresses and version. The engine then polls `GET /api/v1/desired` and reports.
#[utoipa::path(post, path = "/api/v1/service-engines", tag = "service-engines",
    request_body(content = EngineRegistration, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered (new, or addresses or version changed)", body = ServiceEngine),
        (status = 200, description = "Already registered as given", body = ServiceEngine),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid name", body = ErrorBody),
    ))]
async fn register_engine(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(registration): ApiJson<EngineRegistration>,
) -> Result<Response, ApiError> {
    check_engine_name(&registration.name)?;
    principal.check_engine(&registration.name)?;
    let EngineRegistration {
        name,
        addresses,
        version,
    } = registration;
    // Registering is a sign of life: the connection event, if any, is committed with the
    // registration, in one transaction.
    let connected = state.engines.seen(&name, "registers");
    let (record, changed) = {
        let name = name.clone();
        state
            .store(move |s| s.register_engine(&name, &addresses, &version, connected))
            .await?
    };
    let status = if changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(state.engines.view(record))).into_response())
}

/// Show one service engine.
#[utoipa::path(get, path = "/api/v1/service-engines/{name}", tag = "service-engines",
    params(("name" = String, Path, description = "The engine's name")),
    responses(
        (status = 200, description = "The engine", body = ServiceEngine),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "Not registered", body = ErrorBody),
    ))]
async fn show_engine(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ServiceEngine>, ApiError> {
    engine_view(&state, name).await.map(Json)
}

/// Unregister a service engine.
///
/// For a decommissioned engine. If it still runs, it can register again.
#[utoipa::path(delete, path = "/api/v1/service-engines/{name}", tag = "service-engines",
    params(("name" = String, Path, description = "The engine's name")),
    responses(
        (status = 200, description = "Unregistered", body = Deleted),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "Not registered", body = ErrorBody),
    ))]
async fn unregister_engine(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Deleted>, ApiError> {
    let reason = cause(&actor, "DELETE", &format!("/api/v1/service-engines/{name}"));
    let revision = {
        let name = name.clone();
        state
            .store(move |s| s.unregister_engine(&name, &reason))
            .await?
    };
    let Some(revision) = revision else {
        return Err(engine_not_registered(&name));
    };
    state.engines.forget(&name);
    Ok(Json(Deleted {
        revision,
        kind: "service-engines".to_owned(),
        name,
    }))
}

/// Report an engine's state.
///
/// The configuration revision it runs, its state, counters and the health of each
/// server as it sees it. Kept in memory (the last one per engine); changes
/// of state and of server health become events.
#[utoipa::path(post, path = "/api/v1/service-engines/{name}/report", tag = "service-engines",
    params(("name" = String, Path, description = "The engine's name")),
    request_body(content = EngineReport, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored; the engine as the controller now sees it", body = ServiceEngine),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "Not registered", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "More servers than the configuration has", body = ErrorBody),
    ))]
async fn engine_report(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    // Registered first: a report must not resurrect an unregistered engine.
    let record = {
        let name = name.clone();
        state.store(move |s| s.engine(&name)).await?
    };
    let record = record.ok_or_else(|| engine_not_registered(&name))?;
    let current = state.polls.published();
    let configured = state
        .desired
        .at_least(&state.store, current)
        .await?
        .report_bound;
    // Parsing, comparing with the previous report and answering are linear in the
    // report's size and run off the async workers, so that a large report delays no
    // other request.
    let engines = Arc::clone(&state.engines);
    let (events, answer) = tokio::task::spawn_blocking(move || {
        let report: EngineReport = parse_json(&body)?;
        if report.servers.len() > configured {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "report_too_large",
                format!(
                    "the report lists {} servers but the configuration has {configured}; an \
                     engine reports at most the servers it was given",
                    report.servers.len()
                ),
            )
            .with_detail("servers", format!("at most {configured} entries")));
        }
        let events = engines.report(&name, report);
        let answer = serde_json::to_vec(&engines.view(record)).expect("views serialize");
        Ok((events, answer))
    })
    .await
    .map_err(|e| ApiError::internal("a report task failed", &e))??;
    state.record(events).await;
    Ok(([(header::CONTENT_TYPE, "application/json")], answer).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DesiredParams {
    /// The configuration revision the engine runs: the answer comes as soon as the
    /// configuration revision is above it. Absent: answer at once.
    #[param(value_type = ricochet_config::openapi::U64, inline, required = false)]
    after: Option<u64>,
    /// Seconds to wait for a newer revision, 0 to 300 (default 30); then 304. A longer
    /// wait is refused (422).
    #[param(nullable = false, maximum = 300)]
    wait: Option<u64>,
    /// The polling engine's name: marks it connected while it waits.
    #[param(
        nullable = false,
        min_length = 1,
        max_length = 253,
        pattern = "^[A-Za-z0-9._-]+$"
    )]
    engine: Option<String>,
}

/// The configuration engines run (long poll).
///
/// Answers as soon as the configuration revision exceeds `after` (at once if it already does), woken by the commit itself; 304
/// with the same `ETag` if nothing changed within `wait` seconds.
#[utoipa::path(get, path = "/api/v1/desired", tag = "service-engines",
    params(DesiredParams),
    responses(
        (status = 200, description = "The configuration at a revision above `after`", body = Desired,
         headers(("ETag" = String, description = "The configuration revision, quoted"))),
        (status = 304, description = "No newer revision within `wait`"),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "`engine` is not registered", body = ErrorBody),
        (status = 422, description = "`wait` is above 300 seconds", body = ErrorBody),
        (status = 503, description = "The controller is stopping; poll again", body = ErrorBody),
    ))]
async fn desired(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<DesiredParams>,
) -> Result<Response, ApiError> {
    let wait = params.wait.unwrap_or(DEFAULT_WAIT_SECS);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!(
                "wait {wait} is too long: poll for at most {MAX_WAIT_SECS} seconds, then poll \
                 again"
            ),
        )
        .with_detail("wait", format!("at most {MAX_WAIT_SECS}")));
    }
    let _poll = match &params.engine {
        Some(name) => {
            engine_view(&state, name.clone()).await?;
            let (guard, event) = state.engines.poll(name);
            state.record(event.into_iter().collect()).await;
            Some(guard)
        }
        None => None,
    };
    let wait = Duration::from_secs(wait);
    let mut revisions = state.polls.subscribe();
    let mut shutdown = state.shutdown.clone();
    let mut waited = false;
    if let Some(after) = params.after {
        let deadline = tokio::time::Instant::now() + wait;
        // Counted while it waits, for the pacing of wakes.
        let _waiting = state.polls.wait();
        loop {
            let current = *revisions.borrow_and_update();
            if current > after {
                break;
            }
            if *shutdown.borrow() {
                return Err(stopping());
            }
            waited = true;
            tokio::select! {
                changed = revisions.changed() => {
                    if changed.is_err() {
                        return Err(stopping());
                    }
                }
                _ = shutdown.changed() => return Err(stopping()),
                () = tokio::time::sleep_until(deadline) => {
                    return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag(current))]).into_response());
                }
            }
        }
    }
    // One document per revision, whichever poller asks first builds it.
    let current = *revisions.borrow();
    let doc = state.desired.at_least(&state.store, current).await?;
    if waited {
        state.polls.answered();
    }
    Ok((
        [
            (header::ETAG, etag(doc.revision)),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        doc.body.clone(),
    )
        .into_response())
}

fn stopping() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the controller is stopping; poll again",
    )
}

// ---------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------

/// The tokens (`None` when authentication is off: then there are none to manage).
fn token_registry(tokens: Option<Tokens>) -> Result<Tokens, ApiError> {
    tokens.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "auth_disabled",
            "authentication is off (--no-auth): there are no tokens to manage",
        )
    })
}

/// List the tokens.
///
/// Their names, roles and creation times; never the tokens (only their SHA-256 is kept).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses(
        (status = 200, description = "Every token, sorted by name", body = TokenList),
        (status = 409, description = "Authentication is off", body = ErrorBody),
    ))]
async fn list_tokens(
    State(state): State<AppState>,
    Extension(tokens): Extension<Option<Tokens>>,
) -> Result<Json<TokenList>, ApiError> {
    token_registry(tokens)?;
    let (records, (revision, _)) = state.store(|s| Ok((s.tokens()?, s.revisions()?))).await?;
    let mut items: Vec<TokenInfo> = records.iter().map(|(_, r)| r.info()).collect();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(TokenList { revision, items }))
}

/// Create a token.
///
/// The answer holds the token, shown this once: the controller keeps only its SHA-256.
/// An `engine` token needs the engine name it acts for; other roles take none.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens",
    request_body(content = NewToken, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; the only time the token is shown", body = CreatedToken),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 409, description = "A token has this name, or authentication is off", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid name, or an engine name missing or not expected", body = ErrorBody),
    ))]
async fn create_token(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Extension(tokens): Extension<Option<Tokens>>,
    ApiJson(new): ApiJson<NewToken>,
) -> Result<Response, ApiError> {
    let tokens = token_registry(tokens)?;
    let invalid = |path: &str, message: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("the token was refused: {message}"),
        )
        .with_detail(path, message)
    };
    if !is_valid_token_name(&new.name) {
        return Err(invalid(
            "name",
            format!(
                "token name {:?} is not valid: use {TOKEN_NAME_RULE}",
                new.name
            ),
        ));
    }
    match (&new.role, &new.engine) {
        (Role::Engine, None) => {
            return Err(invalid(
                "engine",
                "an engine token needs the name of the engine it acts for".to_owned(),
            ))
        }
        (Role::Engine, Some(engine)) if !is_valid_engine_name(engine) => {
            return Err(invalid(
                "engine",
                format!("engine name {engine:?} is not valid: use {ENGINE_NAME_RULE}"),
            ))
        }
        (role, Some(_)) if *role != Role::Engine => {
            return Err(invalid(
                "engine",
                format!("only an engine token names an engine, not a {role} token"),
            ))
        }
        _ => {}
    }
    let secret =
        auth::generate().map_err(|e| ApiError::internal("no randomness for a token", &e))?;
    let record = crate::store::TokenRecord {
        name: new.name.clone(),
        created_at: crate::store::now(),
        role: Some(new.role),
        engine: new.engine.clone(),
    };
    let info = record.info();
    let reason = cause(&actor, "POST", "/api/v1/tokens");
    let hash = auth::hash(&secret);
    let revision = {
        let tokens = tokens.clone();
        state
            .store(move |s| {
                let revision = s.create_token(record, &hash, &reason)?;
                tokens.reload(s)?;
                Ok(revision)
            })
            .await?
    };
    let location = format!("/api/v1/tokens/{}", percent_encode_segment(&info.name));
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(CreatedToken {
            revision,
            info,
            token: secret,
        }),
    )
        .into_response())
}

/// Revoke a token.
///
/// It stops working at once. Revoking the admin token is allowed; restart the controller
/// with `--new-admin-token` to get one again.
#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "tokens",
    params(("name" = String, Path, description = "The token's name")),
    responses(
        (status = 200, description = "Revoked", body = Deleted),
        (status = 404, description = "No token has this name", body = ErrorBody),
        (status = 409, description = "Authentication is off", body = ErrorBody),
    ))]
async fn revoke_token(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Extension(tokens): Extension<Option<Tokens>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Deleted>, ApiError> {
    let tokens = token_registry(tokens)?;
    let reason = cause(
        &actor,
        "DELETE",
        &format!("/api/v1/tokens/{}", percent_encode_segment(&name)),
    );
    let revision = {
        let name = name.clone();
        state
            .store(move |s| {
                let revision = s.revoke_token(&name, &reason)?;
                tokens.reload(s)?;
                Ok(revision)
            })
            .await?
    };
    let Some(revision) = revision else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no token is named {name:?}"),
        )
        .with_detail(format!("tokens[{name:?}]"), "no token has this name"));
    };
    Ok(Json(Deleted {
        revision,
        kind: "tokens".to_owned(),
        name,
    }))
}

// ---------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------

/// Start a session (sign in).
///
/// Exchanges the request's token for a session: a bearer token of its own, with the same
/// name and role, that ends at `DELETE /api/v1/sessions/current` (sign-out), when the
/// token is revoked, after eight hours or when the controller restarts. Sessions live in
/// the controller's memory only; a token holds at most 32 at once (signing in again ends
/// its oldest). The console signs in this way, so that signing out ends what the browser
/// holds.
#[utoipa::path(post, path = "/api/v1/sessions", tag = "sessions",
    responses(
        (status = 201, description = "Started; the only time the session's secret is shown", body = CreatedSession),
        (status = 409, description = "Authentication is off", body = ErrorBody),
    ))]
async fn start_session(
    headers: HeaderMap,
    Extension(principal): Extension<Principal>,
    Extension(tokens): Extension<Option<Tokens>>,
) -> Result<Response, ApiError> {
    let tokens = session_registry(tokens)?;
    let presented = auth::bearer_of(&headers)?;
    let (secret, expires) = tokens
        .start_session(presented)
        .map_err(|e| ApiError::internal("no randomness for a session", &e))?
        // Revoked between authorization and here.
        .ok_or_else(|| ApiError::unauthorized("the token is not valid", true))?;
    tracing::info!(
        token = %principal.name,
        sessions = tokens.session_count(),
        "session started"
    );
    Ok((
        StatusCode::CREATED,
        Json(CreatedSession {
            session: secret,
            name: principal.name,
            role: principal.role,
            expires_at: humantime::format_rfc3339_seconds(expires).to_string(),
        }),
    )
        .into_response())
}

/// End this session (sign out).
///
/// Ends the session the request was made with: its secret stops working at once. A
/// request made with a token rather than a session is refused (revoke a token with
/// `DELETE /api/v1/tokens/{name}`).
#[utoipa::path(delete, path = "/api/v1/sessions/current", tag = "sessions",
    responses(
        (status = 204, description = "Ended"),
        (status = 409, description = "The request was made with a token, not a session; or authentication is off", body = ErrorBody),
    ))]
async fn end_session(
    Extension(principal): Extension<Principal>,
    Extension(tokens): Extension<Option<Tokens>>,
) -> Result<StatusCode, ApiError> {
    let tokens = session_registry(tokens)?;
    let Some(session) = &principal.session else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_a_session",
            format!(
                "this request was made with the token {:?} itself, not with a session: \
                 there is nothing to sign out of (to stop the token working, revoke it: \
                 DELETE /api/v1/tokens/{{name}})",
                principal.name
            ),
        ));
    };
    // Ended meanwhile by another request of the same session: ended all the same.
    tokens.end_session(session);
    tracing::info!(token = %principal.name, "session ended (signed out)");
    Ok(StatusCode::NO_CONTENT)
}

/// The tokens, for sessions (`None` when authentication is off: a session would be
/// a token that nothing checks).
fn session_registry(tokens: Option<Tokens>) -> Result<Tokens, ApiError> {
    tokens.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "auth_disabled",
            "authentication is off (--no-auth): every request is accepted without signing in",
        )
    })
}

// ---------------------------------------------------------------------------------------
// System
// ---------------------------------------------------------------------------------------

/// Whether the controller answers.
///
/// With its store revision. No token needed.
#[utoipa::path(get, path = "/healthz", tag = "system", security(()),
    responses((status = 200, description = "The controller works", body = Health)))]
async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let (revision, _) = state.store(|s| s.revisions()).await?;
    Ok(Json(Health {
        status: "ok".to_owned(),
        revision,
    }))
}

/// This document (OpenAPI 3.1).
///
/// No token needed.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "system", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
async fn openapi_json(
    Extension(openapi): Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json((*openapi).clone())
}

/// The OpenAPI document of the API, as served at `/api/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    split().1
}

/// The router and its document, completed with what applies to every route.
fn split() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = routes().split_for_parts();
    // Modifiers of the derived document run before the routes are added: this one
    // needs them.
    AuthResponses.modify(&mut openapi);
    (router, openapi)
}
