//! The load balancer's pipeline: parse, find the service, pick the server, route,
//! encapsulate, or answer "too big". Generic over the packet context and the kernel
//! services ([`Env`]) so that it runs on the host with a [`crate::packet::HostPacket`]
//! and maps of the caller's.

use core::mem::MaybeUninit;

use ricochet_common::{Event, Reason, Settings, SettingsFlags, FAMILY_V4};

use crate::{
    encap::{encap_v4, encap_v6, forward_l2, Random, Tunnel},
    flow::{self, pick_server, Table},
    icmp::{self, Limiter},
    packet::XdpPacket,
    parse::{parse, Parsed},
    route::Fib,
    service::{find_service, Lookup},
    verdict::{Forward, Next},
};

/// Per-CPU counters the balancer moves besides the packet's [`Reason`].
pub trait Stats {
    /// One packet of `bytes` forwarded for service `service_id` (and a new flow).
    fn count_service(&self, service_id: u32, bytes: u64, new_flow: bool);
    /// One packet of `bytes` forwarded to server `server_id` (and a new flow).
    fn count_server(&self, server_id: u32, bytes: u64, new_flow: bool);
    /// Something went wrong that did not change the packet's fate (`EVENTS`).
    fn count_event(&self, event: Event);
}

/// Everything the pipeline reads and writes outside the packet: the maps and helpers.
pub trait Env: Lookup + Table + Fib + Random + Stats + Limiter {
    /// Entry 0 of `SETTINGS`.
    fn settings(&self) -> Option<&Settings>;
}

/// Runs the whole program on one packet: `Ok` when it is encapsulated towards a
/// server, otherwise the reason it stopped at (passed, dropped or answered with ICMP).
#[inline(always)]
pub fn run(ctx: &impl XdpPacket, env: &impl Env) -> Result<Forward, Reason> {
    // Not zeroed: `parse` writes it whole before it answers Ok, and it is read only then
    // (zeroing it cost a 56-byte memset, a byte loop in BPF, per packet).
    let mut p = MaybeUninit::<Parsed>::uninit();
    parse(ctx, env, &mut p)?;
    // SAFETY: parse initialised `p` (it answered Ok).
    let p = unsafe { p.assume_init_ref() };
    match balance(ctx, env, p)? {
        Next::Forward { ifindex } => Ok(Forward {
            ifindex,
            reason: if p.icmp {
                Reason::ForwardedIcmp
            } else {
                Reason::Forwarded
            },
        }),
        // No ICMP error about an ICMP error (RFC 1122 3.2.2).
        Next::TooBig { .. } if p.icmp => Err(Reason::DropTooBig),
        Next::TooBig { mtu } => Err(icmp::too_big(ctx, env, p, mtu as u16)),
    }
}

