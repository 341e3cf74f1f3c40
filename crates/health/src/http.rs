//! HTTP for the `http` monitor: the request sent, the status line parsed, the expected
//! status classes matched. Deliberately small: a health check reads one response from a
//! connection it closes, so HTTP/1.0 semantics (read until the server closes) suffice.

use ricochet_config::HttpResponseCode;

/// The bytes of the request for Avi's `http_request` (e.g. `GET /health HTTP/1.0`).
///
/// Avi lets the field carry headers after the request line
/// ([`ricochet_config::http_request_lines`] splits them, as validation does). A request
/// line without a version gets `HTTP/1.0`. Added when missing: `Host` (the address
/// checked, required by HTTP/1.1), `User-Agent` and `Connection: close` (so the server
/// ends the response by closing).
pub fn build_request(http_request: &str, host: &str) -> Vec<u8> {
    let lines = ricochet_config::http_request_lines(http_request);
    let mut lines = lines.iter().map(String::as_str);
    let first = lines.next().unwrap_or("GET /");
    let mut request = String::new();
    request.push_str(first);
    if first.split_whitespace().count() < 3 {
        request.push_str(" HTTP/1.0");
    }
    request.push_str("\r\n");
    let headers: Vec<&str> = lines.collect();
    let has = |name: &str| {
        headers.iter().any(|h| {
            h.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        })
    };
    let (need_host, need_agent, need_close) =
        (!has("host"), !has("user-agent"), !has("connection"));
    for header in &headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    if need_host {
        request.push_str(&format!("Host: {host}\r\n"));
    }
    if need_agent {
        request.push_str("User-Agent: ricochet-health\r\n");
    }
    if need_close {
        request.push_str("Connection: close\r\n");
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// A parsed status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The status code, e.g. 503.
    pub code: u16,
    /// The reason phrase, e.g. `Service Unavailable` (may be empty).
    pub reason: String,
}

/// Parses the status line at the start of `response`.
///
/// `Ok(None)`: not complete yet (no line end); `Err`: not an HTTP response, with a
/// sentence saying what was received.
pub fn parse_status(response: &[u8]) -> Result<Option<Status>, String> {
    let Some(end) = response.iter().position(|&b| b == b'\n') else {
        if response.len() >= 8 && !response.starts_with(b"HTTP/") {
            return Err(not_http(response));
        }
        return Ok(None);
    };
    // The status line alone, ended by an empty line, for httparse: the headers that
    // follow need not have arrived (a check only wants the status).
    let line = response[..end]
        .strip_suffix(b"\r")
        .unwrap_or(&response[..end]);
    let mut head = Vec::with_capacity(line.len() + 4);
    head.extend_from_slice(line);
    head.extend_from_slice(b"\r\n\r\n");
    let mut parsed = httparse::Response::new(&mut []);
    let malformed = || {
        format!(
            "malformed HTTP status line {:?}",
            String::from_utf8_lossy(line)
        )
    };
    match parsed.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(malformed()),
        Err(httparse::Error::Version) if !line.starts_with(b"HTTP/") => {
            return Err(not_http(response))
        }
        Err(_) => return Err(malformed()),
    }
    // httparse reads exactly three digits (RFC 9112 section 4); the classes stop at 5xx.
    match parsed.code {
        Some(code) if (100..=599).contains(&code) => Ok(Some(Status {
            code,
            reason: parsed.reason.unwrap_or_default().trim().to_owned(),
        })),
        _ => Err(malformed()),
    }
}

fn not_http(response: &[u8]) -> String {
    let shown: String = String::from_utf8_lossy(&response[..response.len().min(40)])
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    format!("not an HTTP response (starts with {shown:?})")
}

/// The body of a complete response (after the blank line), if the headers are complete.
/// Lines may end in bare LF (RFC 9112 section 2.2 lets a recipient accept them, and some
/// small servers send them).
pub fn body(response: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    while let Some(lf) = response[at..].iter().position(|&b| b == b'\n') {
        let next = at + lf + 1;
        match response.get(next..) {
            Some([b'\n', ..]) => return Some(&response[next + 1..]),
            Some([b'\r', b'\n', ..]) => return Some(&response[next + 2..]),
            _ => at = next,
        }
    }
    None
}

/// Whether `code` is in one of the expected classes.
pub fn code_matches(code: u16, expected: &[HttpResponseCode]) -> bool {
    expected.iter().any(|class| {
        let (lo, hi) = class_range(*class);
        (lo..=hi).contains(&code)
    })
}

fn class_range(class: HttpResponseCode) -> (u16, u16) {
    match class {
        HttpResponseCode::HttpAny => (100, 599),
        HttpResponseCode::Http1xx => (100, 199),
        HttpResponseCode::Http2xx => (200, 299),
        HttpResponseCode::Http3xx => (300, 399),
        HttpResponseCode::Http4xx => (400, 499),
        HttpResponseCode::Http5xx => (500, 599),
    }
}

