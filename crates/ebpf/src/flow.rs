//! The flow table (`FLOWS`) and the Maglev pick: a flow keeps the server recorded for
//! it while that server's slot still holds it; a new flow is hashed onto its service's
//! Maglev table (`MAGLEV`, server ids into `SERVERS`).
//!
//! The table matters only for flows whose recorded server differs from what the current
//! Maglev table picks, and such flows exist only after the service's table changed. So
//! an established TCP packet looks its flow up only while its service has
//! `ServiceFlags::CONSULT_FLOWS` (the engine sets it with every table change and clears
//! it once no live flow disagrees with the table); otherwise it takes the Maglev pick
//! (array reads that stay in cache), and one packet in `limits::FLOW_SAMPLE` looks up
//! anyway, to keep the flow's entry recent and recorded. Every new connection (SYN) is
//! recorded whatever the flag, so that a later change finds it.

use ricochet_common::{
    hash::{client_hash, client_hashes},
    limits::FLOW_SAMPLE,
    Event, FlowKey, FlowValue, ServerState, ServerValue, ServiceFlags, ServiceValue, FAMILY_V6,
};

use crate::{
    balance::Stats,
    encap::{Random, Tunnel},
    headers::IPPROTO_TCP,
    parse::Parsed,
    route::Destination,
};

/// `FLOWS` rejected an insert (the kernel's error number, negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsertError(pub i32);

/// The maps of flows, servers and Maglev tables.
pub trait Table {
    /// The flow's entry in `FLOWS`, its `seen` stamp set to [`Table::flow_clock`] (the
    /// kernel writes the stamp only when it changed, so that a hot entry's cache line
    /// stays clean).
    fn flow(&self, key: &FlowKey) -> Option<FlowValue>;
    /// Records a new flow in `FLOWS`.
    fn insert_flow(&self, key: &FlowKey, value: &FlowValue) -> Result<(), InsertError>;
    /// Slot `id` of `SERVERS`.
    fn server(&self, id: u32) -> Option<ServerValue>;
    /// Slot `slot` of `MAGLEV`: a server id.
    fn maglev(&self, slot: u32) -> Option<u32>;
    /// Now, as a `FlowValue::seen` stamp (`ricochet_common::flow_clock`).
    fn flow_clock(&self) -> u32;
}

/// The server a packet goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    pub server_id: u32,
    pub server: Destination,
    /// Picked from the Maglev table for a flow to be recorded once forwarded (a new
    /// connection, or a flow whose lookup missed).
    pub new_flow: bool,
    /// The service's encapsulation.
    pub tunnel: Tunnel,
    /// `client_hash` of the packet's client with its port, when the pick computed it
    /// (a Maglev pick of a service hashing on the port): what the IPv6 flow label and the
    /// GUE source port are made of, so that they need not hash again.
    pub port_hash: Option<u32>,
}

/// The packet's `FLOWS` key.
#[inline(always)]
pub fn flow_key(p: &Parsed) -> FlowKey {
    FlowKey::from_raw(p.src, p.dst, p.sport, p.dport, p.proto, p.family)
}

/// Whether this packet is one of the [`FLOW_SAMPLE`] that look up while the flow table
/// is not consulted (the top bits of a random number: the low ones are the IPv4 ID's).
#[inline(always)]
fn sampled(maps: &impl Random) -> bool {
    maps.prandom_u32() < u32::MAX / FLOW_SAMPLE
}

/// The server of this packet's flow (to be recorded by [`record`] once the packet is
/// forwarded when `new_flow`: a flow whose first packet is dropped, for no route yet or
/// too big, must not leave a stale entry).
///
/// - A TCP SYN (without ACK) is not looked up: it opens a new connection, so its flow
///   is hashed whatever the table holds, and recording it replaces any stale entry of
///   the five-tuple (a retransmitted SYN is hashed again onto the same server while the
///   Maglev table is unchanged).
/// - Any other packet of a service with `CONSULT_FLOWS`, and every UDP packet (no SYN
///   tells a UDP flow's first packet, so it is always looked up): the server recorded
///   in `FLOWS` while it still holds its slot, else a new pick to record.
/// - Any other TCP packet: the Maglev pick, not recorded, except one in
///   [`FLOW_SAMPLE`], which looks up (refreshing the entry) and records the pick if it
///   missed. A sampled hit still goes to the pick: while the flag is clear the two
///   agree, and every packet of a flow must go one way.
///
/// A TCP packet that is not a SYN, looked up and found no usable entry is counted as
/// [`Event::FlowMissNonSyn`] before it is hashed.
#[inline(always)]
pub fn pick_server(
    maps: &(impl Table + Stats + Random),
    p: &Parsed,
    svc: &ServiceValue,
    seed: u32,
) -> Option<Pick> {
    let chosen = choose(maps, p, svc, seed);
    if chosen & CHOSEN == 0 {
        return None;
    }
    let server_id = (chosen >> ID_SHIFT) as u32 & ID_MASK;
    let server = maps.server(server_id)?;
    if chosen & NEEDS_ACTIVE != 0 && server.state != ServerState::ACTIVE {
        return None;
    }
    Some(Pick {
        server_id,
        server: (&server).into(),
        new_flow: chosen & NEW_FLOW != 0,
        tunnel: Tunnel::of(svc),
        port_hash: (chosen & PORT_HASH != 0).then_some(chosen as u32),
    })
}

