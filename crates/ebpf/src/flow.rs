//! The flow table (`FLOWS`) and the Maglev pick: a flow keeps the server recorded for
//! it while that server's slot still holds it; a new flow is hashed onto its service's
//! Maglev table (`MAGLEV`, server ids into `SERVERS`).

use ricochet_common::{
    hash::client_hash, Event, FlowKey, FlowValue, ServerState, ServerValue, ServiceFlags,
    ServiceValue,
};

use crate::{balance::Stats, headers::IPPROTO_TCP, parse::Parsed};

/// `FLOWS` rejected an insert (the kernel's error number, negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsertError(pub i32);

/// The maps of flows, servers and Maglev tables.
pub trait Table {
    /// The flow's entry in `FLOWS`.
    fn flow(&self, key: &FlowKey) -> Option<FlowValue>;
    /// Records a new flow in `FLOWS`.
    fn insert_flow(&self, key: &FlowKey, value: &FlowValue) -> Result<(), InsertError>;
    /// Slot `id` of `SERVERS`.
    fn server(&self, id: u32) -> Option<ServerValue>;
    /// Slot `slot` of `MAGLEV`: a server id.
    fn maglev(&self, slot: u32) -> Option<u32>;
}

/// The server a packet goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    pub server_id: u32,
    pub server: ServerValue,
    /// Picked from the Maglev table: the flow is to be recorded once forwarded.
    pub new_flow: bool,
}

/// The packet's `FLOWS` key.
#[inline(always)]
pub fn flow_key(p: &Parsed) -> FlowKey {
    FlowKey::from_raw(p.src, p.dst, p.sport, p.dport, p.proto, p.family)
}

/// The server of this packet's flow: the one recorded in `FLOWS` while it still
/// holds its slot, or a new pick from the Maglev table (to be recorded by [`record`]
/// once the packet is forwarded: a flow whose first packet is dropped, for no route
/// yet or too big, must not leave a stale entry).
///
/// A TCP SYN (without ACK) is not looked up: it opens a new connection, so its flow is
/// hashed whatever the table holds, and recording it replaces any stale entry of the
/// five-tuple (a retransmitted SYN is hashed again onto the same server while the
/// Maglev table is unchanged). A TCP packet that is not a SYN and finds no usable entry
/// is counted as [`Event::FlowMissNonSyn`] before it is hashed.
#[inline(always)]
pub fn pick_server(
    maps: &(impl Table + Stats),
    p: &Parsed,
    svc: &ServiceValue,
    seed: u32,
) -> Option<Pick> {
    if !p.syn {
        if let Some(pick) = recorded(maps, p) {
            return Some(pick);
        }
        if p.proto == IPPROTO_TCP {
            maps.count_event(Event::FlowMissNonSyn);
        }
    }
    if svc.table_size == 0 {
        return None;
    }
    let with_port = svc.flags.contains(ServiceFlags::HASH_SRC_PORT);
    let h = client_hash(&p.src, p.sport, with_port, seed);
    let slot = svc.table_offset.wrapping_add(h % svc.table_size);
    let id = maps.maglev(slot)?;
    let s = maps.server(id)?;
    if s.state != ServerState::ACTIVE {
        return None;
    }
    Some(Pick {
        server_id: id,
        server: s,
        new_flow: true,
    })
}

/// The flow's recorded server, while its slot still holds it.
#[inline(always)]
fn recorded(maps: &impl Table, p: &Parsed) -> Option<Pick> {
    let f = maps.flow(&flow_key(p))?;
    let s = maps.server(f.server_id)?;
    if s.generation == f.generation && s.state != ServerState::FREE {
        Some(Pick {
            server_id: f.server_id,
            server: s,
            new_flow: false,
        })
    } else {
        None
    }
}

/// Records a new flow's server in `FLOWS`.
#[inline(always)]
pub fn record(maps: &impl Table, p: &Parsed, pick: &Pick) -> Result<(), InsertError> {
    let value = FlowValue {
        server_id: pick.server_id,
        generation: pick.server.generation,
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
            server: e.servers[other as usize],
            new_flow: true,
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

    const SVC: ServiceValue = ServiceValue {
        service_id: 0,
        table_offset: 3,
        table_size: 13,
        flags: ServiceFlags::EMPTY,
    };

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
            server: e.servers[other as usize],
            new_flow: true,
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
            server: e.servers[1],
            new_flow: true,
        };
        assert_eq!(record(&e, &parsed(1), &pick), Err(InsertError(-7)));
    }
}
