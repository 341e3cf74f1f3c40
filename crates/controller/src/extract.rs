//! Request extractors whose refusals are the API's JSON errors (axum's own answer in
//! plain text and without the field's path).

use std::borrow::Cow;

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
///
/// A number with a zero fractional part (`3.0`, `3e2`) is an integer, as JSON Schema's
/// `integer` says (and as clients whose numbers are all floats send them); any other
/// fraction (`3.5`) is still refused where an integer is expected.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = integral_numbers_as_integers(bytes);
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    match serde_path_to_error::deserialize(&mut de) {
        // Characters after the document are a syntax error too.
        Ok(value) => de.end().map(|()| value).map_err(|e| refuse(".", &e)),
        Err(e) => Err(refuse(&e.path().to_string(), e.inner())),
    }
}

/// `json` with every number outside strings whose value is an integer but which is written
/// with a fraction or an exponent (`3.0`, `-2.50e1`, `1e3`) rewritten as that integer
/// (`3`, `-25`, `1000`). serde_json parses such numbers as floats, which no integer field
/// accepts. The integer is decided from the digits, not from a float (so `1.0000000000000001`
/// stays a fraction), and padded with spaces to the number's length where it is shorter,
/// so that the line and column of a later error are unchanged. Numbers of more than 20
/// digits (beyond every integer type) and anything that is not a JSON number are left as
/// they are, for serde_json to judge. Borrowed when nothing needs rewriting.
fn integral_numbers_as_integers(json: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    // The end of the input already copied to `out`.
    let mut copied = 0;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < json.len()
                    && matches!(json[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                if let Some(integer) = integer_of(&json[start..i]) {
                    let out = out.get_or_insert_with(|| Vec::with_capacity(json.len()));
                    out.extend_from_slice(&json[copied..start]);
                    out.extend_from_slice(&integer);
                    let pad = (i - start).saturating_sub(integer.len());
                    out.extend(std::iter::repeat_n(b' ', pad));
                    copied = i;
                }
            }
            _ => i += 1,
        }
    }
    match out {
        Some(mut out) => {
            out.extend_from_slice(&json[copied..]);
            Cow::Owned(out)
        }
        None => Cow::Borrowed(json),
    }
}

/// The decimal digits of the integer `number` is, if it is a JSON number (RFC 8259) written
/// with a fraction or an exponent whose value is an integer of at most 20 digits.
fn integer_of(number: &[u8]) -> Option<Vec<u8>> {
    let digits = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
    let (negative, rest) = match number.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, number),
    };
    // `0`, or a digit 1-9 followed by digits.
    let int_len = digits(rest);
    if int_len == 0 || (int_len > 1 && rest[0] == b'0') {
        return None;
    }
    let (int, mut rest) = rest.split_at(int_len);
    let mut fraction: &[u8] = &[];
    if let Some((b'.', after)) = rest.split_first() {
        let len = digits(after);
        if len == 0 {
            return None;
        }
        (fraction, rest) = after.split_at(len);
    }
    let mut exponent: Option<i64> = None;
    if let Some((b'e' | b'E', after)) = rest.split_first() {
        let (negative, after) = match after.split_first() {
            Some((b'-', after)) => (true, after),
            Some((b'+', after)) => (false, after),
            _ => (false, after),
        };
        let len = digits(after);
        if len == 0 {
            return None;
        }
        // Saturating: such an exponent makes a number of more than 20 digits, or 0.
        let magnitude = after[..len].iter().fold(0i64, |e, d| {
            e.saturating_mul(10).saturating_add(i64::from(d - b'0'))
        });
        exponent = Some(if negative { -magnitude } else { magnitude });
        rest = &after[len..];
    }
    if !rest.is_empty() || (fraction.is_empty() && exponent.is_none()) {
        return None; // not a number, or written as an integer already
    }
    // The value is 0.d1d2d3... × 10^point, over the digits of both parts.
    let all: Vec<u8> = int.iter().chain(fraction).copied().collect();
    let point = i64::try_from(int.len())
        .ok()?
        .saturating_add(exponent.unwrap_or(0));
    let Some(first) = all.iter().position(|&d| d != b'0') else {
        return Some(b"0".to_vec()); // -0.0 is 0 as well
    };
    let last = all.iter().rposition(|&d| d != b'0').unwrap_or(first);
    let (first, last) = (i64::try_from(first).ok()?, i64::try_from(last).ok()?);
    if last >= point || point.saturating_sub(first) > 20 {
        return None; // a fraction, or larger than any integer type
    }
    let mut integer = Vec::with_capacity(21);
    if negative {
        integer.push(b'-');
    }
    // The digits before the point, and zeros where the exponent moves it past them.
    integer.extend((first..point).map(|at| {
        usize::try_from(at)
            .ok()
            .and_then(|at| all.get(at))
            .copied()
            .unwrap_or(b'0')
    }));
    Some(integer)
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
    fn integral_numbers_are_integers() {
        let integer = |n: &str| integer_of(n.as_bytes()).map(|i| String::from_utf8(i).unwrap());
        for (number, expected) in [
            ("3.0", "3"),
            ("3.000", "3"),
            ("65535.0", "65535"),
            ("-2.50e1", "-25"),
            ("1e3", "1000"),
            ("1E+2", "100"),
            ("250e-1", "25"),
            ("0.0", "0"),
            ("-0.0", "0"),
            ("0e999999999999999999999", "0"),
            ("1.8446744073709551615e19", "18446744073709551615"),
            ("9.9e19", "99000000000000000000"),
        ] {
            assert_eq!(integer(number).as_deref(), Some(expected), "{number}");
        }
        for number in [
            "3",
            "-3",
            "3.5",
            "1.0000000000000001",
            "25e-1",
            "1e20",
            "1e999999999999999999999",
            "1e-999999999999999999999",
            "01.0",
            "1.",
            ".5",
            "1e",
            "1e+",
            "1.0.0",
            "1-0",
            "-",
        ] {
            assert_eq!(integer(number), None, "{number}");
        }
    }

    #[test]
    fn integral_floats_fit_integer_fields_and_fractions_do_not() {
        let pool: Pool = parse_json(
            br#"{"name": "3.0", "table_size": 1.01e2,
                 "servers": [{"ip": "10.0.0.1", "ratio": 3.0, "port": 8.0e1}]}"#,
        )
        .unwrap();
        assert_eq!(pool.name, "3.0", "strings are left alone");
        assert_eq!(pool.table_size, Some(101));
        assert_eq!((pool.servers[0].ratio, pool.servers[0].port), (3, Some(80)));

        let (error, path, message) =
            refusal(r#"{"name": "p", "servers": [{"ip": "10.0.0.1", "ratio": 2.5}]}"#);
        assert_eq!(
            (error.as_str(), path.as_str()),
            ("invalid_body", "servers[0].ratio")
        );
        assert!(message.contains("floating point `2.5`"), "{message}");
        // Beyond the field's type, written either way: refused.
        let (_, path, _) =
            refusal(r#"{"name": "p", "servers": [{"ip": "10.0.0.1", "port": 65536.0}]}"#);
        assert_eq!(path, "servers[0].port");

        // A later error is placed where it is in the body as sent.
        let (_, _, message) = refusal("{\"name\": \"p\", \"table_size\": 101.000, \"colour\": 1}");
        assert!(message.ends_with("at line 1 column 45"), "{message}");
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