/// [`choose`]'s answer: the low 32 bits are the port hash (with [`PORT_HASH`]), the
/// server id sits at [`ID_SHIFT`], and the flags above it.
const ID_SHIFT: u32 = 32;
const ID_MASK: u32 = 0xffff;
const _: () = assert!(ricochet_common::limits::MAX_SERVERS - 1 <= ID_MASK);
/// [`choose`]'s answer has a server.
const CHOSEN: u64 = 1 << 48;
/// [`choose`]'s server is a new pick, to be recorded.
const NEW_FLOW: u64 = 1 << 49;
/// The low 32 bits are `client_hash` with the port ([`Pick::port_hash`]).
const PORT_HASH: u64 = 1 << 50;
/// A Maglev pick: the server must be `ACTIVE` ([`pick_server`] reads its slot, so that
/// the slot is read once).
const NEEDS_ACTIVE: u64 = 1 << 51;

/// [`pick_server`]'s decision, as one register (see [`ID_SHIFT`]; 0 for none). Inlined:
/// the common path (a hash and a Maglev slot) makes no call; the flow-table lookup is
/// [`recorded`]'s subprogram, so that its frame (the flow key) is not part of `balance`'s,
/// which already holds the encapsulations' (the deepest call chain's frames must fit the
/// verifier's 512 bytes).
#[inline(always)]
fn choose(maps: &(impl Table + Stats + Random), p: &Parsed, svc: &ServiceValue, seed: u32) -> u64 {
    let mut new_flow = NEW_FLOW;
    if !p.syn {
        let consult = p.proto != IPPROTO_TCP || svc.flags.contains(ServiceFlags::CONSULT_FLOWS);
        if consult || sampled(maps) {
            let found = recorded(maps, p);
            if found & CHOSEN != 0 {
                if consult {
                    return found;
                }
                new_flow = 0;
            }
        } else {
            new_flow = 0;
        }
    }
    if svc.table_size == 0 {
        return 0;
    }
    let with_port = svc.flags.contains(ServiceFlags::HASH_SRC_PORT);
    // The IPv6 flow label and the GUE source port are the port hash: computed here with
    // the slot's hash, which shares its address part.
    let port_hash_needed = p.family == FAMILY_V6 || svc.flags.contains(ServiceFlags::ENCAP_GUE);
    let (h, hash) = if with_port {
        let h = client_hash(&p.src, p.sport, true, seed);
        (h, PORT_HASH | h as u64)
    } else if port_hash_needed {
        let (h, hp) = client_hashes(&p.src, p.sport, seed);
        (h, PORT_HASH | hp as u64)
    } else {
        (client_hash(&p.src, p.sport, false, seed), 0)
    };
    let slot = svc.table_offset.wrapping_add(h % svc.table_size);
    let Some(id) = maps.maglev(slot) else {
        return 0;
    };
    CHOSEN | NEEDS_ACTIVE | new_flow | hash | (id as u64 & ID_MASK as u64) << ID_SHIFT
}

/// The flow's recorded server while its slot still holds it, as [`choose`] answers
/// ([`CHOSEN`] and the id; 0 for none). A TCP packet that finds none is counted as
/// [`Event::FlowMissNonSyn`] (an ICMP error about a flow is no packet of it: its miss
/// is not one).
#[inline(never)]
fn recorded(maps: &(impl Table + Stats), p: &Parsed) -> u64 {
    let found = maps
        .flow(&flow_key(p))
        .and_then(|f| Some((f, maps.server(f.server_id)?)))
        .filter(|(f, s)| s.generation == f.generation && s.state != ServerState::FREE);
    match found {
        Some((f, _)) => CHOSEN | (f.server_id as u64 & ID_MASK as u64) << ID_SHIFT,
        None => {
            if p.proto == IPPROTO_TCP && !p.icmp {
                maps.count_event(Event::FlowMissNonSyn);
            }
            0
        }
    }
}

