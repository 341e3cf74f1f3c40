//! Bearer-token authentication and role-based authorization.
//!
//! The store keeps only the SHA-256 of each token, so a copy of the store does not grant
//! access. On the first start the controller creates the `admin` token, writes it to
//! `<state_dir>/admin-token` (mode 0600) and then stores its hash: if it crashes in
//! between, the next start finds no token in the store and creates a new one, so the file
//! always holds a token that works. Other tokens are created through the API
//! (`POST /api/v1/tokens`, admin only), each with a [`Role`].
//!
//! Every route declares the [`Access`] it needs in one table (`api::ROUTE_ACCESS`);
//! [`authorize`] runs after routing, finds the matched route in it and refuses a route
//! that is not declared, so a new route cannot be reachable without a decision about who
//! may call it. A missing or wrong token is answered 401 with `WWW-Authenticate: Bearer`,
//! a token whose role does not allow the route 403, before anything else happens (the
//! body is not even read).
//!
//! The console signs in with a token and gets a [`Sessions`] entry in exchange
//! (`POST /api/v1/sessions`): a bearer token of its own, kept in memory only, that ends at
//! sign-out (`DELETE /api/v1/sessions/current`), after [`SESSION_LIFETIME`], when the
//! token it came from is revoked, or when the controller restarts. So signing out of a
//! browser ends what that browser holds without revoking the operator's token.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::store::{Store, StoreError, TokenRecord};
use crate::types::Role;

/// The file, in the state directory, holding the admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Who made a request: the name of its token (`admin`), or `anonymous` when
/// authentication is off. Handlers record it in events.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// Who made a request and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name (the [`Actor`]).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// For an engine token, the engine it acts for.
    pub engine: Option<String>,
    /// When the request came with a session rather than the token itself: the session's
    /// hash (what sign-out ends).
    pub session: Option<String>,
}

impl Principal {
    /// Without authentication every request may do everything.
    fn anonymous() -> Self {
        Self {
            name: "anonymous".to_owned(),
            role: Role::Admin,
            engine: None,
            session: None,
        }
    }

    /// Refuses (403) an engine token acting for an engine other than its own; any other
    /// role that reached an engine route may act for any engine.
    pub fn check_engine(&self, engine: &str) -> Result<(), ApiError> {
        if self.role != Role::Engine || self.engine.as_deref() == Some(engine) {
            return Ok(());
        }
        Err(forbidden(format!(
            "token {:?} is the token of engine {:?}; it cannot act for engine {engine:?}",
            self.name,
            self.engine.as_deref().unwrap_or_default()
        )))
    }
}

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token (health check, the OpenAPI document).
    Public,
    /// Reading: every role but `engine`.
    Read,
    /// Changing configuration objects or engines: `admin` and `operator`.
    Write,
    /// Token management: `admin` only.
    Admin,
    /// What a service engine reads (the desired configuration): readers, and an engine
    /// token for its own name, given as the query parameter `engine`.
    EngineRead,
    /// What a service engine does (register, report): `admin`, `operator`, and an engine
    /// token for its own name, found where [`EngineName`] says.
    EngineWrite(EngineName),
}

/// Where a request to an engine route names its engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineName {
    /// The path's `{name}`: checked by [`authorize`].
    Path,
    /// The JSON body's `name`: the handler checks it with [`Principal::check_engine`]
    /// once the body is parsed.
    Body,
}

impl Access {
    /// Whether `role` may use a route of this access (engine names aside).
    pub fn allows(self, role: Role) -> bool {
        use Role::*;
        match self {
            Access::Public => true,
            Access::Read => matches!(role, Admin | Operator | ReadOnly),
            Access::Write => matches!(role, Admin | Operator),
            Access::Admin => role == Admin,
            Access::EngineRead => true,
            Access::EngineWrite(_) => matches!(role, Admin | Operator | Engine),
        }
    }
}

/// One route of the API and the access it needs.
#[derive(Debug, Clone, Copy)]
pub struct RouteAccess {
    /// The method (`GET`, `POST`, ...).
    pub method: &'static str,
    /// The route's path as the router declares it (`/api/v1/pools/{name}`).
    pub path: &'static str,
    /// What it needs.
    pub access: Access,
}

