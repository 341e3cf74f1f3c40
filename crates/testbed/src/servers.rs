//! Real servers started inside a namespace: nginx for HTTP, dnsmasq for DNS, and nginx's
//! stream module as an L4 proxy (the alternative a user would deploy instead of Ricochet).
//!
//! The servers listen on the wildcard addresses, so they also answer on a VIP added to the
//! namespace's `lo` (which is how a DSR server receives the decapsulated packets).

use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};

use crate::names::TempDir;
use crate::netns::Netns;
use crate::process::Process;

/// The HTTP paths of the static files that every nginx of [`start_nginx`] serves, with their
/// sizes in bytes (for transfers and benchmarks).
pub const HTTP_BYTES_PATHS: [(&str, usize); 3] = [
    ("/bytes/1k", 1024),
    ("/bytes/100k", 100 * 1024),
    ("/bytes/1m", 1024 * 1024),
];

/// The DNS name whose TXT record a server of [`start_dns`] answers with its own name.
pub const DNS_WHOAMI: &str = "whoami.ricochet.test";

/// The content of the files under `/bytes/`: a fixed, printable pattern, so that a transfer
/// can be checked byte for byte.
pub fn bytes_content(len: usize) -> Vec<u8> {
    const PATTERN: &[u8] = b"ricochet-0123456789abcdefghijklmnopqrstuvwxyz\n";
    PATTERN.iter().copied().cycle().take(len).collect()
}

/// Starts nginx in `ns`, listening on port 80 of every IPv4 and IPv6 address, and waits until
/// it listens.
///
/// `GET /` answers `body` as `text/plain` (give each server a body naming it, e.g.
/// `"web01\n"`, to see which one answered); `GET /bytes/1k`, `/bytes/100k` and `/bytes/1m`
/// answer [`bytes_content`] of those sizes. The configuration, pid file, error log and temporary
/// paths live in the returned process's [`dir`](Process::dir).
pub fn start_nginx(ns: &Netns, body: &str) -> Result<Process> {
    let dir = TempDir::new("nginx")?;
    let root = dir.path();
    write_nginx_files(root, body)
        .with_context(|| format!("writing nginx files in {}", root.display()))?;
    let conf = root.join("nginx.conf");
    let error_log = root.join("error.log");
    let mut command = ns.command("nginx");
    command
        .arg("-p")
        .arg(root)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(&error_log);
    let mut process = Process::spawn(ns, command, Some(dir))?;
    process.wait_for_tcp_listen(80).with_context(|| {
        format!(
            "starting nginx in {}; its error.log:\n{}",
            ns.name(),
            fs::read_to_string(&error_log).unwrap_or_default()
        )
    })?;
    Ok(process)
}

fn write_nginx_files(root: &Path, body: &str) -> Result<()> {
    let www = root.join("www");
    fs::create_dir_all(www.join("bytes"))?;
    fs::create_dir_all(root.join("temp"))?;
    fs::write(www.join("index.txt"), body)?;
    for (path, len) in HTTP_BYTES_PATHS {
        fs::write(www.join(path.trim_start_matches('/')), bytes_content(len))?;
    }
    let root = root.display();
    // Workers run as nginx's default unprivileged user: the files must be world-readable, which
    // they are with the default umask, in a directory under /tmp.
    let conf = format!(
        "daemon off;
master_process on;
worker_processes auto;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {root}/temp/client_body;
    proxy_temp_path {root}/temp/proxy;
    fastcgi_temp_path {root}/temp/fastcgi;
    uwsgi_temp_path {root}/temp/uwsgi;
    scgi_temp_path {root}/temp/scgi;
    server {{
        listen 0.0.0.0:80;
        listen [::]:80 ipv6only=on;
        root {root}/www;
        location = / {{
            default_type text/plain;
            try_files /index.txt =404;
        }}
        location /bytes/ {{
            default_type application/octet-stream;
        }}
    }}
}}
"
    );
    fs::write(format!("{root}/nginx.conf"), conf)?;
    Ok(())
}

