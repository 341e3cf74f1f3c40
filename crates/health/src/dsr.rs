//! The VIP path for health checks: the DSR probe encapsulator (`ricochet_dsr_probe`, TC
//! egress on the engine's interface) and the marks that select it.
//!
//! A check through the VIP opens an ordinary kernel socket with a mark registered here
//! and connects to VIP:port. The kernel routes the packet toward the VIP (the engine does
//! not own the VIP; any route for it out of the engine's interface will do, the default
//! route included); at the interface's egress the program finds the mark in
//! `PROBE_TARGETS`, wraps the packet in IP-in-IP to the server and redirects it with
//! `bpf_redirect_neigh`, which routes the outer destination and resolves the neighbour.
//! The server decapsulates, its socket on the VIP answers, and the answer (source VIP,
//! destination the engine's own address) comes straight back to the engine's socket: the
//! XDP load balancer passes it because the engine's address is not a VIP.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Mutex;

use aya::maps::{HashMap, MapData, PerCpuArray};
use aya::programs::{tc::TcAttachOptions, LinkOrder, SchedClassifier, TcAttachType};
use aya::Ebpf;
use ricochet_bpf::{DSR_PROBE, DSR_PROBE_PROGRAM};
use ricochet_common::probe::{ProbeReason, ProbeTarget, PROBE_STATS, PROBE_TARGETS};

/// Marks `DEFAULT_MARK_BASE + 1 ..= DEFAULT_MARK_BASE + 0xffff` belong to the health
/// checker ("RC" in the top half): pick another base if the host's firewall or routing
/// uses marks in that range.
pub const DEFAULT_MARK_BASE: u32 = 0x5243_0000;

/// Why the VIP path could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DsrError {
    /// Loading or attaching the program failed.
    #[error("attaching the DSR probe encapsulator to {iface} egress: {detail}")]
    Attach {
        /// The interface.
        iface: String,
        /// What went wrong.
        detail: String,
    },
    /// The engine has no address toward the server.
    #[error("no local address to reach server {server} from (is it routed?): {source}")]
    NoSource {
        /// The server.
        server: IpAddr,
        /// The routing error.
        source: io::Error,
    },
    /// Writing the map failed, or it is full.
    #[error("registering server {server} in {PROBE_TARGETS}: {detail}")]
    Map {
        /// The server.
        server: IpAddr,
        /// What went wrong.
        detail: String,
    },
}

/// `PROBE_TARGETS` and the marks written to it, changed together.
struct Targets {
    map: HashMap<MapData, u32, ProbeTarget>,
    marks: BTreeMap<IpAddr, u32>,
}

/// The DSR probe encapsulator attached to one interface's egress, and the marks of the
/// servers registered with it. Detached when dropped (its TCX link is owned, not pinned:
/// health checks run only while their checker does).
///
/// All methods act in the network namespace of the calling thread.
pub struct DsrPath {
    iface: String,
    mark_base: u32,
    targets: Mutex<Targets>,
    stats: PerCpuArray<MapData, u64>,
    // Owns the program and its link: dropping it detaches.
    _ebpf: Ebpf,
}

impl std::fmt::Debug for DsrPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DsrPath")
            .field("iface", &self.iface)
            .field("mark_base", &self.mark_base)
            .finish_non_exhaustive()
    }
}

impl DsrPath {
    /// Loads the encapsulator and attaches it (TCX, Linux 6.6 or newer) to `iface`'s
    /// egress, with marks from [`DEFAULT_MARK_BASE`].
    pub fn attach(iface: &str) -> Result<Self, DsrError> {
        Self::attach_with_mark_base(iface, DEFAULT_MARK_BASE)
    }

    /// Like [`DsrPath::attach`], with marks `mark_base + 1 ..= mark_base + 0xffff`.
    pub fn attach_with_mark_base(iface: &str, mark_base: u32) -> Result<Self, DsrError> {
        let fail = |detail: String| DsrError::Attach {
            iface: iface.to_owned(),
            detail,
        };
        let mut ebpf =
            Ebpf::load(DSR_PROBE).map_err(|e| fail(format!("loading the object: {e}")))?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(DSR_PROBE_PROGRAM)
            .ok_or_else(|| fail(format!("the object has no program {DSR_PROBE_PROGRAM}")))?
            .try_into()
            .map_err(|e| fail(format!("{DSR_PROBE_PROGRAM} is not a TC classifier: {e}")))?;
        prog.load()
            .map_err(|e| fail(format!("loading {DSR_PROBE_PROGRAM}: {e}")))?;
        prog.attach_with_options(
            iface,
            TcAttachType::Egress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| fail(format!("{e} (TCX needs Linux 6.6 or newer)")))?;
        let targets = ebpf
            .take_map(PROBE_TARGETS)
            .ok_or_else(|| fail(format!("the object has no map {PROBE_TARGETS}")))?;
        let targets =
            HashMap::try_from(targets).map_err(|e| fail(format!("{PROBE_TARGETS}: {e}")))?;
        let stats = ebpf
            .take_map(PROBE_STATS)
            .ok_or_else(|| fail(format!("the object has no map {PROBE_STATS}")))?;
        let stats =
            PerCpuArray::try_from(stats).map_err(|e| fail(format!("{PROBE_STATS}: {e}")))?;
        Ok(Self {
            iface: iface.to_owned(),
            mark_base,
            targets: Mutex::new(Targets {
                map: targets,
                marks: BTreeMap::new(),
            }),
            stats,
            _ebpf: ebpf,
        })
    }

    /// The interface the encapsulator is attached to.
    pub fn interface(&self) -> &str {
        &self.iface
    }

    /// The mark whose packets go encapsulated to `server` (registering it on first use).
    /// The outer source is the address the kernel would use to reach the server.
    pub fn register(&self, server: IpAddr) -> Result<u32, DsrError> {
        let mut guard = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let Targets { map, marks } = &mut *guard;
        if let Some(&mark) = marks.get(&server) {
            return Ok(mark);
        }
        let source =
            source_toward(server).map_err(|source| DsrError::NoSource { server, source })?;
        let index = u32::try_from(marks.len() + 1).unwrap_or(u32::MAX);
        if index > 0xffff {
            return Err(DsrError::Map {
                server,
                detail: "all 65535 marks are in use".to_owned(),
            });
        }
        let mark = self.mark_base + index;
        let target = ProbeTarget::new(server, source).ok_or_else(|| DsrError::Map {
            server,
            detail: format!("source {source} is of another family"),
        })?;
        map.insert(mark, target, 0).map_err(|e| DsrError::Map {
            server,
            detail: e.to_string(),
        })?;
        marks.insert(server, mark);
        Ok(mark)
    }

    /// The encapsulator's counters, summed over CPUs: (reason name, packets).
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        ProbeReason::ALL
            .iter()
            .map(|reason| {
                let total = self
                    .stats
                    .get(&(*reason as u32), 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (reason.name(), total)
            })
            .collect()
    }
}

/// The local address the kernel picks to reach `server` (a UDP socket's connect sends
/// nothing; it only routes).
fn source_toward(server: IpAddr) -> io::Result<IpAddr> {
    let unspecified: IpAddr = if server.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let socket = UdpSocket::bind(SocketAddr::new(unspecified, 0))?;
    socket.connect(SocketAddr::new(server, 9))?;
    Ok(socket.local_addr()?.ip())
}
