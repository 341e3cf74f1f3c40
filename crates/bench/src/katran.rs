//! Katran (facebookincubator/katran) as a peer in the per-packet benchmark.
//!
//! The user builds Katran's XDP balancer object (`balancer.bpf.o`) from Katran's sources and
//! passes its path (`--katran-object`); nothing of Katran is part of this project. This module
//! loads that object with aya and provisions it the way Katran's userspace library does, so
//! that BPF_PROG_TEST_RUN runs it on the same frames and table states as Ricochet:
//!
//! - `vip_map`: one entry per VIP, port and protocol, with its `vip_num`;
//! - `reals`: the servers by index (index 0 is never used: Katran treats 0 as "no real");
//! - `ch_rings`: each VIP's ring of `RING_SIZE` real indices, at `vip_num * RING_SIZE`;
//! - `ctl_array[0]`: the MAC address of the default router (the encapsulated packet's
//!   destination MAC);
//! - `lru_mapping`: one LRU hash per CPU, created here (as Katran's `createLruMap` does for
//!   each forwarding core) and set in the array of maps at the CPU's index, so that the
//!   program never takes its small shared `fallback_cache`.
//!
//! Katran's build-time limits (`MAX_VIPS`, `RING_SIZE`) are read back from the object's map
//! sizes (`stats` has `2 * MAX_VIPS` entries, `ch_rings` `MAX_VIPS * RING_SIZE`), so an object
//! built with other defines is provisioned correctly. The layouts below are those of Katran's
//! `balancer_structs.h`; aya checks every map's key and value sizes against them on open.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{anyhow, ensure, Context as _};
use aya::maps::{Array, ArrayOfMaps, HashMap, Map, MapData, PerCpuArray};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::Pod;

/// The program's name in Katran's object (section `xdp`).
pub const PROGRAM: &str = "balancer_ingress";

// Indices into `stats` above MAX_VIPS (Katran's `balancer_consts.h`).
const LRU_CNTRS: u32 = 0;
const LRU_MISS_CNTR: u32 = 1;
const FALLBACK_LRU_CNTR: u32 = 3;
const XDP_TX_CNTR: u32 = 17;
const XDP_DROP_CNTR: u32 = 18;
const XDP_PASS_CNTR: u32 = 19;

/// `real_definition.flags`: the real is an IPv6 address.
const F_IPV6: u8 = 1 << 0;
const IPPROTO_TCP: u8 = 6;

/// `struct flow_key`: source and destination (IPv4 in the first four bytes), ports in
/// network order, protocol; three tail bytes of padding, zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub pad: [u8; 3],
}
const _: () = assert!(std::mem::size_of::<FlowKey>() == 40);

impl FlowKey {
    pub fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, proto: u8) -> Self {
        FlowKey {
            src: addr16(src),
            dst: addr16(dst),
            sport: sport.to_be_bytes(),
            dport: dport.to_be_bytes(),
            proto,
            pad: [0; 3],
        }
    }
}

/// `struct real_pos_lru`: the real's index and, for UDP, the last access time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealPosLru {
    pub pos: u32,
    pub pad: u32,
    pub atime: u64,
}
const _: () = assert!(std::mem::size_of::<RealPosLru>() == 16);

/// `struct vip_definition`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct VipDefinition {
    vip: [u8; 16],
    port: [u8; 2],
    proto: u8,
    pad: u8,
}
const _: () = assert!(std::mem::size_of::<VipDefinition>() == 20);

/// `struct vip_meta`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct VipMeta {
    flags: u32,
    vip_num: u32,
}

/// `struct real_definition`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RealDefinition {
    dst: [u8; 16],
    flags: u8,
    pad: [u8; 3],
}
const _: () = assert!(std::mem::size_of::<RealDefinition>() == 20);

/// `struct ctl_value` (a union of a u64, an ifindex and a MAC address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct CtlValue {
    mac: [u8; 6],
    pad: [u8; 2],
}

/// `struct lb_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbStats {
    pub v1: u64,
    pub v2: u64,
}

// SAFETY: all of these are repr(C) with explicit padding fields: every byte is a field and
// any bit pattern is a valid value.
unsafe impl Pod for FlowKey {}
unsafe impl Pod for RealPosLru {}
unsafe impl Pod for VipDefinition {}
unsafe impl Pod for VipMeta {}
unsafe impl Pod for RealDefinition {}
unsafe impl Pod for CtlValue {}
unsafe impl Pod for LbStats {}

fn addr16(addr: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out = a.octets(),
    }
    out
}

