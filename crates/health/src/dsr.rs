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

use std::collections::{BTreeMap, BTreeSet};
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
    marks: Marks,
}

/// Which mark index (1..=0xffff, added to the mark base) each server holds. Released
/// indexes are reused, lowest first, so an engine whose pools change for months never
/// runs out while it checks fewer than 65535 servers at once.
#[derive(Debug, Default)]
struct Marks {
    by_server: BTreeMap<IpAddr, u32>,
    /// Indexes released, below `next`.
    free: BTreeSet<u32>,
    /// The highest index handed out so far (0: none).
    next: u32,
}

impl Marks {
    const LAST: u32 = 0xffff;

    fn get(&self, server: IpAddr) -> Option<u32> {
        self.by_server.get(&server).copied()
    }

    /// `server`'s index, assigning the lowest free one on first use (`None`: all are in
    /// use).
    fn assign(&mut self, server: IpAddr) -> Option<u32> {
        if let Some(index) = self.get(server) {
            return Some(index);
        }
        let index = match self.free.pop_first() {
            Some(index) => index,
            None if self.next < Self::LAST => {
                self.next += 1;
                self.next
            }
            None => return None,
        };
        self.by_server.insert(server, index);
        Some(index)
    }

    /// Releases `server`'s index, if it holds one.
    fn release(&mut self, server: IpAddr) -> Option<u32> {
        let index = self.by_server.remove(&server)?;
        self.free.insert(index);
        Some(index)
    }

    /// Releases every server not in `keep`; returns them with their indexes.
    fn release_except(&mut self, keep: &BTreeSet<IpAddr>) -> Vec<(IpAddr, u32)> {
        let gone: Vec<(IpAddr, u32)> = self
            .by_server
            .iter()
            .filter(|(server, _)| !keep.contains(server))
            .map(|(server, index)| (*server, *index))
            .collect();
        for (server, _) in &gone {
            self.release(*server);
        }
        gone
    }
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
                marks: Marks::default(),
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
        if let Some(index) = marks.get(server) {
            return Ok(self.mark_base + index);
        }
        let source =
            source_toward(server).map_err(|source| DsrError::NoSource { server, source })?;
        let target = ProbeTarget::new(server, source).ok_or_else(|| DsrError::Map {
            server,
            detail: format!("source {source} is of another family"),
        })?;
        let Some(index) = marks.assign(server) else {
            return Err(DsrError::Map {
                server,
                detail: "all 65535 marks are in use".to_owned(),
            });
        };
        let mark = self.mark_base + index;
        if let Err(e) = map.insert(mark, target, 0) {
            marks.release(server);
            return Err(DsrError::Map {
                server,
                detail: e.to_string(),
            });
        }
        Ok(mark)
    }

    /// Releases the marks of every registered server not in `servers` (those no check
    /// goes through the VIP path to any more): their `PROBE_TARGETS` entries are removed
    /// and their marks are given to servers registered later. Call it when the checks
    /// change, before registering the new ones; a check still running with a released
    /// mark goes unencapsulated and fails, which only matters to a check being replaced.
    pub fn retain(&self, servers: &BTreeSet<IpAddr>) -> Result<(), DsrError> {
        let mut guard = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let Targets { map, marks } = &mut *guard;
        let mut first_error = None;
        for (server, index) in marks.release_except(servers) {
            if let Err(e) = map.remove(&(self.mark_base + index)) {
                first_error.get_or_insert(DsrError::Map {
                    server,
                    detail: format!("removing its mark: {e}"),
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The servers registered now, with their marks.
    pub fn registered(&self) -> Vec<(IpAddr, u32)> {
        let guard = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .marks
            .by_server
            .iter()
            .map(|(server, index)| (*server, self.mark_base + index))
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 168, 33, last])
    }

    #[test]
    fn released_marks_are_reused_lowest_first_and_kept_ones_stay() {
        let mut marks = Marks::default();
        let got: Vec<_> = (1..=4).map(|i| marks.assign(ip(i))).collect();
        assert_eq!(got, [Some(1), Some(2), Some(3), Some(4)]);
        assert_eq!(marks.assign(ip(2)), Some(2), "one mark per server");

        let keep: BTreeSet<IpAddr> = [ip(1), ip(4)].into();
        assert_eq!(marks.release_except(&keep), [(ip(2), 2), (ip(3), 3)]);
        assert_eq!(marks.get(ip(1)), Some(1), "kept servers keep their marks");
        assert_eq!(marks.get(ip(4)), Some(4));
        assert_eq!(marks.get(ip(2)), None);
        assert_eq!(marks.assign(ip(5)), Some(2));
        assert_eq!(marks.assign(ip(6)), Some(3));
        assert_eq!(marks.assign(ip(7)), Some(5));
    }

    #[test]
    fn marks_run_out_at_65535_servers_in_use_and_come_back_when_released() {
        let mut marks = Marks::default();
        let servers: Vec<IpAddr> = (1..=0xffff_u32)
            .map(|i| IpAddr::from((0x0a00_0000 + i).to_be_bytes()))
            .collect();
        for server in &servers {
            assert!(marks.assign(*server).is_some());
        }
        let one_more = IpAddr::from([10, 1, 0, 0]);
        assert_eq!(marks.assign(one_more), None, "all 65535 in use");
        let keep: BTreeSet<IpAddr> = servers[1..].iter().copied().collect();
        assert_eq!(marks.release_except(&keep), [(servers[0], 1)]);
        assert_eq!(marks.assign(one_more), Some(1));
    }
}
