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
    ApplicationProfile, Config, HealthMonitor, NetworkProfile, Pool, VirtualService,
    SYSTEM_L4_APPLICATION,
};
use serde::Deserialize;
use tokio::sync::watch;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Actor, Tokens};
use crate::engines::Engines;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::kind::{referrers, ConfigObject, Kind};
use crate::store::{Store, StoreError};
use crate::types::{
    is_valid_engine_name, ApplyResult, Configuration, Deleted, Desired, EngineRegistration,
    EngineReport, EventList, Health, ObjectList, ServiceEngine, ServiceEngineList, Versioned,
    ENGINE_NAME_RULE,
};

/// Longest desired-state poll; longer waits are shortened to this.
pub const MAX_WAIT_SECS: u64 = 300;
/// Desired-state poll wait when `wait` is not given.
pub const DEFAULT_WAIT_SECS: u64 = 30;
/// Largest request body (a whole configuration).
const BODY_LIMIT: usize = 16 << 20;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<Store>,
    /// The configuration revision, published after each commit that changes it; desired-
    /// state polls wait on it.
    pub config_revision: Arc<watch::Sender<u64>>,
    /// Live engines.
    pub engines: Arc<Engines>,
    /// Becomes true when the controller stops: waiting polls return at once.
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// Runs `f` on the store off the async threads (redb blocks, and commits fsync).
    async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ApiError::internal("a store task failed", &e))?
            .map_err(ApiError::from)
    }

    /// Wakes desired-state polls; never moves the published revision backwards (two
    /// commits may finish in either order).
    fn publish(&self, config_revision: u64) {
        self.config_revision.send_if_modified(|current| {
            let newer = config_revision > *current;
            if newer {
                *current = config_revision;
            }
            newer
        });
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
application profiles, health monitors, pools, virtual services), the service engines that \
run it, and the events of both. Every request needs `Authorization: Bearer <token>` except \
`/healthz` and this document; the admin token is created on the controller's first start in \
`<state_dir>/admin-token`.\n\nErrors are `{\"error\", \"message\", \"details\": [{\"path\", \
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
        (name = "virtual-services", description = "Avi VirtualService with its VIP"),
        (name = "configuration", description = "The whole configuration: export and declarative apply"),
        (name = "service-engines", description = "Engines: registration, reports, desired state"),
        (name = "events", description = "State changes with time, reason and revision"),
        (name = "status", description = "Virtual services up, degraded or down from their servers' health"),
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
        .routes(routes!(healthz))
        .routes(routes!(openapi_json))
}

/// The API: routes, the document, JSON errors for unknown routes and wrong methods, and
/// authentication (`tokens`; `None` turns it off).
pub fn router(state: AppState, tokens: Option<Tokens>) -> Router {
    let (router, openapi) = routes().split_for_parts();
    let router = router
        .layer(Extension(Arc::new(openapi)))
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(tokens, auth::require_token));
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
/// current revision, RFC 9110).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    if v.as_bytes().trim_ascii() == b"*" {
        return Ok(None);
    }
    let text = v.to_str().unwrap_or_default().trim();
    let parsed = text
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse::<u64>();
    parsed.map(Some).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_header",
            format!("If-Match must be a revision such as \"12\", not {text:?}"),
        )
    })
}

async fn create_object<T: ConfigObject>(
    state: AppState,
    actor: Actor,
    object: T,
) -> Result<Response, ApiError> {
    let kind = T::KIND;
    let name = object.name().to_owned();
    let reason = cause(&actor, "POST", &collection(kind));
    let stored = object.clone();
    let applied = state
        .store(move |s| {
            s.change_config(
                |config| {
                    if T::list(config).iter().any(|o| o.name() == stored.name()) {
                        return Err(ApiError::new(
                            StatusCode::CONFLICT,
                            "already_exists",
                            format!(
                                "{kind} {:?} already exists; replace it with PUT {}/{}",
                                stored.name(),
                                collection(kind),
                                stored.name()
                            ),
                        )
                        .with_detail(
                            format!("{}.name", kind.path_of(stored.name())),
                            format!("a {kind} with this name exists"),
                        ));
                    }
                    T::list_mut(config).push(stored);
                    Ok(())
                },
                &reason,
                None,
                false,
            )
        })
        .await?;
    state.publish(applied.config_revision);
    let location = format!("{}/{}", collection(kind), name);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(Versioned {
            revision: applied.config_revision,
            object,
        }),
    )
        .into_response())
}