/// Katran's global counters that tell which way its runs went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub tx: u64,
    pub pass: u64,
    pub drop: u64,
    /// LRU misses of TCP SYNs (new connections).
    pub syn_misses: u64,
    /// LRU misses of TCP packets that are not SYNs (the flow was not in the table).
    pub non_syn_misses: u64,
    /// Packets that reached the connection table step (`LRU_CNTRS.v1`).
    pub lru_packets: u64,
    /// Runs that found no per-CPU LRU and used the shared fallback (must stay 0).
    pub fallback: u64,
}

impl Counters {
    /// `self - before`, counter by counter.
    pub fn since(&self, before: &Counters) -> Counters {
        Counters {
            tx: self.tx - before.tx,
            pass: self.pass - before.pass,
            drop: self.drop - before.drop,
            syn_misses: self.syn_misses - before.syn_misses,
            non_syn_misses: self.non_syn_misses - before.non_syn_misses,
            lru_packets: self.lru_packets - before.lru_packets,
            fallback: self.fallback - before.fallback,
        }
    }
}

/// What one test run returned.
pub struct RunResult {
    pub action: u32,
    pub out_len: usize,
    pub ns: u128,
}

/// Katran's balancer, loaded and provisioned.
pub struct Katran {
    ebpf: aya::Ebpf,
    /// One LRU per CPU (index = CPU), as set in `lru_mapping`.
    lrus: Vec<HashMap<MapData, FlowKey, RealPosLru>>,
    max_vips: u32,
    ring_size: u32,
    lru_size: u32,
    out: Vec<u8>,
}

