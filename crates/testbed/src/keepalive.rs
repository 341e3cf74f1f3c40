//! HTTP/1.1 keep-alive connections from the client to a VIP, for tests that check
//! established connections across a change (a pool change, an engine's failure).

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::topology::Topology;

/// An HTTP/1.1 keep-alive connection to port 80 of a VIP. [`Conn::open`] must run in
/// the client's namespace ([`Conn::open_in`] does that).
pub struct Conn {
    stream: TcpStream,
}

impl Conn {
    pub fn open(vip: IpAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&SocketAddr::new(vip, 80), Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(Conn { stream })
    }

    /// Opens a connection from the client's namespace; a panic if it fails.
    pub fn open_in(topo: &Topology, vip: IpAddr) -> Conn {
        topo.client
            .ns
            .run(move || Conn::open(vip))
            .unwrap()
            .expect("connect to the VIP")
    }

    /// The client's end of the connection (its flow key's source address and port).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream
            .local_addr()
            .expect("local address of a connected socket")
    }

    /// Sends a GET on the open connection and returns the body (the server's name).
    pub fn get(&mut self) -> std::io::Result<String> {
        self.stream
            .write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .and_then(|v| v.trim().parse().ok())
                    })
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("no Content-Length in {:?}", &text[..end]),
                        )
                    })?;
                if buf.len() >= end + 4 + len {
                    return Ok(String::from_utf8_lossy(&buf[end + 4..end + 4 + len])
                        .trim()
                        .to_owned());
                }
            }
        }
    }
}

/// One HTTP GET on a new connection from the client; the body (the server's name).
pub fn get_new(topo: &Topology, vip: IpAddr) -> std::io::Result<String> {
    topo.client
        .ns
        .run(move || Conn::open(vip).and_then(|mut c| c.get()))
        .unwrap()
}