/// The accepted tokens, by hash, and the sessions made from them; shared with the token
/// routes, which reload it after each change.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: Arc<RwLock<HashMap<String, TokenRecord>>>,
    sessions: Sessions,
}

impl Tokens {
    /// Loads the tokens from the store.
    pub fn load(store: &Store) -> Result<Self, StoreError> {
        let tokens = Self::default();
        tokens.reload(store)?;
        Ok(tokens)
    }

    /// Reads the tokens from the store again (after a token was created or revoked). The
    /// sessions of a token that is gone end with it.
    pub fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let by_hash: HashMap<String, TokenRecord> = store.tokens()?.into_iter().collect();
        self.sessions.retain_tokens(&by_hash);
        *self
            .by_hash
            .write()
            .expect("the token map is never poisoned") = by_hash;
        Ok(())
    }

    /// Whether no token exists.
    pub fn is_empty(&self) -> bool {
        self.by_hash.read().expect("not poisoned").is_empty()
    }

    /// Who `token` is, if it is one of ours or a live session of one of ours. The lookup
    /// is by the token's SHA-256: its timing can reveal something of a hash, which reveals
    /// nothing of a token.
    pub fn principal_of(&self, token: &str) -> Option<Principal> {
        let presented = hash(token);
        let map = self.by_hash.read().expect("not poisoned");
        let (record, session) = match map.get(&presented) {
            Some(record) => (record, None),
            None => {
                let parent = self.sessions.token_of(&presented)?;
                (map.get(&parent)?, Some(presented))
            }
        };
        Some(Principal {
            name: record.name.clone(),
            role: record.role(),
            engine: record.engine.clone(),
            session,
        })
    }

    /// The name of `token`, if it is one of ours.
    pub fn name_of(&self, token: &str) -> Option<String> {
        self.principal_of(token).map(|p| p.name)
    }

    /// Starts a session for `presented`, a token or a live session (then the new one
    /// belongs to the same token): the new secret and when it ends, or `None` if
    /// `presented` is neither.
    pub fn start_session(
        &self,
        presented: &str,
    ) -> Result<Option<(String, SystemTime)>, getrandom::Error> {
        let presented = hash(presented);
        let parent = {
            let map = self.by_hash.read().expect("not poisoned");
            if map.contains_key(&presented) {
                presented
            } else {
                match self.sessions.token_of(&presented) {
                    Some(parent) if map.contains_key(&parent) => parent,
                    _ => return Ok(None),
                }
            }
        };
        self.sessions.start(parent).map(Some)
    }

    /// Ends the session whose hash is `session`; whether it was live.
    pub fn end_session(&self, session: &str) -> bool {
        self.sessions.end(session)
    }

    /// How many sessions are live.
    pub fn session_count(&self) -> usize {
        self.sessions.count()
    }
}

/// How long a console session lasts at most.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Sessions one token may hold at once: signing in again past this ends its oldest
/// session, so no holder of a token can grow the controller's memory without bound.
pub const SESSIONS_PER_TOKEN: usize = 32;

/// Live sessions by the SHA-256 of their secret, in memory only.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    by_hash: Arc<RwLock<HashMap<String, Session>>>,
}

#[derive(Debug, Clone)]
struct Session {
    /// The hash of the token it was made from.
    token: String,
    started: Instant,
}

impl Session {
    fn live(&self, now: Instant) -> bool {
        now.duration_since(self.started) < SESSION_LIFETIME
    }
}

impl Sessions {
    /// A new session for the token whose hash is `token`: its secret (`rcs_` and 64 hex
    /// digits) and when it ends.
    fn start(&self, token: String) -> Result<(String, SystemTime), getrandom::Error> {
        let secret = generate()?.replacen("rct_", "rcs_", 1);
        let now = Instant::now();
        let mut map = self.by_hash.write().expect("not poisoned");
        map.retain(|_, s| s.live(now));
        let mut own: Vec<(Instant, String)> = map
            .iter()
            .filter(|(_, s)| s.token == token)
            .map(|(h, s)| (s.started, h.clone()))
            .collect();
        if own.len() >= SESSIONS_PER_TOKEN {
            own.sort();
            for (_, h) in &own[..=own.len() - SESSIONS_PER_TOKEN] {
                map.remove(h);
            }
        }
        map.insert(
            hash(&secret),
            Session {
                token,
                started: now,
            },
        );
        Ok((secret, SystemTime::now() + SESSION_LIFETIME))
    }