/// Finds the service and server and encapsulates: a subprogram whose frame is
/// released before the ICMP path runs.
#[inline(never)]
pub fn balance(ctx: &impl XdpPacket, env: &impl Env, p: &Parsed) -> Result<Next, Reason> {
    let svc = find_service(env, p)?;
    let settings = env.settings().ok_or(Reason::DropNoSource)?;
    let pick = pick_server(env, p, &svc, settings.hash_seed).ok_or(Reason::DropNoServer)?;
    let bytes = p.frame_len as u64;
    let next = if pick.tunnel == Tunnel::L2 {
        // The outer source is not sent, but which family may be served stays the
        // settings' say, as for the tunnels.
        let have = if p.family == FAMILY_V4 {
            SettingsFlags::HAVE_V4
        } else {
            SettingsFlags::HAVE_V6
        };
        if !settings.flags.contains(have) {
            return Err(Reason::DropNoSource);
        }
        forward_l2(ctx, env, p, settings, &pick)?
    } else if p.family == FAMILY_V4 {
        if !settings.flags.contains(SettingsFlags::HAVE_V4) {
            return Err(Reason::DropNoSource);
        }
        encap_v4(ctx, env, p, settings, &pick)?
    } else {
        if !settings.flags.contains(SettingsFlags::HAVE_V6) {
            return Err(Reason::DropNoSource);
        }
        encap_v6(ctx, env, p, settings, &pick)?
    };
    if let (Next::Forward { .. }, false) = (next, p.icmp) {
        // The packet goes out either way; a flow that could not be recorded is hashed
        // again on its next packet (same server while the Maglev table is unchanged).
        // An ICMP error is no packet of its flow: it records nothing and counts only as
        // its reason.
        if pick.new_flow && flow::record(env, p, &pick).is_err() {
            env.count_event(Event::FlowInsertFailed);
        }
        env.count_service(svc.service_id, bytes, pick.new_flow);
        env.count_server(pick.server_id, bytes, pick.new_flow);
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        headers::{ETH_P_IP, ETH_P_IPV6},
        packet::HostPacket,
        route::{FibParams, FIB_FRAG_NEEDED, FIB_NO_NEIGH, FIB_SUCCESS},
        testenv::*,
    };
    use ricochet_common::{
        hash::client_hash, FlowKey, NextHop, ServerState, ServerValue, ServiceFlags, ServiceValue,
        TokenBucket, VipFlags, FAMILY_V6,
    };
    use std::{vec, vec::Vec};

    const VIP4: [u8; 4] = [192, 168, 35, 241];
    const CLIENT4: [u8; 4] = [192, 168, 11, 2];
    const LB4: [u8; 4] = [192, 168, 33, 7];
    const WEB01: [u8; 4] = [192, 168, 33, 10];
    const VIP6: [u8; 16] = [0xfc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x35];
    const CLIENT6: [u8; 16] = [0xfc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11];
    const LB6: [u8; 16] = [0xfc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07];
    const WEB01_V6: [u8; 16] = [0xfc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
    const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
    const EGRESS_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xe0];
    const SEED: u32 = 0x1234_5678;

    /// One service per family, a Maglev table of 7 slots all naming server 1 (v4) or
    /// 2 (v6), a route to every server through ifindex 5; the flow table is consulted
    /// (`flow`'s tests cover the flag clear).
    fn env() -> TestEnv {
        let mut e = TestEnv::default();
        e.add_vip(&VIP4, VipFlags::EMPTY);
        e.add_vip(&VIP6, VipFlags::EMPTY);
        let svc = |service_id, table_offset| ServiceValue {
            service_id,
            table_offset,
            table_size: 7,
            flags: ServiceFlags::CONSULT_FLOWS,
            gue_port: [0, 0],
        };
        e.add_service(&VIP4, 6, 80, svc(3, 0));
        e.add_service(&VIP6, 6, 80, svc(4, 7));
        e.maglev = [vec![1; 7], vec![2; 7]].concat();
        e.servers = vec![
            ServerValue::default(),
            ServerValue {
                addr: addr16(&WEB01),
                family: FAMILY_V4,
                state: ServerState::ACTIVE,
                generation: 11,
                ..Default::default()
            },
            ServerValue {
                addr: WEB01_V6,
                family: FAMILY_V6,
                state: ServerState::ACTIVE,
                generation: 12,
                ..Default::default()
            },
        ];
        e.settings = Some(Settings {
            source_v4: LB4,
            source_v6: LB6,
            hash_seed: SEED,
            flags: SettingsFlags::HAVE_V4 | SettingsFlags::HAVE_V6,
            _reserved: 0,
        });
        e.next_hops = vec![NextHop::default(); 3].into();
        e.now = 1_000_000;
        e.now_ns = 5_000_000_000;
        *e.fib.borrow_mut() = Some((FIB_SUCCESS, fib_out(5, 1500)));
        e
    }

    fn fib_out(ifindex: u32, mtu: u16) -> FibParams {
        fib_answer(ifindex, mtu, EGRESS_MAC, SERVER_MAC)
    }

    fn syn4(payload: usize) -> Vec<u8> {
        let mut f = eth(None, ETH_P_IP);
        f.extend_from_slice(&ipv4(
            CLIENT4,
            VIP4,
            6,
            true,
            &tcp(50412, 80, &vec![0x61; payload]),
        ));
        f
    }

    /// [`syn4`] as a data segment of the established flow (ACK instead of SYN).
    fn ack4(payload: usize) -> Vec<u8> {
        let mut f = syn4(payload);
        f[14 + 20 + 13] = 0x10;
        f
    }

    fn syn6(payload: usize) -> Vec<u8> {
        let mut f = eth(None, ETH_P_IPV6);
        f.extend_from_slice(&ipv6(
            CLIENT6,
            VIP6,
            6,
            &tcp(50412, 80, &vec![0x61; payload]),
        ));
        f
    }

    /// Runs the pipeline on `frame` received on ifindex 1: the outcome and the bytes.
    fn run_frame(env: &TestEnv, frame: &[u8]) -> (Result<Forward, Reason>, Vec<u8>) {
        let mut buf = buffer(frame);
        let ctx = HostPacket::new(&mut buf, HEADROOM, frame.len(), 1);
        let r = run(&ctx, env);
        (r, ctx.bytes().to_vec())
    }

    #[test]
    fn ipv4_is_encapsulated_to_the_maglev_pick_and_recorded() {
        let e = env();
        let frame = syn4(10);
        let (r, out) = run_frame(&e, &frame);
        assert_eq!(
            r,
            Ok(Forward {
                ifindex: 5,
                reason: Reason::Forwarded
            })
        );
        // [server MAC][egress MAC][0800][outer IPv4][the frame's IP packet unchanged]
        assert_eq!(out.len(), frame.len() + 20);
        assert_eq!(&out[..6], &SERVER_MAC);
        assert_eq!(&out[6..12], &EGRESS_MAC);
        assert_eq!(&out[12..14], &[0x08, 0x00]);
        let outer = &out[14..34];
        assert_eq!(outer[0], 0x45);
        assert_eq!(
            u16::from_be_bytes([outer[2], outer[3]]) as usize,
            frame.len() - 14 + 20
        );
        assert_eq!(&outer[6..8], &[0x40, 0], "DF copied; ID 0 with DF");
        assert_eq!((outer[8], outer[9]), (64, 4));
        assert_eq!(&outer[12..16], &LB4);
        assert_eq!(&outer[16..20], &WEB01);
        assert_eq!(inet_sum(outer), 0, "outer checksum");
        assert_eq!(&out[34..], &frame[14..]);
        // The flow is recorded and counted as new.
        let key = FlowKey {
            src: addr16(&CLIENT4),
            dst: addr16(&VIP4),
            sport: 50412u16.to_be_bytes(),
            dport: 80u16.to_be_bytes(),
            proto: 6,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        let f = e.flows.borrow().get(&key_bytes(&key)).copied().unwrap();
        assert_eq!((f.server_id, f.generation), (1, 11));
        let svc = e.service_stats.borrow()[&3];
        assert_eq!(
            (svc.packets, svc.bytes, svc.new_flows),
            (1, frame.len() as u64, 1)
        );
        assert_eq!(e.server_stats.borrow()[&1].new_flows, 1);
        // The second packet follows the flow entry, not a new pick.
        run_frame(&e, &ack4(0)).0.unwrap();
        assert_eq!(e.service_stats.borrow()[&3].packets, 2);
        assert_eq!(e.service_stats.borrow()[&3].new_flows, 1);
        assert_eq!(e.event(Event::FlowInsertFailed), 0);
    }

    #[test]
    fn ipv6_is_encapsulated_with_the_flow_label() {
        let e = env();
        let frame = syn6(0);
        let (r, out) = run_frame(&e, &frame);
        assert_eq!(
            r,
            Ok(Forward {
                ifindex: 5,
                reason: Reason::Forwarded
            })
        );
        assert_eq!(&out[12..14], &[0x86, 0xdd]);
        let outer = &out[14..54];
        let label = client_hash(&CLIENT6, 50412u16.to_be_bytes(), true, SEED) & 0xfffff;
        assert_eq!(
            u32::from_be_bytes([outer[0], outer[1], outer[2], outer[3]]),
            6 << 28 | label
        );
        assert_eq!(
            u16::from_be_bytes([outer[4], outer[5]]) as usize,
            frame.len() - 14
        );
        assert_eq!((outer[6], outer[7]), (41, 64));
        assert_eq!(&outer[8..24], &LB6);
        assert_eq!(&outer[24..40], &WEB01_V6);
        assert_eq!(&out[54..], &frame[14..]);
    }

    #[test]
    fn the_flow_label_is_the_same_whether_hashed_or_found_in_the_table() {
        // The SYN is hashed (the label comes with the pick); the data segment finds the
        // flow in the table (the service consults it) and hashes for the label alone.
        let e = env();
        let (_, hashed) = run_frame(&e, &syn6(0));
        let mut ack = syn6(0);
        ack[14 + 40 + 13] = 0x10;
        let (r, found) = run_frame(&e, &ack);
        assert!(r.is_ok());
        assert_eq!(
            e.service_stats.borrow()[&4].new_flows,
            1,
            "the ACK hit the table"
        );
        assert_eq!(&hashed[14..18], &found[14..18]);
    }

    #[test]
    fn a_failed_flow_insert_forwards_and_is_counted() {
        let mut e = env();
        e.insert_error = Some(-12);
        assert_eq!(
            run_frame(&e, &syn4(0)).0,
            Ok(Forward {
                ifindex: 5,
                reason: Reason::Forwarded
            })
        );
        assert_eq!(e.event(Event::FlowInsertFailed), 1);
        assert!(e.flows.borrow().is_empty());
    }

    #[test]
    fn flows_follow_their_server_while_its_slot_holds_it() {
        let mut e = env();
        run_frame(&e, &syn4(0)).0.unwrap();
        // Draining keeps the flow; the Maglev table no longer names the server.
        e.servers[1].state = ServerState::DRAINING;
        e.maglev[..7].copy_from_slice(&[0; 7]);
        assert_eq!(
            run_frame(&e, &ack4(0)).0,
            Ok(Forward {
                ifindex: 5,
                reason: Reason::Forwarded
            })
        );
        // A SYN of the same five-tuple opens a new connection: hashed, no server there.
        assert_eq!(run_frame(&e, &syn4(0)).0, Err(Reason::DropNoServer));
        // A new generation of the slot is another server: the flow is re-hashed, and
        // slot 0 (free) is no server.
        e.servers[1].generation = 99;
        assert_eq!(run_frame(&e, &ack4(0)).0, Err(Reason::DropNoServer));
        e.servers[1].generation = 11;
        e.servers[1].state = ServerState::FREE;
        assert_eq!(run_frame(&e, &ack4(0)).0, Err(Reason::DropNoServer));
        // The two data segments that found no usable entry were non-SYN misses.
        assert_eq!(e.event(Event::FlowMissNonSyn), 2);
    }

    #[test]
    fn dropped_packets_leave_no_flow_and_no_counts() {
        let e = env();
        *e.fib.borrow_mut() = Some((FIB_NO_NEIGH, fib_out(5, 1500)));
        assert_eq!(run_frame(&e, &syn4(0)).0, Err(Reason::DropNoNeighbour));
        *e.fib.borrow_mut() = None;
        assert_eq!(run_frame(&e, &syn4(0)).0, Err(Reason::DropNoRoute));
        assert!(e.flows.borrow().is_empty());
        assert!(e.service_stats.borrow().is_empty());
    }

    #[test]
    fn a_missing_source_address_drops_that_family_only() {
        let mut e = env();
        e.settings.as_mut().unwrap().flags = SettingsFlags::HAVE_V6;
        assert_eq!(run_frame(&e, &syn4(0)).0, Err(Reason::DropNoSource));
        assert!(run_frame(&e, &syn6(0)).0.is_ok());
        e.settings = None;
        assert_eq!(run_frame(&e, &syn6(0)).0, Err(Reason::DropNoSource));
    }

    #[test]
    fn too_big_ipv4_becomes_frag_needed_to_the_client() {
        let e = env();
        *e.fib.borrow_mut() = Some((FIB_FRAG_NEEDED, fib_out(5, 1400)));
        let frame = syn4(1400 - 40);
        let (r, out) = run_frame(&e, &frame);
        assert_eq!(r, Err(Reason::IcmpTooBig));
        // [client MAC][our MAC][0800][IPv4 VIP->client][ICMP 3/4 MTU][quote]
        assert_eq!(out.len(), 14 + 20 + 8 + 28);
        assert_eq!(&out[..6], &CLIENT_MAC);
        assert_eq!(&out[6..12], &LB_MAC);
        let ip = &out[14..34];
        assert_eq!(
            (ip[9], &ip[12..16], &ip[16..20]),
            (1, &VIP4[..], &CLIENT4[..])
        );
        assert_eq!(inet_sum(ip), 0);
        let icmp = &out[34..];
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(
            u16::from_be_bytes([icmp[6], icmp[7]]),
            1400 - 20,
            "MTU less the outer header"
        );
        assert_eq!(inet_sum(icmp), 0);
        assert_eq!(
            &icmp[8..],
            &frame[14..14 + 28],
            "quote: the header and 8 bytes"
        );
    }

    #[test]
    fn too_big_without_df_is_dropped() {
        let e = env();
        *e.fib.borrow_mut() = Some((FIB_FRAG_NEEDED, fib_out(5, 1400)));
        let mut frame = eth(None, ETH_P_IP);
        frame.extend_from_slice(&ipv4(CLIENT4, VIP4, 6, false, &tcp(1, 80, &[0; 1400])));
        assert_eq!(run_frame(&e, &frame).0, Err(Reason::DropTooBig));
    }

    #[test]
    fn too_big_ipv6_becomes_packet_too_big() {
        let e = env();
        *e.fib.borrow_mut() = Some((FIB_FRAG_NEEDED, fib_out(5, 1400)));
        let frame = syn6(1400);
        let (r, out) = run_frame(&e, &frame);
        assert_eq!(r, Err(Reason::IcmpTooBig));
        assert_eq!(out.len(), 14 + 40 + 8 + 48);
        let ip = &out[14..54];
        assert_eq!(
            (ip[6], &ip[8..24], &ip[24..40]),
            (58, &VIP6[..], &CLIENT6[..])
        );
        let icmp = &out[54..];
        assert_eq!((icmp[0], icmp[1]), (2, 0));
        assert_eq!(
            u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
            1400 - 40
        );
        // Checksum over the pseudo-header (RFC 8200 8.1) and the message.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&VIP6);
        pseudo.extend_from_slice(&CLIENT6);
        pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        pseudo.extend_from_slice(icmp);
        assert_eq!(inet_sum(&pseudo), 0);
        assert_eq!(&icmp[8..], &frame[14..14 + 48]);
    }

    /// A frame of `len` bytes of IP from `src` to the IPv4 VIP, DF set.
    fn big4_from(src: [u8; 4]) -> Vec<u8> {
        let mut f = eth(None, ETH_P_IP);
        f.extend_from_slice(&ipv4(src, VIP4, 6, true, &tcp(1, 80, &[0; 1400])));
        f
    }

    #[test]
    fn too_big_errors_are_rate_limited_per_cpu() {
        let e = env();
        *e.fib.borrow_mut() = Some((FIB_FRAG_NEEDED, fib_out(5, 1400)));
        // Two errors' worth of credit, and a stamp ahead of the clock: no refill.
        *e.bucket.borrow_mut() = TokenBucket {
            stamp_ns: u64::MAX,
            credit_ns: 2 * TokenBucket::COST_NS,
        };
        let frame = big4_from(CLIENT4);
        assert_eq!(run_frame(&e, &frame).0, Err(Reason::IcmpTooBig));
        assert_eq!(run_frame(&e, &frame).0, Err(Reason::IcmpTooBig));
        let (r, out) = run_frame(&e, &frame);
        assert_eq!(r, Err(Reason::DropTooBigRateLimited));
        assert_eq!(out, frame, "a limited packet is dropped as it came");
        // Time refills the bucket: one error's worth after COST_NS.
        *e.bucket.borrow_mut() = TokenBucket {
            stamp_ns: e.now_ns - TokenBucket::COST_NS,
            credit_ns: 0,
        };
        assert_eq!(run_frame(&e, &frame).0, Err(Reason::IcmpTooBig));
        assert_eq!(run_frame(&e, &frame).0, Err(Reason::DropTooBigRateLimited));
    }

    #[test]
    fn too_big_errors_never_go_to_bad_sources() {
        let e = env();
        *e.fib.borrow_mut() = Some((FIB_FRAG_NEEDED, fib_out(5, 1400)));
        *e.bucket.borrow_mut() = TokenBucket {
            stamp_ns: u64::MAX,
            credit_ns: TokenBucket::COST_NS,
        };
        for (src, reason) in [
            ([0, 0, 0, 0], Reason::DropTooBigUnspecifiedSource),
            ([255, 255, 255, 255], Reason::DropTooBigBroadcastSource),
            ([224, 0, 0, 1], Reason::DropTooBigMulticastSource),
            ([239, 255, 255, 250], Reason::DropTooBigMulticastSource),
        ] {
            let frame = big4_from(src);
            let (r, out) = run_frame(&e, &frame);
            assert_eq!(r, Err(reason), "{src:?}");
            assert_eq!(out, frame);
        }
        let mut ff02 = [0u8; 16];
        ff02[0] = 0xff;
        ff02[1] = 0x02;
        ff02[15] = 1;
        for (src, reason) in [
            ([0; 16], Reason::DropTooBigUnspecifiedSource),
            (ff02, Reason::DropTooBigMulticastSource),
        ] {
            let mut frame = eth(None, ETH_P_IPV6);
            frame.extend_from_slice(&ipv6(src, VIP6, 6, &tcp(1, 80, &[0; 1400])));
            assert_eq!(run_frame(&e, &frame).0, Err(reason), "{src:?}");
        }
        // None of them spent the one error left.
        assert_eq!(
            run_frame(&e, &big4_from(CLIENT4)).0,
            Err(Reason::IcmpTooBig)
        );
        assert_eq!(
            run_frame(&e, &big4_from(CLIENT4)).0,
            Err(Reason::DropTooBigRateLimited)
        );
    }

    #[test]
    fn a_failed_head_adjustment_drops() {
        let e = env();
        let frame = syn4(0);
        // No headroom for the outer header.
        let mut buf = frame.clone();
        let ctx = HostPacket::new(&mut buf, 0, frame.len(), 1);
        assert_eq!(run(&ctx, &e), Err(Reason::DropAdjustFailed));
        assert!(e.flows.borrow().is_empty());
    }
}
