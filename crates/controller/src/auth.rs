//! Bearer-token authentication.
//!
//! The store keeps only the SHA-256 of each token, so a copy of the store does not grant
//! access. On the first start the controller creates the `admin` token, writes it to
//! `<state_dir>/admin-token` (mode 0600) and then stores its hash: if it crashes in
//! between, the next start finds no token in the store and creates a new one, so the file
//! always holds a token that works.
//!
//! Every request needs `Authorization: Bearer <token>` except `GET /healthz` and the
//! OpenAPI document. A missing or wrong token is answered 401 with
//! `WWW-Authenticate: Bearer` before anything else happens (the body is not even read).

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::store::{Store, StoreError};

/// The file, in the state directory, holding the admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Paths served without a token.
pub const PUBLIC_PATHS: [&str; 2] = ["/healthz", "/api/v1/openapi.json"];

/// Who made a request: the name of its token (`admin`), or `anonymous` when
/// authentication is off. Handlers record it in events.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// The accepted tokens, by hash.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: Arc<HashMap<String, String>>,
}

impl Tokens {
    /// Loads the tokens from the store.
    pub fn load(store: &Store) -> Result<Self, StoreError> {
        let by_hash = store
            .tokens()?
            .into_iter()
            .map(|(hash, record)| (hash, record.name))
            .collect();
        Ok(Self {
            by_hash: Arc::new(by_hash),
        })
    }

    /// Whether no token exists.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The name of `token`, if it is one of ours. Lookup by hash: comparing hashes leaks
    /// nothing useful about the token through timing.
    pub fn name_of(&self, token: &str) -> Option<&str> {
        self.by_hash.get(&hash(token)).map(String::as_str)
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

/// The middleware: lets public paths through, requires a known bearer token for the rest,
/// and attaches the [`Actor`] to the request. `None` means authentication is off.
pub async fn require_token(
    State(tokens): State<Option<Tokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(tokens) = tokens else {
        request
            .extensions_mut()
            .insert(Actor("anonymous".to_owned()));
        return next.run(request).await;
    };
    if PUBLIC_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default());
    let Some(presented) = presented else {
        return ApiError::unauthorized(
            "this request needs a token: send the header \"Authorization: Bearer <token>\" \
             (the admin token is in the controller's state directory, file admin-token)",
            false,
        )
        .into_response();
    };
    let token = presented
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token else {
        return ApiError::unauthorized(
            "the Authorization header must be \"Bearer <token>\"",
            false,
        )
        .into_response();
    };
    match tokens.name_of(token) {
        Some(name) => {
            let actor = Actor(name.to_owned());
            request.extensions_mut().insert(actor);
            next.run(request).await
        }
        None => ApiError::unauthorized("the token is not valid", true).into_response(),
    }
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
        assert_eq!(tokens.name_of(token.trim()), Some("admin"));
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
        assert_eq!(tokens.name_of(new.trim()), Some("admin"));
    }
}