async fn replace_object<T: ConfigObject>(
    state: AppState,
    actor: Actor,
    name: String,
    expect: Option<u64>,
    object: T,
) -> Result<Response, ApiError> {
    let kind = T::KIND;
    if object.name() != name {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
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
    let replacement = object.clone();
    let (applied, answer) = {
        let name = name.clone();
        state
            .store(move |s| {
                let applied = s.change_config_if(
                    |config| {
                        let list = T::list_mut(config);
                        let Some(slot) = list.iter_mut().find(|o| o.name() == name) else {
                            return Err(ApiError::object_not_found(kind, &name));
                        };
                        *slot = replacement;
                        Ok(())
                    },
                    &reason,
                    None,
                    expect.map(|r| (kind, name.as_str(), r)),
                    false,
                )?;
                let answer = if applied.committed {
                    Some(Versioned {
                        revision: applied.config_revision,
                        object,
                    })
                } else {
                    // Unchanged: the stored object with the revision of its last change.
                    s.get::<T>(&name)?
                };
                Ok((applied, answer))
            })
            .await?
    };
    if applied.committed {
        state.publish(applied.config_revision);
    }
    // Absent only if deleted between the two reads of an unchanged replace.
    answer
        .map(versioned_response)
        .ok_or_else(|| ApiError::object_not_found(kind, &name))
}

async fn delete_object<T: ConfigObject>(
    state: AppState,
    actor: Actor,
    name: String,
) -> Result<Json<Deleted>, ApiError> {
    let kind = T::KIND;
    let reason = cause(&actor, "DELETE", &format!("{}/{name}", collection(kind)));
    let applied = {
        let name = name.clone();
        state
            .store(move |s| {
                s.change_config(
                    |config| {
                        if kind == Kind::ApplicationProfile && name == SYSTEM_L4_APPLICATION {
                            return Err(ApiError::new(
                                StatusCode::CONFLICT,
                                "built_in",
                                format!(
                                    "{SYSTEM_L4_APPLICATION} is built in and cannot be deleted"
                                ),
                            )
                            .with_detail(kind.path_of(&name), "built in"));
                        }
                        if !T::list(config).iter().any(|o| o.name() == name) {
                            return Err(ApiError::object_not_found(kind, &name));
                        }
                        let users = referrers(config, kind, &name);
                        if !users.is_empty() {
                            let who: Vec<String> =
                                users.iter().map(|(_, k, n)| format!("{k} {n:?}")).collect();
                            let mut e = ApiError::new(
                                StatusCode::CONFLICT,
                                "in_use",
                                format!(
                                    "{kind} {name:?} is in use by {}; change or delete {} first",
                                    who.join(", "),
                                    if users.len() == 1 { "it" } else { "them" }
                                ),
                            );
                            for (path, _, _) in users {
                                e = e.with_detail(path, format!("refers to {kind} {name:?}"));
                            }
                            return Err(e);
                        }
                        T::list_mut(config).retain(|o| o.name() != name);
                        Ok(())
                    },
                    &reason,
                    None,
                    false,
                )
            })
            .await?
    };
    state.publish(applied.config_revision);
    Ok(Json(Deleted {
        revision: applied.config_revision,
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
                    ("If-Match" = Option<String>, Header, description = "The object's revision this edit was prepared against (its `ETag`); `*` for any")),
                request_body(content = $ty, content_type = "application/json"),
                responses(
                    (status = 200, description = "Replaced (or unchanged: same revision)", body = Versioned<$ty>,
                     headers(("ETag" = String, description = "The object's revision, quoted"))),
                    (status = 400, description = "Malformed body, or its name differs from the URL's", body = ErrorBody),
                    (status = 401, description = "No valid token", body = ErrorBody),
                    (status = 404, description = "No such object", body = ErrorBody),
                    (status = 412, description = "The object changed since the `If-Match` revision", body = ErrorBody),
                    (status = 415, description = "Not JSON", body = ErrorBody),
                    (status = 422, description = "The resulting configuration does not validate", body = ErrorBody),
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
        ("If-Match" = Option<String>, Header, description = "The configuration revision this apply expects, quoted or not; `*` for any")),
    request_body(content = Config, content_type = "application/json"),
    responses(
        (status = 200, description = "Applied, previewed, or nothing to change", body = ApplyResult),
        (status = 400, description = "Malformed JSON, unknown field or wrong type (path within the body)", body = ErrorBody),
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
#[serde(deny_unknown_fields)]
struct EventParams {
    /// Only events of revisions above this one (default 0: all kept events).
    #[serde(default)]
    since: u64,
    /// At most this many, oldest first (default 1000).
    #[serde(default = "default_event_limit")]
    limit: usize,
}

fn default_event_limit() -> usize {
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
        .store(move |s| s.events(params.since, params.limit))
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
    ApiJson(registration): ApiJson<EngineRegistration>,
) -> Result<Response, ApiError> {
    check_engine_name(&registration.name)?;
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
    ))]
async fn engine_report(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(report): ApiJson<EngineReport>,
) -> Result<Json<ServiceEngine>, ApiError> {
    // Registered first: a report must not resurrect an unregistered engine.
    engine_view(&state, name.clone()).await?;
    let events = state.engines.report(&name, report);
    state.record(events).await;
    engine_view(&state, name).await.map(Json)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct DesiredParams {
    /// The configuration revision the engine runs: the answer comes as soon as the
    /// configuration revision is above it. Absent: answer at once.
    after: Option<u64>,
    /// Seconds to wait for a newer revision (default 30, at most 300); then 304.
    wait: Option<u64>,
    /// The polling engine's name: marks it connected while it waits.
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
        (status = 503, description = "The controller is stopping; poll again", body = ErrorBody),
    ))]
async fn desired(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<DesiredParams>,
) -> Result<Response, ApiError> {
    let _poll = match &params.engine {
        Some(name) => {
            engine_view(&state, name.clone()).await?;
            let (guard, event) = state.engines.poll(name);
            state.record(event.into_iter().collect()).await;
            Some(guard)
        }
        None => None,
    };
    let wait = Duration::from_secs(params.wait.unwrap_or(DEFAULT_WAIT_SECS).min(MAX_WAIT_SECS));
    let mut revisions = state.config_revision.subscribe();
    let mut shutdown = state.shutdown.clone();
    if let Some(after) = params.after {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let current = *revisions.borrow_and_update();
            if current > after {
                break;
            }
            if *shutdown.borrow() {
                return Err(stopping());
            }
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
    let snap = state.store(|s| s.snapshot()).await?;
    Ok((
        [(header::ETAG, etag(snap.config_revision))],
        Json(Desired {
            revision: snap.config_revision,
            config: snap.config,
        }),
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
    routes().split_for_parts().1
}