/// Starts dnsmasq in `ns` as an authoritative-looking server for one name: a query for
/// `TXT` [`DNS_WHOAMI`] answers `name`. It binds the wildcard addresses on port 53 (UDP and
/// TCP), so it answers queries addressed to any address of the namespace, the VIP on `lo`
/// included, and replies from the address the query was sent to. Waits until it listens.
///
/// It logs every query to its stderr ([`Process::stderr`]).
pub fn start_dns(ns: &Netns, name: &str) -> Result<Process> {
    anyhow::ensure!(
        !name.contains(','),
        "a DNS server name must not contain a comma"
    );
    let dir = TempDir::new("dns")?;
    let pid_file = dir.path().join("dnsmasq.pid");
    let mut command = ns.command("dnsmasq");
    command
        .args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--port=53",
            "--log-facility=-",
            "--log-queries",
        ])
        .arg(format!("--txt-record={DNS_WHOAMI},{name}"))
        .arg(format!("--pid-file={}", pid_file.display()));
    let mut process = Process::spawn(ns, command, Some(dir))?;
    process
        .wait_for_udp_bind(53)
        .and_then(|()| process.wait_for_tcp_listen(53))
        .with_context(|| format!("starting dnsmasq in {}", ns.name()))?;
    Ok(process)
}

/// Where Debian's `libnginx-mod-stream` installs nginx's stream (TCP/UDP proxy) module.
pub const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// Starts nginx in `ns` as a TCP (layer 4) proxy: it accepts connections on `listen` and
/// relays each one to one of `upstreams`, chosen by a consistent hash of the client's address
/// and port (per connection, like Ricochet's `source_ip_and_port` pools). Waits until it
/// listens. The configuration is [`nginx_stream_proxy_conf`]; it and the logs live in the
/// returned process's [`dir`](Process::dir).
pub fn start_nginx_stream_proxy(
    ns: &Netns,
    listen: SocketAddr,
    upstreams: &[SocketAddr],
) -> Result<Process> {
    anyhow::ensure!(
        Path::new(NGINX_STREAM_MODULE).exists(),
        "nginx's stream module {NGINX_STREAM_MODULE} is missing: install Debian's \
         libnginx-mod-stream (`cargo xtask setup` does)"
    );
    anyhow::ensure!(!upstreams.is_empty(), "an nginx proxy needs upstreams");
    let dir = TempDir::new("nginx-proxy")?;
    let root = dir.path();
    let conf = root.join("nginx.conf");
    let error_log = root.join("error.log");
    fs::write(&conf, nginx_stream_proxy_conf(root, listen, upstreams))
        .with_context(|| format!("writing {}", conf.display()))?;
    let mut command = ns.command("nginx");
    command
        .arg("-p")
        .arg(root)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(&error_log);
    let mut process = Process::spawn(ns, command, Some(dir))?;
    process
        .wait_for_tcp_listen(listen.port())
        .with_context(|| {
            format!(
                "starting the nginx stream proxy in {}; its error.log:\n{}",
                ns.name(),
                fs::read_to_string(&error_log).unwrap_or_default()
            )
        })?;
    Ok(process)
}

/// The configuration of [`start_nginx_stream_proxy`], with its files under `root`.
///
/// The settings are what an operator would use for a busy L4 proxy: one worker per CPU,
/// `reuseport` (one accept queue per worker), room for many connections and descriptors,
/// short connect timeout so that a dead upstream is skipped quickly; buffers and the rest
/// stay at nginx's defaults (`proxy_buffer_size 16k`, `tcp_nodelay on`).
pub fn nginx_stream_proxy_conf(
    root: &Path,
    listen: SocketAddr,
    upstreams: &[SocketAddr],
) -> String {
    let root = root.display();
    let servers: String = upstreams
        .iter()
        .map(|upstream| format!("        server {upstream};\n"))
        .collect();
    format!(
        "load_module {NGINX_STREAM_MODULE};
daemon off;
master_process on;
worker_processes auto;
worker_rlimit_nofile 65536;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 16384; }}
stream {{
    upstream pool {{
        hash $remote_addr$remote_port consistent;
{servers}    }}
    server {{
        listen {listen} reuseport backlog=4096;
        proxy_pass pool;
        proxy_connect_timeout 2s;
        proxy_timeout 60s;
    }}
}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_proxy_conf_lists_every_upstream_and_listens_where_asked() {
        let conf = nginx_stream_proxy_conf(
            Path::new("/tmp/x"),
            "192.168.35.242:80".parse().unwrap(),
            &[
                "192.168.33.10:80".parse().unwrap(),
                "[fc00::10]:8080".parse().unwrap(),
            ],
        );
        assert!(conf.starts_with(&format!("load_module {NGINX_STREAM_MODULE};\n")));
        assert!(conf
            .contains("        server 192.168.33.10:80;\n        server [fc00::10]:8080;\n    }"));
        assert!(conf.contains("listen 192.168.35.242:80 reuseport backlog=4096;"));
        assert!(conf.contains("pid /tmp/x/nginx.pid;"));
        assert!(conf.contains("hash $remote_addr$remote_port consistent;"));
        // Braces balance (a stray one makes nginx refuse the file).
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    }
}
