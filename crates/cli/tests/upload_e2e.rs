//! A 5 MB upload through the VIP completes with the engine in native and in generic XDP
//! mode, on the seed's network (shared/TESTBED.md). se1's interface has GRO on, as a real
//! NIC has: generic XDP runs after GRO, so without the engine turning merging off it would
//! see packets of several KB and answer "fragmentation needed" to a client whose segments
//! fit. Needs root.

mod support;

use ricochet_testbed::{self as tb, Process, SeedBed, VIP_V4};
use support::seed::{seed_bed, started, FileMode as _, FILE_STATE, FLOWS};

const PORT: u16 = 8080;
const UPLOAD_BYTES: usize = 5 * 1024 * 1024;

/// An HTTP server that reads a PUT or POST body and answers with its length and SHA-256.
const SINK: &str = r#"
import hashlib, http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_PUT(self):
        left = int(self.headers["Content-Length"])
        h, n = hashlib.sha256(), 0
        while left:
            b = self.rfile.read(min(left, 65536))
            if not b:
                break
            h.update(b); n += len(b); left -= len(b)
        body = ("%s %d %s\n" % (sys.argv[1], n, h.hexdigest())).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_PUT
    def log_message(self, *args):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
s = S(("0.0.0.0", 8080), H)
print("listening", flush=True)
s.serve_forever()
"#;

fn config() -> String {
    format!(
        "network_profiles:
  - name: dsr-l3-tcp
    type: tcp_fast_path
    dsr: {{ enabled: true, type: l3, encapsulation: ipinip }}
pools:
  - name: upload-pool
    servers:
      - {{ ip: 192.168.33.10 }}
      - {{ ip: 192.168.34.10 }}
virtual_services:
  - name: upload-vs
    vip: {VIP_V4}
    services: [{{ port: {PORT} }}]
    network_profile: dsr-l3-tcp
    pool: upload-pool
"
    )
}

fn gro(bed: &SeedBed) -> bool {
    let out = bed
        .topo
        .se1
        .ns
        .exec(&["ethtool", "-k", bed.topo.se1.iface])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("generic-receive-offload: "))
        .unwrap_or_else(|| panic!("no GRO line in {text}"))
        .starts_with("on")
}

struct Bed {
    seed: SeedBed,
    _sinks: Vec<Process>,
}

fn bed(test: &str) -> Bed {
    let seed = seed_bed(test, &[VIP_V4.into()]);
    let sinks = [&seed.topo.web01, &seed.topo.web02]
        .iter()
        .map(|host| {
            let p = host
                .ns
                .spawn(&["/usr/bin/python3", "-c", SINK, host.name])
                .unwrap();
            started(p, "listening")
        })
        .collect();
    seed.write_config(&config());
    // The payload: not compressible, not uniform.
    let mut data = vec![0u8; UPLOAD_BYTES];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in &mut data {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(seed.dir().join("upload.bin"), &data).unwrap();
    // As on a real NIC.
    seed.topo
        .se1
        .ns
        .ethtool_feature(seed.topo.se1.iface, "gro", true)
        .unwrap();
    Bed {
        seed,
        _sinks: sinks,
    }
}

fn start_engine(bed: &SeedBed, mode: &str) -> Process {
    bed.start_file_engine(FLOWS, &["--xdp-mode", mode])
}

/// Uploads the file from the client with curl; what the server answered.
fn upload(bed: &SeedBed) -> String {
    let url = tb::http_url(VIP_V4.into(), &format!(":{PORT}/upload"));
    let out = bed
        .topo
        .client
        .ns
        .exec(&[
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "30",
            "-T",
            &bed.path("upload.bin"),
            &url,
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "upload to {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn expected_sha256(bed: &SeedBed) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(bed.path("upload.bin"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn check_upload(bed: &SeedBed, mode: &str) {
    let answer = upload(bed);
    let sha = expected_sha256(bed);
    let fields: Vec<&str> = answer.split_whitespace().collect();
    assert!(
        matches!(fields.as_slice(), [server, len, hash]
            if (*server == "web01" || *server == "web02")
                && *len == UPLOAD_BYTES.to_string()
                && *hash == sha),
        "{mode}: the server received all {UPLOAD_BYTES} bytes intact: {answer:?} (sha256 {sha})"
    );
}

#[test]
fn a_5_mb_upload_completes_in_native_and_generic_mode() {
    let bed = bed("upload");
    let seed = &bed.seed;

    let mut engine = start_engine(seed, "native");
    assert!(gro(seed), "native XDP leaves GRO alone");
    check_upload(seed, "native");
    engine.stop().unwrap();
    seed.detach(FILE_STATE);

    let mut engine = start_engine(seed, "generic");
    assert!(!gro(seed), "GRO off while generic XDP is attached");
    for _ in 0..2 {
        check_upload(seed, "generic");
    }
    let status = seed.status_of(FILE_STATE);
    assert!(status.contains("upload-vs"), "{status}");
    engine.stop().unwrap();
    // The pinned program stays after the engine: so does the change.
    assert!(!gro(seed));
    seed.detach(FILE_STATE);
    assert!(gro(seed), "detach turns GRO on again");
}
