//! Ricochet's interface to the data plane.
//!
//! [`Dataplane`] is the set of typed map operations the engine needs to program the
//! XDP load balancer. [`kernel::KernelDataplane`] implements it on the real program
//! (loaded, attached and pinned with aya); [`memory::MemoryDataplane`] implements it in
//! memory so that the engine's reconciliation logic is tested on any host.

pub mod ethtool;
pub mod kernel;
pub mod memory;
/// Route netlink (interfaces, XDP attachments, veth peers), from its own crate.
pub use ricochet_netlink as netlink;
pub mod offloads;
pub mod xmit;

use ricochet_common::{
    Counters, Event, FlowKey, FlowValue, Reason, ServerValue, ServiceKey, ServiceValue, Settings,
    VipKey, VipValue,
};

/// Flow-table entries one system call of [`Dataplane::scan_flows`] reads.
pub const FLOW_SCAN_BATCH: u32 = 8192;

/// Capacities of the maps, fixed when the program is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    pub vips: u32,
    pub service_ports: u32,
    /// Service ids are `0..services`.
    pub services: u32,
    /// Server slots are `0..servers`.
    pub servers: u32,
    /// Slots of the shared Maglev array.
    pub maglev_slots: u32,
    pub flows: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        use ricochet_common::limits::*;
        Capacities {
            vips: MAX_VIPS,
            service_ports: MAX_SERVICE_PORTS,
            services: MAX_SERVICES,
            servers: MAX_SERVERS,
            maglev_slots: DEFAULT_MAGLEV_SLOTS,
            flows: DEFAULT_FLOWS,
        }
    }
}

/// The typed operations on the load balancer's maps.
///
/// Every method maps to one or a few map syscalls; ordering between calls (which is
/// what keeps the data plane consistent while it changes) is the caller's business.
pub trait Dataplane {
    fn capacities(&self) -> Capacities;
    fn set_settings(&mut self, settings: &Settings) -> anyhow::Result<()>;
    fn settings(&self) -> anyhow::Result<Settings>;

    fn vips(&self) -> anyhow::Result<Vec<(VipKey, VipValue)>>;
    fn put_vip(&mut self, key: &VipKey, value: &VipValue) -> anyhow::Result<()>;
    fn remove_vip(&mut self, key: &VipKey) -> anyhow::Result<()>;
    /// Every word of the VIP filter (`VIP_FILTER`, [`ricochet_common::vip_filter`]).
    fn vip_filter(&self) -> anyhow::Result<Vec<u64>>;
    /// Writes word `index` of the VIP filter (one array update: atomic for readers).
    fn put_vip_filter_word(&mut self, index: u32, word: u64) -> anyhow::Result<()>;

    fn services(&self) -> anyhow::Result<Vec<(ServiceKey, ServiceValue)>>;
    fn put_service(&mut self, key: &ServiceKey, value: &ServiceValue) -> anyhow::Result<()>;
    fn remove_service(&mut self, key: &ServiceKey) -> anyhow::Result<()>;

    /// Every server slot, indexed by server id.
    fn servers(&self) -> anyhow::Result<Vec<ServerValue>>;
    fn put_server(&mut self, id: u32, value: &ServerValue) -> anyhow::Result<()>;

    /// Writes `slots` into the Maglev array starting at `offset`, as one batch (the
    /// kernel data plane makes one system call per table, not one per slot). A region
    /// that does not fit the array is refused before anything is written; readers may
    /// see a partly written region, so the engine writes only regions no service uses.
    fn write_table(&mut self, offset: u32, slots: &[u32]) -> anyhow::Result<()>;
    /// Reads `len` slots of the Maglev array from `offset`, as one batch.
    fn read_table(&self, offset: u32, len: u32) -> anyhow::Result<Vec<u32>>;

    /// Visits every entry of the flow table (the kernel data plane reads it in batches of
    /// [`FLOW_SCAN_BATCH`], one system call each; entries the program adds or evicts
    /// meanwhile may or may not be visited). Answers the number of entries visited.
    fn scan_flows(&self, visit: &mut dyn FnMut(&FlowKey, &FlowValue)) -> anyhow::Result<u64>;

    /// Counters summed over CPUs.
    fn service_counters(&self, id: u32) -> anyhow::Result<Counters>;
    fn server_counters(&self, id: u32) -> anyhow::Result<Counters>;
    fn reason_counters(&self) -> anyhow::Result<Vec<(Reason, u64)>>;
    /// Counters of the program's [`Event`]s (failures that did not change a packet's
    /// fate, such as a flow the table could not record), summed over CPUs.
    fn event_counters(&self) -> anyhow::Result<Vec<(Event, u64)>>;
}