impl Katran {
    /// Loads Katran's balancer object from `path` and gives every CPU an LRU connection
    /// table of `lru_size` entries.
    pub fn load(path: &Path, lru_size: u32) -> anyhow::Result<Katran> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the Katran object {}", path.display()))?;
        let mut ebpf = aya::Ebpf::load(&bytes).with_context(|| {
            format!(
                "loading the Katran object {} (is it Katran's balancer.bpf.o, built for the \
                 BPF target?)",
                path.display()
            )
        })?;
        for map in [
            "vip_map",
            "reals",
            "ch_rings",
            "ctl_array",
            "lru_mapping",
            "stats",
        ] {
            ensure!(
                ebpf.map(map).is_some(),
                "{} has no map `{map}`: it is not Katran's balancer object",
                path.display()
            );
        }
        let stats_entries = {
            let stats: PerCpuArray<&MapData, LbStats> = ebpf
                .map("stats")
                .expect("checked")
                .try_into()
                .context("Katran's stats map")?;
            stats.len()
        };
        let ring_entries = {
            let rings: Array<&MapData, u32> = ebpf
                .map("ch_rings")
                .expect("checked")
                .try_into()
                .context("Katran's ch_rings map")?;
            rings.len()
        };
        ensure!(
            stats_entries >= 2 && stats_entries.is_multiple_of(2),
            "Katran's stats map has {stats_entries} entries, not 2 * MAX_VIPS"
        );
        let max_vips = stats_entries / 2;
        ensure!(
            ring_entries.is_multiple_of(max_vips),
            "Katran's ch_rings ({ring_entries} entries) is not MAX_VIPS ({max_vips}) rings"
        );
        let ring_size = ring_entries / max_vips;

        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| {
                anyhow!(
                    "{} has no program `{PROGRAM}`: it is not Katran's balancer object",
                    path.display()
                )
            })?
            .try_into()
            .context("Katran's balancer_ingress is not an XDP program")?;
        prog.load()
            .context("loading Katran's balancer_ingress into the kernel (verifier)")?;

        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        let mut lrus = Vec::with_capacity(cpus);
        {
            let mut mapping: ArrayOfMaps<&mut MapData, HashMap<MapData, FlowKey, RealPosLru>> =
                ebpf.map_mut("lru_mapping")
                    .expect("checked above")
                    .try_into()
                    .context("Katran's lru_mapping is not an array of maps")?;
            for cpu in 0..cpus {
                let def = aya_obj::Map::new_from_params(
                    aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_LRU_HASH as u32,
                    std::mem::size_of::<FlowKey>() as u32,
                    std::mem::size_of::<RealPosLru>() as u32,
                    lru_size,
                    0,
                );
                let data = MapData::create(def, &format!("katran_lru{cpu}"), None)
                    .with_context(|| format!("creating Katran's LRU for CPU {cpu}"))?;
                let lru: HashMap<MapData, FlowKey, RealPosLru> =
                    Map::from_map_data(data)?.try_into()?;
                mapping
                    .set(cpu as u32, &lru, 0)
                    .with_context(|| format!("setting CPU {cpu}'s LRU in lru_mapping"))?;
                lrus.push(lru);
            }
        }
        Ok(Katran {
            ebpf,
            lrus,
            max_vips,
            ring_size,
            lru_size,
            out: Vec::new(),
        })
    }

    /// Entries of each CPU's LRU.
    pub fn lru_size(&self) -> u32 {
        self.lru_size
    }

    /// How many LRUs (one per possible CPU) are set in `lru_mapping`.
    pub fn lru_count(&self) -> usize {
        self.lrus.len()
    }

    /// Katran's `RING_SIZE` as built.
    pub fn ring_size(&self) -> u32 {
        self.ring_size
    }

    /// Adds a TCP VIP on `port` as `vip_num`, whose ring spreads its flows over `reals`
    /// (indices set with [`Katran::set_real`]) in turn, as Katran's Maglev ring would.
    pub fn add_tcp_vip(
        &mut self,
        vip: IpAddr,
        port: u16,
        vip_num: u32,
        reals: &[u32],
    ) -> anyhow::Result<()> {
        ensure!(vip_num < self.max_vips, "vip_num {vip_num} ≥ MAX_VIPS");
        ensure!(
            !reals.is_empty() && !reals.contains(&0),
            "a ring needs reals, and index 0 means none"
        );
        let mut vips: HashMap<&mut MapData, VipDefinition, VipMeta> =
            self.ebpf.map_mut("vip_map").expect("checked").try_into()?;
        let key = VipDefinition {
            vip: addr16(vip),
            port: port.to_be_bytes(),
            proto: IPPROTO_TCP,
            pad: 0,
        };
        vips.insert(key, VipMeta { flags: 0, vip_num }, 0)
            .with_context(|| format!("adding VIP {vip}:{port} to Katran's vip_map"))?;
        let mut ring: Array<&mut MapData, u32> =
            self.ebpf.map_mut("ch_rings").expect("checked").try_into()?;
        for i in 0..self.ring_size {
            ring.set(
                vip_num * self.ring_size + i,
                reals[i as usize % reals.len()],
                0,
            )
            .with_context(|| format!("writing slot {i} of VIP {vip}'s ring"))?;
        }
        Ok(())
    }

    /// Sets real `index` (≥ 1) to `addr`.
    pub fn set_real(&mut self, index: u32, addr: IpAddr) -> anyhow::Result<()> {
        ensure!(index != 0, "Katran's real index 0 means no real");
        let mut reals: Array<&mut MapData, RealDefinition> =
            self.ebpf.map_mut("reals").expect("checked").try_into()?;
        let value = RealDefinition {
            dst: addr16(addr),
            flags: if addr.is_ipv6() { F_IPV6 } else { 0 },
            pad: [0; 3],
        };
        reals
            .set(index, value, 0)
            .with_context(|| format!("writing real {index} ({addr})"))?;
        Ok(())
    }

    /// Sets the default router's MAC (`ctl_array[0]`).
    pub fn set_default_mac(&mut self, mac: [u8; 6]) -> anyhow::Result<()> {
        let mut ctl: Array<&mut MapData, CtlValue> = self
            .ebpf
            .map_mut("ctl_array")
            .expect("checked")
            .try_into()?;
        ctl.set(0, CtlValue { mac, pad: [0; 2] }, 0)
            .context("writing the default MAC to ctl_array")?;
        Ok(())
    }

    fn lru(&self, cpu: usize) -> anyhow::Result<&HashMap<MapData, FlowKey, RealPosLru>> {
        self.lrus
            .get(cpu)
            .ok_or_else(|| anyhow!("no Katran LRU for CPU {cpu}"))
    }

    /// Writes a flow into CPU `cpu`'s LRU, to real `real`, as Katran does for a TCP flow.
    pub fn insert_flow(&mut self, cpu: usize, key: &FlowKey, real: u32) -> anyhow::Result<()> {
        let lru = self
            .lrus
            .get_mut(cpu)
            .ok_or_else(|| anyhow!("no Katran LRU for CPU {cpu}"))?;
        lru.insert(
            key,
            RealPosLru {
                pos: real,
                ..Default::default()
            },
            0,
        )
        .context("writing a flow into Katran's LRU")?;
        Ok(())
    }

    /// The real a flow of CPU `cpu`'s LRU goes to, if the flow is there.
    pub fn lookup_flow(&self, cpu: usize, key: &FlowKey) -> anyhow::Result<Option<u32>> {
        match self.lru(cpu)?.get(key, 0) {
            Ok(v) => Ok(Some(v.pos)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("reading Katran's LRU"),
        }
    }

    /// Removes a flow from CPU `cpu`'s LRU; whether it was there.
    pub fn remove_flow(&mut self, cpu: usize, key: &FlowKey) -> anyhow::Result<bool> {
        let lru = self
            .lrus
            .get_mut(cpu)
            .ok_or_else(|| anyhow!("no Katran LRU for CPU {cpu}"))?;
        match lru.remove(key) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(e).context("removing a flow from Katran's LRU"),
        }
    }

    /// Flows in CPU `cpu`'s LRU (walked).
    pub fn flow_count(&self, cpu: usize) -> anyhow::Result<usize> {
        let mut n = 0;
        for key in self.lru(cpu)?.keys() {
            key.context("walking Katran's LRU")?;
            n += 1;
        }
        Ok(n)
    }

    /// Katran's global counters, summed over CPUs.
    pub fn counters(&self) -> anyhow::Result<Counters> {
        let stats: PerCpuArray<&MapData, LbStats> =
            self.ebpf.map("stats").expect("checked").try_into()?;
        let read = |index: u32| -> anyhow::Result<LbStats> {
            let values = stats
                .get(&(self.max_vips + index), 0)
                .with_context(|| format!("reading Katran's stats[MAX_VIPS + {index}]"))?;
            Ok(values.iter().fold(LbStats::default(), |a, v| LbStats {
                v1: a.v1 + v.v1,
                v2: a.v2 + v.v2,
            }))
        };
        let miss = read(LRU_MISS_CNTR)?;
        Ok(Counters {
            tx: read(XDP_TX_CNTR)?.v1,
            pass: read(XDP_PASS_CNTR)?.v1,
            drop: read(XDP_DROP_CNTR)?.v1,
            syn_misses: miss.v1,
            non_syn_misses: miss.v2,
            lru_packets: read(LRU_CNTRS)?.v1,
            fallback: read(FALLBACK_LRU_CNTR)?.v1,
        })
    }

    /// Runs Katran once (or `repeat` times in one call) on `frame`, received on `ifindex`.
    pub fn run(&mut self, frame: &[u8], ctx: &[u8], repeat: u32) -> anyhow::Result<RunResult> {
        self.out.resize(frame.len() + 256, 0);
        let prog: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .expect("checked at load")
            .try_into()?;
        let res = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut self.out),
                ctx_in: Some(ctx),
                repeat,
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN of Katran's balancer_ingress")?;
        Ok(RunResult {
            action: res.return_value,
            out_len: res.data_size_out as usize,
            ns: res.duration.as_nanos(),
        })
    }

    /// The output frame of the last run.
    pub fn output(&self, len: usize) -> &[u8] {
        &self.out[..len.min(self.out.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn flow_keys_are_laid_out_as_katran_reads_them() {
        let key = FlowKey::new(
            Ipv4Addr::new(10, 0, 0, 1).into(),
            40000,
            Ipv4Addr::new(192, 168, 35, 241).into(),
            80,
            IPPROTO_TCP,
        );
        // SAFETY: FlowKey is Pod: every byte is a field.
        let bytes: [u8; 40] = unsafe { std::mem::transmute(key) };
        assert_eq!(&bytes[..4], &[10, 0, 0, 1]);
        assert_eq!(&bytes[4..16], &[0; 12]);
        assert_eq!(&bytes[16..20], &[192, 168, 35, 241]);
        assert_eq!(&bytes[32..34], &40000u16.to_be_bytes());
        assert_eq!(&bytes[34..36], &[0, 80]);
        assert_eq!(bytes[36], 6);
        let v6 = FlowKey::new(
            Ipv6Addr::LOCALHOST.into(),
            1,
            Ipv6Addr::UNSPECIFIED.into(),
            2,
            17,
        );
        assert_eq!(v6.src[15], 1);
    }

    #[test]
    fn counters_subtract_field_by_field() {
        let a = Counters {
            tx: 10,
            pass: 5,
            drop: 1,
            syn_misses: 4,
            non_syn_misses: 2,
            lru_packets: 20,
            fallback: 0,
        };
        let b = Counters {
            tx: 3,
            pass: 1,
            drop: 1,
            syn_misses: 1,
            non_syn_misses: 2,
            lru_packets: 7,
            fallback: 0,
        };
        assert_eq!(
            a.since(&b),
            Counters {
                tx: 7,
                pass: 4,
                drop: 0,
                syn_misses: 3,
                non_syn_misses: 0,
                lru_packets: 13,
                fallback: 0,
            }
        );
    }

    #[test]
    fn a_missing_object_is_named() {
        let error = match Katran::load(Path::new("/nonexistent/balancer.bpf.o"), 16) {
            Err(e) => format!("{e:#}"),
            Ok(_) => panic!("loaded a nonexistent object"),
        };
        assert!(
            error.contains("reading the Katran object /nonexistent/balancer.bpf.o"),
            "{error}"
        );
    }
}
