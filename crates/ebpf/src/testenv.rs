//! A host implementation of the pipeline's maps and helpers for unit tests, and frame
//! builders independent of the code under test (plain byte layouts from the RFCs).

use std::{cell::RefCell, collections::BTreeMap, vec::Vec};

use ricochet_common::{
    vip_filter, Counters, Event, FlowKey, FlowValue, NextHop, ServerValue, ServiceKey,
    ServiceValue, Settings, TokenBucket, VipFlags, VipKey, FAMILY_V4, FAMILY_V6,
};

use crate::{
    balance::{Env, Stats},
    encap::Random,
    flow::{InsertError, Table},
    icmp::Limiter,
    route::{Fib, FibParams, FIB_SUCCESS},
    service::Lookup,
};

/// The maps and helpers of one CPU, in memory.
#[derive(Default)]
pub struct TestEnv {
    pub vips: BTreeMap<VipKey, VipFlags>,
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    pub flows: RefCell<BTreeMap<[u8; 40], FlowValue>>,
    /// `insert_flow` fails with this error number when set.
    pub insert_error: Option<i32>,
    pub servers: Vec<ServerValue>,
    pub maglev: Vec<u32>,
    pub settings: Option<Settings>,
    pub next_hops: RefCell<Vec<NextHop>>,
    pub now: u64,
    /// What `fib_lookup` answers: the result and the parameters it writes back.
    pub fib: RefCell<Option<(i64, FibParams)>>,
    pub fib_calls: RefCell<u32>,
    pub service_stats: RefCell<BTreeMap<u32, Counters>>,
    pub server_stats: RefCell<BTreeMap<u32, Counters>>,
    pub events: RefCell<BTreeMap<&'static str, u64>>,
    pub now_ns: u64,
    pub bucket: RefCell<TokenBucket>,
    /// What `flow_clock` answers (`FlowValue::seen` units).
    pub flow_clock: u32,
    /// What `prandom_u32` answers; `None`: 0x5eed_1d00 (not a flow-table sample).
    pub prandom: Option<u32>,
    /// Hash-map lookups made so far (`VIPS` and `SERVICES`; the filter is an array).
    pub hash_lookups: RefCell<u32>,
}

pub fn key_bytes(k: &FlowKey) -> [u8; 40] {
    let mut b = [0u8; 40];
    b[..16].copy_from_slice(&k.src);
    b[16..32].copy_from_slice(&k.dst);
    b[32..34].copy_from_slice(&k.sport);
    b[34..36].copy_from_slice(&k.dport);
    b[36] = k.proto;
    b[37] = k.family;
    b[38..].copy_from_slice(&k._pad);
    b
}

/// 16-byte map form of an address.
pub fn addr16(a: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..a.len()].copy_from_slice(a);
    out
}

impl TestEnv {
    pub fn add_vip(&mut self, addr: &[u8], flags: VipFlags) {
        let family = if addr.len() == 4 {
            FAMILY_V4
        } else {
            FAMILY_V6
        };
        self.vips
            .insert(VipKey::from_raw(addr16(addr), family), flags);
    }
    pub fn add_service(&mut self, addr: &[u8], proto: u8, port: u16, value: ServiceValue) {
        let family = if addr.len() == 4 {
            FAMILY_V4
        } else {
            FAMILY_V6
        };
        self.services.insert(
            ServiceKey {
                addr: addr16(addr),
                port: port.to_be_bytes(),
                proto,
                family,
            },
            value,
        );
    }
    pub fn event(&self, e: Event) -> u64 {
        self.events.borrow().get(e.name()).copied().unwrap_or(0)
    }
}

/// The VIP filter's word `index` for the VIPs `vips`, as the engine writes it.
pub fn filter_word<'a>(vips: impl IntoIterator<Item = &'a VipKey>, index: u32) -> u64 {
    let mut words = [0u64; vip_filter::WORDS as usize];
    for k in vips {
        vip_filter::set(&mut words, &k.addr, k.family);
    }
    words.get(index as usize).copied().unwrap_or(0)
}

/// An IPv4 address other than `vip` whose filter bit is `vip`'s: a false positive of
/// the filter whenever `vip` is a VIP (the first of 10.0.0.0/8 in order).
pub fn filter_twin_v4(vip: &[u8; 4]) -> [u8; 4] {
    let want = vip_filter::bit_v4(*vip);
    (0x0a00_0000u32..0x0b00_0000)
        .map(u32::to_be_bytes)
        .find(|a| a != vip && vip_filter::bit_v4(*a) == want)
        .expect("10.0.0.0/8 has 2^24 addresses for 2^16 bits")
}

/// An IPv6 address other than `vip` whose filter bit is `vip`'s (its last two bytes
/// changed).
pub fn filter_twin_v6(vip: &[u8; 16]) -> [u8; 16] {
    let want = vip_filter::bit_v6(vip);
    (0..=u16::MAX)
        .map(|x| {
            let mut a = *vip;
            a[14..].copy_from_slice(&x.to_be_bytes());
            a
        })
        .chain((0..=u16::MAX).map(|x| {
            let mut a = *vip;
            a[12..14].copy_from_slice(&x.to_be_bytes());
            a[14] ^= 0x80;
            a
        }))
        .find(|a| a != vip && vip_filter::bit_v6(a) == want)
        .expect("a twin among 2^17 neighbours")
}