/// Records a new flow's server in `FLOWS`. A subprogram, as [`recorded`] is: the flow
/// key it builds stays out of `balance`'s frame.
#[inline(never)]
pub fn record(maps: &impl Table, p: &Parsed, pick: &Pick) -> Result<(), InsertError> {
    let value = FlowValue {
        server_id: pick.server_id,
        generation: pick.server.generation,
        seen: maps.flow_clock(),
    };
    maps.insert_flow(&flow_key(p), &value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testenv::{addr16, key_bytes, TestEnv};
    use ricochet_common::FAMILY_V4;
    use std::{vec, vec::Vec};

    fn parsed(sport: u16) -> Parsed {
        Parsed {
            l3_off: 14,
            frame_len: 60,
            family: FAMILY_V4,
            proto: 6,
            ip_len: 40,
            src: addr16(&[192, 168, 11, 2]),
            dst: addr16(&[192, 168, 35, 241]),
            sport: sport.to_be_bytes(),
            dport: 80u16.to_be_bytes(),
            syn: false,
            icmp: false,
        }
    }

    fn syn(sport: u16) -> Parsed {
        Parsed {
            syn: true,
            ..parsed(sport)
        }
    }

    #[test]
    fn a_syn_is_hashed_without_a_lookup_and_replaces_a_recorded_flow() {
        let e = env();
        let p = parsed(7);
        let hashed = pick_server(&e, &syn(7), &SVC, 9).unwrap();
        assert!(hashed.new_flow);
        let other = 1 + hashed.server_id % 4;
        let recorded = Pick {
            server_id: other,
            server: (&e.servers[other as usize]).into(),
            new_flow: true,
            tunnel: Tunnel::IpInIp,
            port_hash: None,
        };
        record(&e, &p, &recorded).unwrap();
        // A data segment keeps the recorded server; a SYN of the same five-tuple does not
        // read the table and goes to its hash slot.
        assert_eq!(pick_server(&e, &p, &SVC, 9).unwrap().server_id, other);
        let again = pick_server(&e, &syn(7), &SVC, 9).unwrap();
        assert_eq!((again.server_id, again.new_flow), (hashed.server_id, true));
        // Neither was a non-SYN miss.
        assert_eq!(e.event(Event::FlowMissNonSyn), 0);
    }

    #[test]
    fn only_tcp_non_syn_misses_are_counted() {
        let e = env();
        // A data segment of an unknown flow: a miss; a SYN: none; UDP: none.
        assert!(pick_server(&e, &parsed(1), &SVC, 9).unwrap().new_flow);
        assert_eq!(e.event(Event::FlowMissNonSyn), 1);
        pick_server(&e, &syn(2), &SVC, 9).unwrap();
        let udp = Parsed {
            proto: 17,
            ..parsed(3)
        };
        pick_server(&e, &udp, &SVC, 9).unwrap();
        assert_eq!(e.event(Event::FlowMissNonSyn), 1);
        // The first packet of a flow that is then recorded is a miss, the next one not.
        let p = parsed(4);
        let pick = pick_server(&e, &p, &SVC, 9).unwrap();
        record(&e, &p, &pick).unwrap();
        assert!(!pick_server(&e, &p, &SVC, 9).unwrap().new_flow);
        assert_eq!(e.event(Event::FlowMissNonSyn), 2);
    }

    #[test]
    fn flow_key_is_the_five_tuple_with_zero_padding() {
        let p = parsed(50412);
        let k = flow_key(&p);
        assert_eq!(
            k,
            FlowKey {
                src: p.src,
                dst: p.dst,
                sport: p.sport,
                dport: p.dport,
                proto: 6,
                family: FAMILY_V4,
                _pad: [0; 2],
            }
        );
        assert_eq!(&key_bytes(&k)[36..], &[6, FAMILY_V4, 0, 0]);
    }

    /// Servers 1..=4 active, a 13-slot table naming them in turn.
    fn env() -> TestEnv {
        let mut maglev = vec![7; 3];
        maglev.extend((0..13).map(|i| 1 + i % 4));
        TestEnv {
            servers: (0..5)
                .map(|i| ServerValue {
                    state: if i == 0 {
                        ServerState::FREE
                    } else {
                        ServerState::ACTIVE
                    },
                    generation: 100 + i,
                    ..Default::default()
                })
                .collect(),
            maglev,
            ..Default::default()
        }
    }

    /// A service whose flow table is consulted (a table change is being carried).
    const SVC: ServiceValue = ServiceValue {
        service_id: 0,
        table_offset: 3,
        table_size: 13,
        flags: ServiceFlags::CONSULT_FLOWS,
        gue_port: [0, 0],
    };
    /// The same service with the flag clear (no live flow disagrees with its table).
    const CLEAR: ServiceValue = ServiceValue {
        flags: ServiceFlags::EMPTY,
        ..SVC
    };
    /// A `prandom_u32` answer that samples (the highest that does) and one that does not.
    const SAMPLED: u32 = u32::MAX / FLOW_SAMPLE - 1;
    const NOT_SAMPLED: u32 = u32::MAX / FLOW_SAMPLE;

    /// Records `p`'s flow on a server other than its Maglev pick: the pick's id and the
    /// other's.
    fn record_elsewhere(e: &TestEnv, p: &Parsed) -> (u32, u32) {
        let hashed = pick_server(e, &Parsed { syn: true, ..*p }, &SVC, 9).unwrap();
        let other = 1 + hashed.server_id % 4;
        let moved = Pick {
            server_id: other,
            server: (&e.servers[other as usize]).into(),
            new_flow: true,
            tunnel: Tunnel::IpInIp,
            port_hash: None,
        };
        record(e, p, &moved).unwrap();
        (hashed.server_id, other)
    }

    #[test]
    fn with_the_flag_clear_established_packets_take_the_maglev_pick_unrecorded() {
        let mut e = env();
        e.prandom = Some(NOT_SAMPLED);
        let p = parsed(7);
        let (hashed, _other) = record_elsewhere(&e, &p);
        let before = e.flows.borrow().clone();
        e.flow_clock = 50;
        // The recorded (disagreeing) entry is not read: the pick, nothing recorded, no
        // miss counted, the entry's stamp untouched.
        let pick = pick_server(&e, &p, &CLEAR, 9).unwrap();
        assert_eq!((pick.server_id, pick.new_flow), (hashed, false));
        // An unknown flow likewise: no record, no miss (a spoofed ACK leaves nothing).
        let unknown = pick_server(&e, &parsed(8), &CLEAR, 9).unwrap();
        assert!(!unknown.new_flow);
        assert_eq!(*e.flows.borrow(), before);
        assert_eq!(e.event(Event::FlowMissNonSyn), 0);
        // With the flag set the same packet follows its entry.
        assert_ne!(pick_server(&e, &p, &SVC, 9).unwrap().server_id, hashed);
    }

    #[test]
    fn a_sampled_packet_refreshes_its_entry_or_records_it_again() {
        let mut e = env();
        e.prandom = Some(SAMPLED);
        e.flow_clock = 10;
        let p = parsed(7);
        let first = pick_server(&e, &syn(7), &CLEAR, 9).unwrap();
        assert!(first.new_flow, "a SYN is recorded whatever the flag");
        record(&e, &p, &first).unwrap();
        // A sampled hit: the pick (it agrees), not recorded again, the stamp refreshed.
        e.flow_clock = 20;
        let hit = pick_server(&e, &p, &CLEAR, 9).unwrap();
        assert_eq!((hit.server_id, hit.new_flow), (first.server_id, false));
        let key = key_bytes(&flow_key(&p));
        assert_eq!(e.flows.borrow()[&key].seen, 20);
        // An evicted flow's sampled packet misses: counted, and the pick is to be
        // recorded again, stamped now.
        e.flows.borrow_mut().clear();
        e.flow_clock = 30;
        let miss = pick_server(&e, &p, &CLEAR, 9).unwrap();
        assert_eq!((miss.server_id, miss.new_flow), (first.server_id, true));
        assert_eq!(e.event(Event::FlowMissNonSyn), 1);
        record(&e, &p, &miss).unwrap();
        assert_eq!(e.flows.borrow()[&key].seen, 30);
    }

    #[test]
    fn a_sampled_hit_that_disagrees_still_goes_to_the_pick() {
        // Every packet of a flow goes one way: the sample must not split it.
        let mut e = env();
        e.prandom = Some(SAMPLED);
        let p = parsed(7);
        let (hashed, other) = record_elsewhere(&e, &p);
        let pick = pick_server(&e, &p, &CLEAR, 9).unwrap();
        assert_eq!((pick.server_id, pick.new_flow), (hashed, false));
        // With the flag set, the entry wins.
        let consulted = pick_server(&e, &p, &SVC, 9).unwrap();
        assert_eq!((consulted.server_id, consulted.new_flow), (other, false));
    }

    #[test]
    fn udp_is_looked_up_whatever_the_flag() {
        // No SYN marks a UDP flow's first packet: it is recorded by its lookup's miss.
        let mut e = env();
        e.prandom = Some(NOT_SAMPLED);
        let udp = Parsed {
            proto: 17,
            ..parsed(3)
        };
        let first = pick_server(&e, &udp, &CLEAR, 9).unwrap();
        assert!(first.new_flow);
        let other = 1 + first.server_id % 4;
        let moved = Pick {
            server_id: other,
            server: (&e.servers[other as usize]).into(),
            new_flow: true,
            tunnel: Tunnel::IpInIp,
            port_hash: None,
        };
        record(&e, &udp, &moved).unwrap();
        assert_eq!(pick_server(&e, &udp, &CLEAR, 9).unwrap().server_id, other);
        assert_eq!(
            e.event(Event::FlowMissNonSyn),
            0,
            "UDP misses are not counted"
        );
    }

    #[test]
    fn a_lookup_stamps_the_entry() {
        let mut e = env();
        let p = parsed(7);
        e.flow_clock = 5;
        let pick = pick_server(&e, &p, &SVC, 9).unwrap();
        record(&e, &p, &pick).unwrap();
        let key = key_bytes(&flow_key(&p));
        assert_eq!(e.flows.borrow()[&key].seen, 5);
        e.flow_clock = 6;
        pick_server(&e, &p, &SVC, 9).unwrap();
        assert_eq!(e.flows.borrow()[&key].seen, 6);
    }

    #[test]
    fn new_flows_take_their_hash_slot() {
        let e = env();
        for sport in [1u16, 2, 50412] {
            let p = parsed(sport);
            let slot = 3 + client_hash(&p.src, p.sport, false, 9) % 13;
            let pick = pick_server(&e, &p, &SVC, 9).unwrap();
            assert_eq!(pick.server_id, e.maglev[slot as usize]);
            assert!(pick.new_flow);
        }
        // Without the port in the hash, every port of a client lands on one server.
        let ids: Vec<u32> = (1..50u16)
            .map(|sp| pick_server(&e, &parsed(sp), &SVC, 9).unwrap().server_id)
            .collect();
        assert!(ids.iter().all(|&i| i == ids[0]));
        let with_port = ServiceValue {
            flags: ServiceFlags::HASH_SRC_PORT,
            ..SVC
        };
        let ids: Vec<u32> = (1..50u16)
            .map(|sp| {
                pick_server(&e, &parsed(sp), &with_port, 9)
                    .unwrap()
                    .server_id
            })
            .collect();
        assert!(
            ids.iter().any(|&i| i != ids[0]),
            "the port spreads a client's flows"
        );
    }

    #[test]
    fn recorded_flows_win_until_their_server_leaves() {
        let mut e = env();
        let p = parsed(7);
        let first = pick_server(&e, &p, &SVC, 9).unwrap();
        let other = 1 + first.server_id % 4;
        let moved = Pick {
            server_id: other,
            server: (&e.servers[other as usize]).into(),
            new_flow: true,
            tunnel: Tunnel::IpInIp,
            port_hash: None,
        };
        record(&e, &p, &moved).unwrap();
        let again = pick_server(&e, &p, &SVC, 9).unwrap();
        assert_eq!((again.server_id, again.new_flow), (other, false));
        e.servers[other as usize].state = ServerState::DRAINING;
        assert_eq!(pick_server(&e, &p, &SVC, 9).unwrap().server_id, other);
        e.servers[other as usize].generation += 1;
        assert_eq!(
            pick_server(&e, &p, &SVC, 9).unwrap().server_id,
            first.server_id
        );
    }

    #[test]
    fn no_pick_from_an_empty_table_or_an_inactive_server() {
        let mut e = env();
        let empty = ServiceValue {
            table_size: 0,
            ..SVC
        };
        assert_eq!(pick_server(&e, &parsed(1), &empty, 9), None);
        for s in &mut e.servers {
            s.state = ServerState::DRAINING;
        }
        assert_eq!(pick_server(&e, &parsed(1), &SVC, 9), None);
        e.insert_error = Some(-7);
        let pick = Pick {
            server_id: 1,
            server: (&e.servers[1]).into(),
            new_flow: true,
            tunnel: Tunnel::IpInIp,
            port_hash: None,
        };
        assert_eq!(record(&e, &parsed(1), &pick), Err(InsertError(-7)));
    }
}
