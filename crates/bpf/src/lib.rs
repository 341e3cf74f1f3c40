//! Ricochet's compiled kernel programs, embedded in the binary.

/// The XDP load balancer object (program `ricochet_lb`).
pub static LB: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ricochet-lb"));

/// The TC decapsulator object (program `ricochet_decap`).
pub static DECAP: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ricochet-decap"));

/// Name of the XDP program in [`LB`].
pub const LB_PROGRAM: &str = "ricochet_lb";
/// Name of the TC program in [`DECAP`].
pub const DECAP_PROGRAM: &str = "ricochet_decap";

/// Trivial XDP programs (`xdp_pass`, `xdp_tx`) for test beds and benchmark floors.
pub static TRIVIAL: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ricochet-trivial"));

/// The DSR probe encapsulator object (program `ricochet_dsr_probe`, TC egress on the
/// service engine): health checks through the VIP path (`crates/health`).
pub static DSR_PROBE: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ricochet-dsr-probe"));
/// Name of the TC program in [`DSR_PROBE`].
pub const DSR_PROBE_PROGRAM: &str = "ricochet_dsr_probe";

/// XDP programs of the forwarding benchmark: `bench_gen` (a traffic generator for
/// BPF_PROG_TEST_RUN's live-frames mode), `bench_sink` (counts and drops), `bench_drop`.
pub static BENCH_XDP: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ricochet-bench-xdp"));
