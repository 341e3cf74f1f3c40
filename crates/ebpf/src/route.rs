//! The next hop towards a server: this CPU's `NEXT_HOPS` cache entry while it is fresh,
//! otherwise the kernel's FIB and neighbour tables (`bpf_fib_lookup`).

use ricochet_common::{NextHop, Reason, ServerValue, FAMILY_V4, NEXT_HOP_MAX_AGE_JIFFIES};

use crate::headers::{IPPROTO_IPIP, IPPROTO_IPV6};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `bpf_fib_lookup` results (`BPF_FIB_LKUP_RET_*`).
pub const FIB_SUCCESS: i64 = 0;
pub const FIB_NO_NEIGH: i64 = 7;
pub const FIB_FRAG_NEEDED: i64 = 8;

/// `struct bpf_fib_lookup` (64 bytes), with its unions flattened to the members used.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FibParams {
    pub family: u8,
    pub l4_protocol: u8,
    pub sport: u16,
    pub dport: u16,
    /// In: the packet's IP total length (enables the MTU check). Out: the MTU.
    pub tot_len_mtu: u16,
    pub ifindex: u32,
    /// IPv4 TOS or IPv6 flowinfo.
    pub tos_flowinfo: u32,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub vlan_proto: u16,
    pub vlan_tci: u16,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<FibParams>() == 64);

/// The kernel services routing needs.
pub trait Fib {
    /// `bpf_jiffies64()`.
    fn now(&self) -> u64;
    /// This CPU's `NEXT_HOPS` slot of server `server_id`. The pointer is valid for the
    /// rest of the program run, and no one else writes the slot meanwhile (per CPU).
    fn next_hop(&self, server_id: u32) -> Option<*mut NextHop>;
    /// `bpf_fib_lookup` with the MTU check: a `FIB_*` result, `params` updated.
    fn fib_lookup(&self, params: &mut FibParams) -> i64;
}

/// What routing and the encapsulation need of a server's slot (`SERVERS`): its address and
/// the slot's generation, 20 of the slot's 32 bytes (the pick carries them through the
/// stack frames that the verifier holds to 512 bytes in all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    pub addr: [u8; 16],
    pub generation: u32,
}

impl From<&ServerValue> for Destination {
    #[inline(always)]
    fn from(s: &ServerValue) -> Self {
        Destination {
            addr: s.addr,
            generation: s.generation,
        }
    }
}

/// Outcome of the route lookup for the encapsulated packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Via {
        ifindex: u32,
        smac: [u8; 6],
        dmac: [u8; 6],
    },
    /// The outer packet exceeds the route's MTU.
    TooBig {
        mtu: u16,
    },
    Fail(Reason),
}