    /// The hash of the token a live session was made from.
    fn token_of(&self, session: &str) -> Option<String> {
        let map = self.by_hash.read().expect("not poisoned");
        map.get(session)
            .filter(|s| s.live(Instant::now()))
            .map(|s| s.token.clone())
    }

    fn end(&self, session: &str) -> bool {
        let mut map = self.by_hash.write().expect("not poisoned");
        map.remove(session).is_some_and(|s| s.live(Instant::now()))
    }

    /// Drops the sessions of tokens not in `tokens` (revoked).
    fn retain_tokens(&self, tokens: &HashMap<String, TokenRecord>) {
        let mut map = self.by_hash.write().expect("not poisoned");
        map.retain(|_, s| tokens.contains_key(&s.token));
    }

    fn count(&self) -> usize {
        let now = Instant::now();
        let map = self.by_hash.read().expect("not poisoned");
        map.values().filter(|s| s.live(now)).count()
    }
}

/// Hex SHA-256 of a token.
pub fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random token: `rct_` and 64 hex digits (256 bits from the OS).
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("rct_{hex}"))
}

/// What [`ensure_admin_token`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminToken {
    /// A token was created and written to this file.
    Created(PathBuf),
    /// A token existed already; the file is where it was written.
    Existing(PathBuf),
}

/// Creates the admin token if the store has none (or if `replace`), writing it to
/// `<state_dir>/admin-token` before storing its hash.
pub fn ensure_admin_token(
    store: &Store,
    state_dir: &Path,
    replace: bool,
) -> Result<AdminToken, AuthSetupError> {
    let file = state_dir.join(ADMIN_TOKEN_FILE);
    let has_admin = store.tokens()?.iter().any(|(_, r)| r.name == "admin");
    if has_admin && !replace {
        return Ok(AdminToken::Existing(file));
    }
    let token = generate().map_err(|e| AuthSetupError::Random(e.to_string()))?;
    write_secret(&file, &token).map_err(|source| AuthSetupError::Write {
        path: file.clone(),
        source,
    })?;
    store.replace_token("admin", &hash(&token))?;
    Ok(AdminToken::Created(file))
}

/// Writes `secret` to `path` with mode 0600, atomically (temporary file, fsync, rename,
/// fsync of the directory), so that a crash leaves either the old file or the new one.
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    // The mode given to open is masked by the umask; make sure it is 0600 exactly.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Why the admin token could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The OS gave no randomness.
    #[error("no randomness for a token: {0}")]
    Random(String),
    /// The token file could not be written.
    #[error("cannot write the admin token to {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// What the authorization middleware needs: the tokens (`None`: authentication is off)
/// and the access of every route.
#[derive(Clone)]
pub struct AuthState {
    /// The tokens, or `None` when authentication is off.
    pub tokens: Option<Tokens>,
    /// Every route's access.
    pub routes: &'static [RouteAccess],
}

/// The access `routes` declares for `method` on the route `path`; `HEAD` is `GET`'s.
pub fn access_of(routes: &[RouteAccess], method: &Method, path: &str) -> Option<Access> {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    routes
        .iter()
        .find(|r| r.method == method && r.path == path)
        .map(|r| r.access)
}