impl Lookup for TestEnv {
    fn vip_filter_word(&self, index: u32) -> u64 {
        filter_word(self.vips.keys(), index)
    }
    fn vip_flags(&self, key: &VipKey) -> Option<VipFlags> {
        *self.hash_lookups.borrow_mut() += 1;
        self.vips.get(key).copied()
    }
    fn service(&self, key: &ServiceKey) -> Option<ServiceValue> {
        *self.hash_lookups.borrow_mut() += 1;
        self.services.get(key).copied()
    }
}

impl Table for TestEnv {
    fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        let mut flows = self.flows.borrow_mut();
        let f = flows.get_mut(&key_bytes(key))?;
        f.seen = self.flow_clock;
        Some(*f)
    }
    fn insert_flow(&self, key: &FlowKey, value: &FlowValue) -> Result<(), InsertError> {
        if let Some(e) = self.insert_error {
            return Err(InsertError(e));
        }
        self.flows.borrow_mut().insert(key_bytes(key), *value);
        Ok(())
    }
    fn server(&self, id: u32) -> Option<ServerValue> {
        self.servers.get(id as usize).copied()
    }
    fn maglev(&self, slot: u32) -> Option<u32> {
        self.maglev.get(slot as usize).copied()
    }
    fn flow_clock(&self) -> u32 {
        self.flow_clock
    }
}

impl Fib for TestEnv {
    fn now(&self) -> u64 {
        self.now
    }
    fn next_hop(&self, server_id: u32) -> Option<*mut NextHop> {
        let mut hops = self.next_hops.borrow_mut();
        hops.get_mut(server_id as usize).map(|h| h as *mut NextHop)
    }
    fn fib_lookup(&self, params: &mut FibParams) -> i64 {
        *self.fib_calls.borrow_mut() += 1;
        match *self.fib.borrow() {
            Some((rc, out)) => {
                if rc == FIB_SUCCESS || rc == crate::route::FIB_FRAG_NEEDED {
                    params.ifindex = out.ifindex;
                    params.tot_len_mtu = out.tot_len_mtu;
                    params.smac = out.smac;
                    params.dmac = out.dmac;
                    // A gateway: the kernel writes the next hop's address over `dst`.
                    if out.dst != [0; 16] {
                        params.dst = out.dst;
                    }
                }
                rc
            }
            None => 1, // BPF_FIB_LKUP_RET_BLACKHOLE: no route
        }
    }
}

impl Random for TestEnv {
    fn prandom_u32(&self) -> u32 {
        self.prandom.unwrap_or(0x5eed_1d00)
    }
}

impl Stats for TestEnv {
    fn count_service(&self, service_id: u32, bytes: u64, new_flow: bool) {
        let mut m = self.service_stats.borrow_mut();
        let c = m.entry(service_id).or_default();
        c.packets += 1;
        c.bytes += bytes;
        c.new_flows += new_flow as u64;
    }
    fn count_server(&self, server_id: u32, bytes: u64, new_flow: bool) {
        let mut m = self.server_stats.borrow_mut();
        let c = m.entry(server_id).or_default();
        c.packets += 1;
        c.bytes += bytes;
        c.new_flows += new_flow as u64;
    }
    fn count_event(&self, event: Event) {
        *self.events.borrow_mut().entry(event.name()).or_default() += 1;
    }
}

impl Limiter for TestEnv {
    fn now_ns(&self) -> u64 {
        self.now_ns
    }
    fn bucket(&self) -> Option<*mut TokenBucket> {
        Some(self.bucket.as_ptr())
    }
}

impl Env for TestEnv {
    fn settings(&self) -> Option<&Settings> {
        self.settings.as_ref()
    }
}

/// Internet checksum of `data` (RFC 1071), written out independently of `csum`.
pub fn inet_sum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += word as u64;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x1b];

/// Ethernet header (optionally one 802.1Q tag) of `ether_type`.
pub fn eth(vlan: Option<u16>, ether_type: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&LB_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    if let Some(tci) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

/// A TCP header (20 bytes, SYN) followed by `payload`.
pub fn tcp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

/// An IPv4 header (no options) of protocol `proto` around `l4`, DF set if `df`.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, df: bool, l4: &[u8]) -> Vec<u8> {
    let tot = (20 + l4.len()) as u16;
    let mut h = std::vec![0x45, 0];
    h.extend_from_slice(&tot.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&(if df { 0x4000u16 } else { 0 }).to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = inet_sum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(l4);
    h
}

/// An IPv6 header with next header `next` around `payload`.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = std::vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

/// Headroom of the host frames: room for the outer and ICMP headers.
/// What a successful `bpf_fib_lookup` writes back: the egress, the route's MTU and the
/// next hop's MACs (the inputs are not looked at by the code under test).
pub fn fib_answer(ifindex: u32, mtu: u16, smac: [u8; 6], dmac: [u8; 6]) -> crate::route::FibParams {
    crate::route::FibParams {
        family: 0,
        l4_protocol: 0,
        sport: 0,
        dport: 0,
        tot_len_mtu: mtu,
        ifindex,
        tos_flowinfo: 0,
        src: [0; 16],
        dst: [0; 16],
        vlan_proto: 0,
        vlan_tci: 0,
        smac,
        dmac,
    }
}

pub const HEADROOM: usize = 256;

/// A buffer holding `frame` after [`HEADROOM`] bytes, with 256 bytes of tailroom.
pub fn buffer(frame: &[u8]) -> Vec<u8> {
    let mut b = std::vec![0u8; HEADROOM + frame.len() + 256];
    b[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    b
}
