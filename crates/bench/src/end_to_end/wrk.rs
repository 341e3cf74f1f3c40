//! wrk's text report, parsed (wrk 4.1 as Debian ships it, run with `--latency`).

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

/// wrk's socket error counters (`Socket errors: connect 0, read 0, write 0, timeout 0`; wrk
/// prints the line only when one is not zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketErrors {
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    pub timeout: u64,
}

impl SocketErrors {
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }
}

/// What one wrk run reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WrkReport {
    /// Completed requests (`N requests in T, B read`).
    pub requests: u64,
    /// The run's duration as wrk measured it, in seconds: `requests / Requests/sec` when there
    /// were requests (exact), else the rounded `in T`.
    pub seconds: f64,
    /// Response bytes read (headers included), as wrk prints them (3 significant digits).
    pub bytes_read: f64,
    /// `Requests/sec`.
    pub requests_per_s: f64,
    /// `Transfer/sec`, in bytes per second.
    pub bytes_per_s: f64,
    /// Mean and maximum latency (`Thread Stats` line), in seconds.
    pub latency_mean_s: f64,
    pub latency_max_s: f64,
    /// The `Latency Distribution` lines: (percent, seconds), e.g. (99.0, 0.00183).
    pub latency_percentiles: Vec<(f64, f64)>,
    pub socket_errors: SocketErrors,
    /// `Non-2xx or 3xx responses` (0 when wrk does not print the line).
    pub non_2xx_3xx: u64,
}

impl WrkReport {
    /// The latency at `percent` (50, 75, 90 or 99), in seconds.
    pub fn latency(&self, percent: f64) -> Option<f64> {
        self.latency_percentiles
            .iter()
            .find(|(p, _)| (*p - percent).abs() < 1e-9)
            .map(|(_, s)| *s)
    }

    /// What makes the run's figures doubtful: no requests, socket errors, error responses.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.requests == 0 {
            problems.push("no request completed".to_owned());
        }
        let e = &self.socket_errors;
        if e.total() > 0 {
            problems.push(format!(
                "socket errors: connect {}, read {}, write {}, timeout {}",
                e.connect, e.read, e.write, e.timeout
            ));
        }
        if self.non_2xx_3xx > 0 {
            problems.push(format!(
                "{} responses were not 2xx or 3xx",
                self.non_2xx_3xx
            ));
        }
        problems
    }
}

/// Parses wrk's report; fails, quoting it, when a line it always prints is missing (e.g.
/// `unable to connect`).
pub fn parse(text: &str) -> anyhow::Result<WrkReport> {
    parse_inner(text).with_context(|| format!("parsing wrk's output:\n{}", text.trim_end()))
}

fn parse_inner(text: &str) -> anyhow::Result<WrkReport> {
    let mut requests = None;
    let mut in_seconds = None;
    let mut bytes_read = None;
    let mut requests_per_s = None;
    let mut bytes_per_s = None;
    let mut latency = None;
    let mut latency_percentiles = Vec::new();
    let mut socket_errors = SocketErrors::default();
    let mut non_2xx_3xx = 0;
    let mut in_distribution = false;

    for line in text.lines() {
        let line = line.trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        if line == "Latency Distribution" {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            if let [pct, value] = words.as_slice() {
                if let Some(pct) = pct.strip_suffix('%') {
                    latency_percentiles.push((pct.parse()?, time_seconds(value)?));
                    continue;
                }
            }
            in_distribution = false;
        }
        match words.as_slice() {
            ["Latency", mean, _stdev, max, _within] => {
                latency = Some((time_seconds(mean)?, time_seconds(max)?));
            }
            // `170200 requests in 2.01s, 207.44MB read`
            [n, "requests", "in", t, b, "read"] => {
                requests = Some(n.parse::<u64>()?);
                in_seconds = Some(time_seconds(t.trim_end_matches(','))?);
                bytes_read = Some(bytes(b)?);
            }
            ["Requests/sec:", v] => requests_per_s = Some(v.parse::<f64>()?),
            ["Transfer/sec:", v] => bytes_per_s = Some(bytes(v)?),
            ["Non-2xx", "or", "3xx", "responses:", n] => non_2xx_3xx = n.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                // `connect 0, read 49660, write 0, timeout 0`
                for pair in rest.join(" ").split(',') {
                    let pair: Vec<&str> = pair.split_whitespace().collect();
                    let [name, n] = pair.as_slice() else {
                        bail!("unexpected socket error counter {pair:?}");
                    };
                    let n: u64 = n.parse()?;
                    match *name {
                        "connect" => socket_errors.connect = n,
                        "read" => socket_errors.read = n,
                        "write" => socket_errors.write = n,
                        "timeout" => socket_errors.timeout = n,
                        other => bail!("unknown socket error counter {other:?}"),
                    }
                }
            }
            _ => {}
        }
    }

    let requests = requests.context("no `N requests in T, B read` line")?;
    let requests_per_s = requests_per_s.context("no `Requests/sec:` line")?;
    let seconds = if requests > 0 && requests_per_s > 0.0 {
        requests as f64 / requests_per_s
    } else {
        in_seconds.unwrap_or(0.0)
    };
    let (latency_mean_s, latency_max_s) = latency.context("no `Latency` thread stats line")?;
    anyhow::ensure!(
        !latency_percentiles.is_empty(),
        "no latency distribution (was wrk run with --latency?)"
    );
    Ok(WrkReport {
        requests,
        seconds,
        bytes_read: bytes_read.unwrap_or(0.0),
        requests_per_s,
        bytes_per_s: bytes_per_s.context("no `Transfer/sec:` line")?,
        latency_mean_s,
        latency_max_s,
        latency_percentiles,
        socket_errors,
        non_2xx_3xx,
    })
}

