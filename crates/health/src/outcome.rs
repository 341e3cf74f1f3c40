//! The result of one check: success, or a failure with a precise reason.

use std::fmt;
use std::io;
use std::time::Duration;

/// What kind of failure (Avi's `failure_code`s that Ricochet produces), for programs; the
/// [`Failure::message`] is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// TCP RST to the SYN (Avi `CONNECTION_REFUSED`).
    ConnectionRefused,
    /// No answer within the receive timeout (Avi `CONNECTION_TIMEOUT`/`NO_RESPONSE`).
    Timeout,
    /// ICMP port unreachable to a UDP request (Avi `PORT_UNREACHABLE`).
    PortUnreachable,
    /// No route or ICMP host/network unreachable (Avi `SERVER_UNREACHABLE`).
    Unreachable,
    /// The connection was reset or closed before an answer (Avi `CONNECTION_RESET`).
    ConnectionReset,
    /// An HTTP status outside the expected classes (Avi `RESPONSE_CODE_MISMATCH`).
    ResponseCodeMismatch,
    /// The answer lacks the expected text, or is not HTTP (Avi `PAYLOAD_CONTENT_MISMATCH`).
    PayloadMismatch,
    /// The server answers on its own address but not through the VIP path: the VIP is
    /// missing on its `lo` or it does not decapsulate (Ricochet's DSR-aware check).
    DsrPathBroken,
    /// Any other error (Avi `CONNECTION_ERROR`/`OTHER_ERROR`), including local ones.
    Other,
}

impl FailureKind {
    /// Avi's name of the failure code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionRefused => "CONNECTION_REFUSED",
            Self::Timeout => "CONNECTION_TIMEOUT",
            Self::PortUnreachable => "PORT_UNREACHABLE",
            Self::Unreachable => "SERVER_UNREACHABLE",
            Self::ConnectionReset => "CONNECTION_RESET",
            Self::ResponseCodeMismatch => "RESPONSE_CODE_MISMATCH",
            Self::PayloadMismatch => "PAYLOAD_CONTENT_MISMATCH",
            Self::DsrPathBroken => "DSR_PATH_BROKEN",
            Self::Other => "OTHER_ERROR",
        }
    }
}

/// A failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kind, for programs.
    pub kind: FailureKind,
    /// The reason, for people: `connection refused`, `timeout after 2 s`,
    /// `HTTP 503 not in [200-299, 300-399]`, ...
    pub message: String,
}

impl Failure {
    /// A failure of `kind` saying `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The failure "timeout after <timeout> (<waiting for>)".
    pub fn timeout(timeout: Duration, waiting_for: &str) -> Self {
        Self::new(
            FailureKind::Timeout,
            format!("timeout after {} ({waiting_for})", human_duration(timeout)),
        )
    }

    /// A failure from an I/O error while `doing` something (e.g. "connecting to
    /// 192.168.33.10:80").
    pub fn io(error: &io::Error, doing: &str) -> Self {
        let (kind, what) = match error.raw_os_error() {
            Some(libc::ECONNREFUSED) => (FailureKind::ConnectionRefused, "connection refused"),
            Some(libc::EHOSTUNREACH) => (FailureKind::Unreachable, "host unreachable"),
            Some(libc::ENETUNREACH) => (FailureKind::Unreachable, "network unreachable"),
            Some(libc::ECONNRESET) => (FailureKind::ConnectionReset, "connection reset"),
            Some(libc::EPIPE) => (FailureKind::ConnectionReset, "connection closed"),
            _ => (FailureKind::Other, ""),
        };
        if what.is_empty() {
            Self::new(kind, format!("{error} ({doing})"))
        } else {
            Self::new(kind, format!("{what} ({doing})"))
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// `2 s`, `1.5 s` or `250 ms`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_secs(2)), "2 s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250 ms");
    }

    #[test]
    fn io_errors_map_to_kinds_and_sentences() {
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let f = Failure::io(&refused, "connecting to 192.168.33.10:80");
        assert_eq!(f.kind, FailureKind::ConnectionRefused);
        assert_eq!(
            f.message,
            "connection refused (connecting to 192.168.33.10:80)"
        );
        let t = Failure::timeout(Duration::from_secs(2), "no answer to connect");
        assert_eq!(t.to_string(), "timeout after 2 s (no answer to connect)");
    }
}