/// The middleware, run after routing: finds the route's [`Access`], authenticates the
/// bearer token unless the route is public, checks the token's role and, for an engine
/// token, the engine name of the request; then attaches the [`Actor`] and the
/// [`Principal`] to the request.
pub async fn authorize(
    State(auth): State<AuthState>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let Some(access) = access_of(auth.routes, request.method(), &route) else {
        if auth.routes.iter().any(|r| r.path == route) {
            // A method the route does not serve: the router answers 405, to a valid token
            // only.
            if let Some(tokens) = &auth.tokens {
                if let Err(e) = authenticate(tokens, &request) {
                    return e.into_response();
                }
            }
            return next.run(request).await;
        }
        // Deny by default: a route nobody declared an access for is a bug, found by the
        // role-matrix test, never an open door.
        return ApiError::internal(
            "authorization",
            &format!("{} {route} has no declared access", request.method()),
        )
        .into_response();
    };
    if access == Access::Public {
        return next.run(request).await;
    }
    let principal = match &auth.tokens {
        None => Principal::anonymous(),
        Some(tokens) => match authenticate(tokens, &request) {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        },
    };
    if !access.allows(principal.role) {
        let what = match access {
            Access::Admin => "only an admin token may manage tokens",
            Access::Write | Access::EngineWrite(_) => {
                "this request changes the configuration or the engines"
            }
            _ => "this request is not one an engine makes",
        };
        return forbidden(format!(
            "token {:?} has role {}: {what} ({} {route})",
            principal.name,
            principal.role,
            request.method()
        ))
        .into_response();
    }
    if principal.role == Role::Engine {
        let engine = match access {
            Access::EngineRead => {
                query_param(request.uri().query().unwrap_or_default(), "engine").ok_or("engine")
            }
            Access::EngineWrite(EngineName::Path) => {
                path_param(&mut request, "name").await.ok_or("name")
            }
            // The handler checks the body once it is parsed.
            _ => Ok(String::new()),
        };
        let checked = match engine {
            Ok(name) if name.is_empty() => Ok(()),
            Ok(name) => principal.check_engine(&name),
            Err(param) => Err(forbidden(format!(
                "token {:?} is the token of engine {:?}: name it in the request ({param}={})",
                principal.name,
                principal.engine.as_deref().unwrap_or_default(),
                principal.engine.as_deref().unwrap_or_default()
            ))),
        };
        if let Err(e) = checked {
            return e.into_response();
        }
    }
    request
        .extensions_mut()
        .insert(Actor(principal.name.clone()));
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// The principal of the request's bearer token, or the 401 to answer.
pub fn authenticate(tokens: &Tokens, request: &Request) -> Result<Principal, ApiError> {
    let token = bearer(request)?;
    tokens
        .principal_of(token)
        .ok_or_else(|| ApiError::unauthorized("the token is not valid", true))
}

/// The bearer token of `request`, or the 401 to answer.
pub fn bearer(request: &Request) -> Result<&str, ApiError> {
    bearer_of(request.headers())
}

/// The bearer token in `headers`, or the 401 to answer.
pub fn bearer_of(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default());
    let Some(presented) = presented else {
        return Err(ApiError::unauthorized(
            "this request needs a token: send the header \"Authorization: Bearer <token>\" \
             (the admin token is in the controller's state directory, file admin-token)",
            false,
        ));
    };
    let token = presented
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    token.ok_or_else(|| {
        ApiError::unauthorized("the Authorization header must be \"Bearer <token>\"", false)
    })
}

/// The percent-decoded value of the query parameter `key` (the other parameters are the
/// handler's to check).
fn query_param(query: &str, key: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// The percent-decoded path parameter `key` of the matched route.
async fn path_param(request: &mut Request, key: &str) -> Option<String> {
    use axum::extract::FromRequestParts as _;
    let (mut parts, body) = std::mem::take(request).into_parts();
    let params = RawPathParams::from_request_parts(&mut parts, &()).await;
    let value = params.ok().and_then(|params| {
        params
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_owned())
    });
    *request = Request::from_parts(parts, body);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_are_sha256() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("rct_") && a.len() == 68, "{a}");
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_admin_token_file_is_private_and_matches_the_stored_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(crate::store::STORE_FILE)).unwrap();
        let AdminToken::Created(file) = ensure_admin_token(&store, dir.path(), false).unwrap()
        else {
            panic!("first start creates a token")
        };
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let token = std::fs::read_to_string(&file).unwrap();
        let tokens = Tokens::load(&store).unwrap();
        assert_eq!(tokens.name_of(token.trim()).as_deref(), Some("admin"));
        assert_eq!(tokens.name_of("rct_wrong"), None);
        // A second start keeps it; a replacement revokes it.
        assert_eq!(
            ensure_admin_token(&store, dir.path(), false).unwrap(),
            AdminToken::Existing(file.clone())
        );
        ensure_admin_token(&store, dir.path(), true).unwrap();
        let tokens = Tokens::load(&store).unwrap();
        assert_eq!(
            tokens.name_of(token.trim()),
            None,
            "the old token is revoked"
        );
        let new = std::fs::read_to_string(&file).unwrap();
        assert_eq!(tokens.name_of(new.trim()).as_deref(), Some("admin"));
    }
}
