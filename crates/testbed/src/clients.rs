//! Real clients run inside a namespace: curl for HTTP, kdig for DNS, ping.

use std::net::IpAddr;

use anyhow::{ensure, Context, Result};

use crate::netns::Netns;

/// An HTTP URL for `addr` and `path` (IPv6 addresses in brackets), e.g.
/// `http://[fc00:3::24a]/bytes/1k`.
pub fn http_url(addr: IpAddr, path: &str) -> String {
    match addr {
        IpAddr::V4(v4) => format!("http://{v4}{path}"),
        IpAddr::V6(v6) => format!("http://[{v6}]{path}"),
    }
}

/// `GET url` with curl from inside `ns`; returns the body. Fails on a connection error, a
/// timeout (5 s) or an HTTP status of 400 or more, quoting curl's message.
pub fn http_get(ns: &Netns, url: &str) -> Result<Vec<u8>> {
    let output = ns
        .exec(&[
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "5",
            url,
        ])
        .with_context(|| format!("GET {url} from {}", ns.name()))?;
    Ok(output.stdout)
}

/// Like [`http_get`], for a text body.
pub fn http_get_text(ns: &Netns, url: &str) -> Result<String> {
    let body = http_get(ns, url)?;
    String::from_utf8(body).with_context(|| format!("body of GET {url} is not UTF-8"))
}

/// The transport of a DNS query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsTransport {
    /// One UDP datagram each way.
    Udp,
    /// A TCP connection.
    Tcp,
}

/// Asks `server` for the TXT record of `name` with kdig from inside `ns`; returns the text of
/// the answer (without quotes, several strings joined by newlines). Fails on a timeout (2 s,
/// no retry) or an empty answer.
pub fn dns_txt(ns: &Netns, server: IpAddr, name: &str, transport: DnsTransport) -> Result<String> {
    let at = format!("@{server}");
    let mut args = vec!["kdig", at.as_str(), "+short", "+timeout=2", "+retry=0"];
    if transport == DnsTransport::Tcp {
        args.push("+tcp");
    }
    args.extend(["TXT", name]);
    let output = ns.exec(&args).with_context(|| {
        format!(
            "DNS TXT {name} @{server} over {transport:?} from {}",
            ns.name()
        )
    })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let answer: Vec<&str> = text
        .lines()
        .map(|line| line.trim().trim_matches('"'))
        .filter(|line| !line.is_empty() && !line.starts_with(";;"))
        .collect();
    ensure!(
        !answer.is_empty(),
        "no TXT answer for {name} from {server} ({transport:?}); kdig said: {}{}",
        text.trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(answer.join("\n"))
}

/// Sends `count` pings to `addr` from inside `ns` (0.1 s apart, 2 s timeout each) and fails
/// unless every one is answered.
pub fn ping(ns: &Netns, addr: IpAddr, count: u32) -> Result<()> {
    let count_arg = count.to_string();
    let output = ns
        .exec(&[
            "ping",
            "-n",
            "-q",
            "-c",
            &count_arg,
            "-i",
            "0.1",
            "-W",
            "2",
            &addr.to_string(),
        ])
        .with_context(|| format!("ping {addr} from {}", ns.name()))?;
    // `3 packets transmitted, 3 received, 0% packet loss, time 203ms`: ping exits 0 when at
    // least one reply came back, so count them.
    let text = String::from_utf8_lossy(&output.stdout);
    let received = text
        .split(',')
        .find_map(|part| part.trim().strip_suffix(" received"))
        .and_then(|n| n.trim().parse::<u32>().ok());
    ensure!(
        received == Some(count),
        "ping {addr} from {}: {} of {count} replies\n{}",
        ns.name(),
        received.map_or("?".to_owned(), |n| n.to_string()),
        text.trim()
    );
    Ok(())
}
