//! Request extractors whose refusals are the API's JSON errors (axum's own answer in
//! plain text and without the field's path).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body: `Content-Type: application/json` required (else 415), parsed with the
/// path of the offending field in the error (400).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body, unparsed (for large bodies parsed off the async workers with
/// [`parse_json`]): the same 415 and size refusals as [`ApiJson`].
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !is_json(&content_type) {
            let got = if content_type.is_empty() {
                "no Content-Type".to_owned()
            } else {
                format!("Content-Type {content_type:?}")
            };
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "the request body must be JSON (Content-Type: application/json); got {got}"
                ),
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        Ok(JsonBytes(bytes))
    }
}

/// `application/json`, with parameters (`; charset=utf-8`) or as a `+json` suffix.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn body_rejection(e: BytesRejection) -> ApiError {
    let status = e.status();
    let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "payload_too_large"
    } else {
        "invalid_body"
    };
    ApiError::new(
        status,
        error,
        format!("the request body could not be read: {e}"),
    )
}

/// Parses a JSON document into `T`. Syntax errors are `malformed_json`; a document of the
/// wrong shape (unknown field, wrong type, missing field) is `invalid_body`. Both say
/// where, as a path within the body (`servers[0].ratio`) and a line and column.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(&mut de) {
        // Characters after the document are a syntax error too.
        Ok(value) => de.end().map(|()| value).map_err(|e| refuse(".", &e)),
        Err(e) => Err(refuse(&e.path().to_string(), e.inner())),
    }
}

fn refuse(path: &str, inner: &serde_json::Error) -> ApiError {
    let message = inner.to_string();
    // serde_path_to_error writes `?` for a segment it could not name (a syntax error in
    // the middle of an object): the path ends at the enclosing value instead.
    let path = path.strip_suffix(".?").unwrap_or(path);
    let path = match path {
        "." | "?" => "(body)",
        named => named,
    };
    let (error, what) = if inner.is_syntax() || inner.is_eof() {
        ("malformed_json", "the request body is not valid JSON")
    } else {
        ("invalid_body", "the request body does not fit the object")
    };
    ApiError::new(
        StatusCode::BAD_REQUEST,
        error,
        format!("{what}: {path}: {message}"),
    )
    .with_detail(path, message)
}

/// Query parameters, refused as `invalid_query` (400) with the parameter named.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("the query string is not valid: {}", e.body_text()),
                )
            })
    }
}

/// Path parameters, refused as `invalid_path` (400).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_path",
                    format!("the URL path is not valid: {}", e.body_text()),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ricochet_config::Pool;

    fn refusal(json: &str) -> (String, String, String) {
        let e = parse_json::<Pool>(json.as_bytes()).expect_err("refused");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let d = &e.body.details[0];
        (e.body.error.clone(), d.path.clone(), d.message.clone())
    }

    #[test]
    fn unknown_fields_are_named_in_the_path() {
        let (error, path, message) =
            refusal(r#"{"name": "p", "servers": [{"ip": "10.0.0.1", "wieght": 2}]}"#);
        assert_eq!(error, "invalid_body");
        assert_eq!(path, "servers[0].wieght");
        assert!(message.starts_with("unknown field `wieght`"), "{message}");
        let (_, path, _) = refusal(r#"{"name": "p", "colour": "red"}"#);
        assert_eq!(path, "colour");
    }

    #[test]
    fn wrong_types_and_syntax_have_paths() {
        let (error, path, message) =
            refusal(r#"{"name": "p", "servers": [{"ip": "10.0.0.1", "ratio": "two"}]}"#);
        assert_eq!(
            (error.as_str(), path.as_str()),
            ("invalid_body", "servers[0].ratio")
        );
        assert!(message.contains("invalid type"), "{message}");
        let (error, path, _) = refusal(r#"{"name": "p", "servers": [{"ip": "10.0.0.1",]}"#);
        assert_eq!(
            (error.as_str(), path.as_str()),
            ("malformed_json", "servers[0]")
        );
        let (error, path, _) = refusal("not json");
        assert_eq!(
            (error.as_str(), path.as_str()),
            ("malformed_json", "(body)")
        );
        let (error, _, _) = refusal(r#"{"name": "p"} trailing"#);
        assert_eq!(error, "malformed_json");
        let (error, path, message) = refusal(r#"{"servers": []}"#);
        assert_eq!((error.as_str(), path.as_str()), ("invalid_body", "(body)"));
        assert!(message.contains("missing field `name`"), "{message}");
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/yaml"));
        assert!(!is_json(""));
    }
}