/// The expected classes as ranges, e.g. `[200-299, 300-399]`.
pub fn describe_codes(expected: &[HttpResponseCode]) -> String {
    let ranges: Vec<String> = expected
        .iter()
        .map(|class| {
            let (lo, hi) = class_range(*class);
            format!("{lo}-{hi}")
        })
        .collect();
    format!("[{}]", ranges.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use HttpResponseCode::*;

    #[test]
    fn request_gets_version_host_agent_and_close() {
        let request = build_request("GET /health", "192.168.35.241");
        assert_eq!(
            String::from_utf8(request).unwrap(),
            "GET /health HTTP/1.0\r\nHost: 192.168.35.241\r\nUser-Agent: ricochet-health\r\n\
             Connection: close\r\n\r\n"
        );
    }

    #[test]
    fn request_keeps_configured_headers_written_either_way() {
        for typed in [
            "GET / HTTP/1.1\\r\\nHost: www.example.com\\r\\nConnection: keep-alive",
            "GET / HTTP/1.1\r\nHost: www.example.com\r\nConnection: keep-alive\r\n",
        ] {
            let request = String::from_utf8(build_request(typed, "10.0.0.1")).unwrap();
            assert_eq!(
                request,
                "GET / HTTP/1.1\r\nHost: www.example.com\r\nConnection: keep-alive\r\n\
                 User-Agent: ricochet-health\r\n\r\n",
                "for {typed:?}"
            );
        }
    }

    #[test]
    fn status_lines_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_status(b"HTTP/1.1 503 Service Unavailable\r\nServer: x\r\n").unwrap(),
            Some(Status {
                code: 503,
                reason: "Service Unavailable".into()
            })
        );
        assert_eq!(
            parse_status(b"HTTP/1.0 200\r\n").unwrap(),
            Some(Status {
                code: 200,
                reason: String::new()
            })
        );
        assert_eq!(parse_status(b"HTTP/1.1 2").unwrap(), None, "incomplete");
        assert_eq!(parse_status(b"").unwrap(), None);
        assert_eq!(
            parse_status(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap_err(),
            "not an HTTP response (starts with \"SSH-2.0-OpenSSH_9.2..\")"
        );
        assert_eq!(
            parse_status(b"\x16\x03\x01\x02\x00\x01\x00\x01").unwrap_err(),
            "not an HTTP response (starts with \"........\")"
        );
        assert!(parse_status(b"HTTP/1.1 abc OK\r\n")
            .unwrap_err()
            .contains("malformed HTTP status line"));
        assert!(parse_status(b"HTTP/1.1 700 Odd\r\n").is_err());
        assert!(parse_status(b"HTTP/1.1 0200 OK\r\n").is_err());
        assert!(parse_status(b"HTTP/1.1 +200 OK\r\n").is_err());
        assert!(parse_status(b"HTTP/2 200\r\n")
            .unwrap_err()
            .contains("malformed HTTP status line"));
        // A bare LF ends the line too; the headers need not be there yet.
        assert_eq!(
            parse_status(b"HTTP/1.1 404 Not Found\nContent-Len").unwrap(),
            Some(Status {
                code: 404,
                reason: "Not Found".into()
            })
        );
    }

    #[test]
    fn body_starts_after_the_blank_line() {
        assert_eq!(
            body(b"HTTP/1.0 200 OK\r\nA: b\r\n\r\nweb01\n"),
            Some(&b"web01\n"[..])
        );
        assert_eq!(body(b"HTTP/1.0 200 OK\r\nA: b\r\n"), None);
        assert_eq!(
            body(b"HTTP/1.0 200 OK\nA: b\n\nweb01\n"),
            Some(&b"web01\n"[..])
        );
        assert_eq!(body(b"HTTP/1.0 200 OK\n\r\n"), Some(&b""[..]));
        assert_eq!(body(b"HTTP/1.0 200 OK\r\nA: b\r\n\r"), None, "incomplete");
    }

    #[test]
    fn codes_match_their_classes_only() {
        let default = [Http2xx, Http3xx];
        assert!(code_matches(200, &default));
        assert!(code_matches(204, &default));
        assert!(code_matches(399, &default));
        assert!(!code_matches(199, &default));
        assert!(!code_matches(404, &default));
        assert!(!code_matches(503, &default));
        assert!(code_matches(503, &[Http5xx]));
        assert!(code_matches(101, &[Http1xx]));
        assert!(code_matches(418, &[HttpAny]));
        assert!(!code_matches(200, &[Http4xx]));
        assert_eq!(describe_codes(&default), "[200-299, 300-399]");
        assert_eq!(describe_codes(&[HttpAny]), "[100-599]");
    }
}