/// The next hop towards `server` (slot `server_id`) for an outer packet of
/// `tot_len` bytes from `in_ifindex`: from this CPU's `NEXT_HOPS` entry while it is
/// younger than `NEXT_HOP_MAX_AGE_JIFFIES` and was resolved for the same server
/// (generation and address) and ingress interface; otherwise from `bpf_fib_lookup`,
/// whose success refills the entry. Failures (no route, no neighbour, too big) are
/// never cached, so they are looked up again on every packet.
///
/// With `ON_LINK` (L2 DSR), the server must be the next hop itself: a route through a
/// router answers [`Reason::DropL2NotOnLink`]; a cache entry not marked on link is looked
/// up again. A const parameter, not an argument: the tunnels' instances carry none of
/// it (their stack frames are at the verifier's limit), and mark their entries 0.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the lookup's inputs, each a scalar in BPF
pub fn route<const ON_LINK: bool>(
    env: &impl Fib,
    in_ifindex: u32,
    family: u8,
    src: &[u8; 16],
    server_id: u32,
    server: &Destination,
    tot_len: u16,
    tos: u32,
) -> Route {
    let now = env.now();
    let cached = env.next_hop(server_id);
    if let Some(c) = cached {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU (see `Fib::next_hop`).
        let c = unsafe { &*c };
        if now.wrapping_sub(c.stamp) < NEXT_HOP_MAX_AGE_JIFFIES
            && c.generation == server.generation
            && c.in_ifindex == in_ifindex
            && c.addr == server.addr
            && (!ON_LINK || c.on_link != 0)
        {
            if tot_len > c.mtu {
                return Route::TooBig { mtu: c.mtu };
            }
            return Route::Via {
                ifindex: c.ifindex,
                smac: c.smac,
                dmac: c.dmac,
            };
        }
    }
    let v4 = family == FAMILY_V4;
    let mut fib = FibParams {
        family: if v4 { AF_INET } else { AF_INET6 },
        l4_protocol: if v4 { IPPROTO_IPIP } else { IPPROTO_IPV6 },
        sport: 0,
        dport: 0,
        tot_len_mtu: tot_len,
        ifindex: in_ifindex,
        tos_flowinfo: tos,
        src: *src,
        dst: server.addr,
        vlan_proto: 0,
        vlan_tci: 0,
        smac: [0; 6],
        dmac: [0; 6],
    };
    match env.fib_lookup(&mut fib) {
        FIB_SUCCESS => {
            // The lookup writes the next hop's address over `dst` (a gateway's when there
            // is one): the server is on link when it is still the server's.
            let direct = ON_LINK && fib.dst == server.addr;
            if let Some(c) = cached {
                // SAFETY: as above. With the MTU check requested, a successful lookup
                // returns the route's MTU.
                unsafe {
                    *c = NextHop {
                        stamp: now,
                        addr: server.addr,
                        generation: server.generation,
                        in_ifindex,
                        ifindex: fib.ifindex,
                        mtu: fib.tot_len_mtu,
                        smac: fib.smac,
                        dmac: fib.dmac,
                        on_link: direct as u8,
                        _pad: [0; 5],
                    }
                };
            }
            if ON_LINK && !direct {
                return Route::Fail(Reason::DropL2NotOnLink);
            }
            Route::Via {
                ifindex: fib.ifindex,
                smac: fib.smac,
                dmac: fib.dmac,
            }
        }
        FIB_FRAG_NEEDED => Route::TooBig {
            mtu: fib.tot_len_mtu,
        },
        FIB_NO_NEIGH => Route::Fail(Reason::DropNoNeighbour),
        _ => Route::Fail(Reason::DropNoRoute),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testenv::{fib_answer, TestEnv};
    use std::vec;

    fn server() -> Destination {
        Destination {
            addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            generation: 5,
        }
    }

    fn params(ifindex: u32, mtu: u16) -> FibParams {
        fib_answer(ifindex, mtu, [1; 6], [2; 6])
    }

    fn env() -> TestEnv {
        let e = TestEnv {
            now: 10_000,
            next_hops: vec![NextHop::default(); 2].into(),
            ..Default::default()
        };
        *e.fib.borrow_mut() = Some((FIB_SUCCESS, params(4, 1500)));
        e
    }

    fn lookup(e: &TestEnv, s: &Destination, in_if: u32, len: u16) -> Route {
        route::<false>(e, in_if, FAMILY_V4, &[0; 16], 1, s, len, 0)
    }

    #[test]
    fn on_link_routes_are_told_from_routes_through_a_gateway() {
        let e = env();
        let l2 = |e: &TestEnv| route::<true>(e, 1, FAMILY_V4, &[0; 16], 1, &server(), 100, 0);
        let via = Route::Via {
            ifindex: 4,
            smac: [1; 6],
            dmac: [2; 6],
        };
        assert_eq!(l2(&e), via, "the server is its own next hop");
        assert_eq!(e.next_hops.borrow()[1].on_link, 1);
        assert_eq!(l2(&e), via, "from the cache");

        // Through a router: fine for a tunnel, not for L2 DSR, fresh or cached.
        let e = env();
        let mut gw = params(4, 1500);
        gw.dst[..4].copy_from_slice(&[10, 0, 0, 254]);
        *e.fib.borrow_mut() = Some((FIB_SUCCESS, gw));
        assert_eq!(l2(&e), Route::Fail(Reason::DropL2NotOnLink));
        assert_eq!(e.next_hops.borrow()[1].on_link, 0);
        assert_eq!(
            lookup(&e, &server(), 1, 100),
            via,
            "a tunnel goes via the router"
        );
        assert_eq!(
            l2(&e),
            Route::Fail(Reason::DropL2NotOnLink),
            "an entry not on link is looked up again"
        );
        assert_eq!(*e.fib_calls.borrow(), 2);
    }

    #[test]
    fn successful_lookups_are_cached_until_they_age() {
        let mut e = env();
        let via = Route::Via {
            ifindex: 4,
            smac: [1; 6],
            dmac: [2; 6],
        };
        assert_eq!(lookup(&e, &server(), 1, 100), via);
        assert_eq!(*e.fib_calls.borrow(), 1);
        let cached = e.next_hops.borrow()[1];
        assert_eq!(
            (cached.stamp, cached.mtu, cached.generation),
            (10_000, 1500, 5)
        );
        *e.fib.borrow_mut() = Some((FIB_SUCCESS, params(9, 1500)));
        assert_eq!(lookup(&e, &server(), 1, 100), via, "from the cache");
        assert_eq!(*e.fib_calls.borrow(), 1);
        // The cache answers "too big" by its MTU without a lookup.
        assert_eq!(lookup(&e, &server(), 1, 1501), Route::TooBig { mtu: 1500 });
        assert_eq!(*e.fib_calls.borrow(), 1);
        e.now += NEXT_HOP_MAX_AGE_JIFFIES;
        assert!(matches!(
            lookup(&e, &server(), 1, 100),
            Route::Via { ifindex: 9, .. }
        ));
        assert_eq!(*e.fib_calls.borrow(), 2, "aged out");
    }

    #[test]
    fn the_cache_is_keyed_by_server_and_ingress() {
        let e = env();
        lookup(&e, &server(), 1, 100);
        let mut other = server();
        other.generation = 6;
        lookup(&e, &other, 1, 100);
        assert_eq!(*e.fib_calls.borrow(), 2, "another generation");
        other.addr[3] = 2;
        lookup(&e, &other, 1, 100);
        assert_eq!(*e.fib_calls.borrow(), 3, "another address");
        lookup(&e, &other, 2, 100);
        assert_eq!(*e.fib_calls.borrow(), 4, "another ingress");
    }

    #[test]
    fn failures_are_not_cached() {
        let e = env();
        *e.fib.borrow_mut() = Some((FIB_NO_NEIGH, params(4, 1500)));
        assert_eq!(
            lookup(&e, &server(), 1, 100),
            Route::Fail(Reason::DropNoNeighbour)
        );
        *e.fib.borrow_mut() = Some((FIB_FRAG_NEEDED, params(4, 1280)));
        assert_eq!(lookup(&e, &server(), 1, 2000), Route::TooBig { mtu: 1280 });
        *e.fib.borrow_mut() = None;
        assert_eq!(
            lookup(&e, &server(), 1, 100),
            Route::Fail(Reason::DropNoRoute)
        );
        assert_eq!(e.next_hops.borrow()[1], NextHop::default());
        assert_eq!(*e.fib_calls.borrow(), 3);
    }
}
