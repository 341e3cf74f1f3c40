//! Types of the DSR probe encapsulator (`ricochet_dsr_probe`, a TC egress program on the
//! service engine): health checks that reach a server the way client traffic does.
//!
//! A health-check socket carries a socket mark (`SO_MARK`); the program looks the mark up
//! in [`PROBE_TARGETS`] and wraps every packet carrying it in IPv4-in-IPv4 or
//! IPv6-in-IPv6 to the registered server, so the inner packet (engine → VIP:port) reaches
//! the server exactly as a client's packet forwarded by the XDP load balancer does.

/// Name of the map mark → [`ProbeTarget`] (also its pin name).
pub const PROBE_TARGETS: &str = "PROBE_TARGETS";
/// Name of the per-CPU counters, one per [`ProbeReason`].
pub const PROBE_STATS: &str = "PROBE_STATS";
/// Capacity of [`PROBE_TARGETS`]: one entry per server address checked through the VIP.
pub const MAX_PROBE_TARGETS: u32 = 4096;

/// Where marked packets go: value of [`PROBE_TARGETS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTarget {
    /// Outer destination: the server's own address (first 4 bytes for IPv4).
    pub server: [u8; 16],
    /// Outer source: the engine's address toward the server.
    pub source: [u8; 16],
    /// `FAMILY_V4` or `FAMILY_V6`; the inner packet must be of the same family.
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<ProbeTarget>() == 36);

crate::counted_enum! {
    /// Why the probe encapsulator passed, encapsulated or dropped a packet; indexes
    /// [`PROBE_STATS`].
    pub enum ProbeReason {
        /// Marked, encapsulated and redirected toward the server.
        Encapsulated => "encapsulated",
        /// No mark, or a mark that is not registered: untouched.
        PassUnmarked => "pass_unmarked",
        /// Already IP-in-IP (our own packet coming back through egress after the redirect).
        PassEncapsulated => "pass_encapsulated",
        /// Marked but not IPv4/IPv6 of the target's family: dropped.
        DropFamilyMismatch => "drop_family_mismatch",
        /// Truncated IP header: dropped.
        DropMalformed => "drop_malformed",
        /// bpf_skb_adjust_room or the header store failed: dropped.
        DropAdjustFailed => "drop_adjust_failed",
    }
}

#[cfg(feature = "user")]
mod user {
    use super::ProbeTarget;
    use core::net::IpAddr;

    // SAFETY: repr(C), Copy, no padding (size asserted above): any byte pattern is valid.
    unsafe impl aya::Pod for ProbeTarget {}

    impl ProbeTarget {
        /// A target for `server`, encapsulated from `source`; `None` if the families differ.
        pub fn new(server: IpAddr, source: IpAddr) -> Option<Self> {
            let (server_bytes, family) = crate::addr_bytes(server);
            let (source_bytes, source_family) = crate::addr_bytes(source);
            (family == source_family).then_some(ProbeTarget {
                server: server_bytes,
                source: source_bytes,
                family,
                _pad: [0; 3],
            })
        }
    }
}