/// Splits `478.00us` into (478.0, "us").
fn number_and_unit(text: &str) -> anyhow::Result<(f64, &str)> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(text.len());
    let number = text[..end]
        .parse()
        .with_context(|| format!("no number in {text:?}"))?;
    Ok((number, &text[end..]))
}

/// wrk's times: `478.00us`, `1.83ms`, `2.01s`, `1.50m`, `1.00h`.
fn time_seconds(text: &str) -> anyhow::Result<f64> {
    let (n, unit) = number_and_unit(text)?;
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => bail!("unknown time unit in {text:?}"),
    };
    Ok(n * scale)
}

/// wrk's byte counts, in powers of 1024: `0.00B`, `461.86KB`, `140.70MB`, `1.31GB`.
fn bytes(text: &str) -> anyhow::Result<f64> {
    let (n, unit) = number_and_unit(text)?;
    let power = match unit {
        "B" => 0,
        "KB" => 1,
        "MB" => 2,
        "GB" => 3,
        "TB" => 4,
        "PB" => 5,
        _ => bail!("unknown byte unit in {text:?}"),
    };
    Ok(n * 1024f64.powi(power))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn a_clean_run() {
        let r = parse(include_str!("testdata/wrk_ok_1k.txt")).unwrap();
        assert_eq!(r.requests, 170200);
        assert!(close(r.requests_per_s, 84839.92));
        assert!(close(r.seconds, 170200.0 / 84839.92));
        assert!(close(r.bytes_read, 207.44 * 1024.0 * 1024.0));
        assert!(close(r.bytes_per_s, 103.40 * 1024.0 * 1024.0));
        assert!(close(r.latency_mean_s, 0.94e-3));
        assert!(close(r.latency_max_s, 20.54e-3));
        assert_eq!(r.latency_percentiles.len(), 4);
        assert!(close(r.latency(50.0).unwrap(), 308e-6));
        assert!(close(r.latency(90.0).unwrap(), 2.77e-3));
        assert!(close(r.latency(99.0).unwrap(), 9.74e-3));
        assert_eq!(r.latency(95.0), None);
        assert_eq!(r.socket_errors, SocketErrors::default());
        assert_eq!(r.non_2xx_3xx, 0);
        assert!(r.problems().is_empty());
    }

    #[test]
    fn large_responses_and_gigabytes() {
        let r = parse(include_str!("testdata/wrk_ok_1m.txt")).unwrap();
        assert_eq!(r.requests, 1338);
        assert!(close(r.bytes_read, 1.31 * 1024f64.powi(3)));
        assert!(close(r.latency(50.0).unwrap(), 30.55e-3));
        assert!(close(r.latency(99.0).unwrap(), 180.29e-3));
        assert!(close(r.latency_max_s, 260.03e-3));
        assert!(r.problems().is_empty());
    }

    #[test]
    fn error_responses_are_flagged() {
        let r = parse(include_str!("testdata/wrk_notfound.txt")).unwrap();
        assert_eq!(r.non_2xx_3xx, 176906);
        assert_eq!(r.problems(), ["176906 responses were not 2xx or 3xx"]);
    }

    #[test]
    fn socket_errors_are_flagged() {
        let r = parse(include_str!("testdata/wrk_sockerr.txt")).unwrap();
        assert_eq!(
            r.socket_errors,
            SocketErrors {
                connect: 0,
                read: 49660,
                write: 0,
                timeout: 0
            }
        );
        assert!(close(r.bytes_read, 0.95 * 1024.0 * 1024.0));
        assert!(close(r.bytes_per_s, 461.86 * 1024.0));
        assert_eq!(
            r.problems(),
            ["socket errors: connect 0, read 49660, write 0, timeout 0"]
        );
    }

    #[test]
    fn a_run_without_responses_is_flagged() {
        // A server that accepts and never answers: wrk prints zeros and `-nan%`.
        let r = parse(include_str!("testdata/wrk_no_response.txt")).unwrap();
        assert_eq!(r.requests, 0);
        assert!(close(r.seconds, 3.01));
        assert_eq!(r.bytes_per_s, 0.0);
        assert_eq!(r.problems(), ["no request completed"]);
    }

    #[test]
    fn a_failed_start_is_an_error_quoting_wrk() {
        let error = parse(include_str!("testdata/wrk_refused.txt")).unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains("Connection refused"), "{text}");
    }

    #[test]
    fn units() {
        assert!(close(time_seconds("1.72s").unwrap(), 1.72));
        assert!(close(time_seconds("1.50m").unwrap(), 90.0));
        assert!(close(time_seconds("0.00us").unwrap(), 0.0));
        assert!(time_seconds("3.0xs").is_err());
        assert!(close(bytes("0.00B").unwrap(), 0.0));
        assert!(close(bytes("2.00KB").unwrap(), 2048.0));
        assert!(bytes("2.00kb").is_err());
    }
}
