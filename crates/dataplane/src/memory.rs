//! An in-memory [`Dataplane`] with the kernel maps' semantics (capacity limits, array
//! indices in range), for tests of the engine that run without a kernel. It counts its
//! writes and reads and can keep a journal of every write, so that tests can check what
//! a change touched.

use std::cell::Cell;
use std::collections::BTreeMap;

use anyhow::{bail, ensure};
use ricochet_common::{
    vip_filter, Counters, Event, FlowKey, FlowValue, Reason, ServerValue, ServiceKey, ServiceValue,
    Settings, VipKey, VipValue,
};

use crate::{Capacities, Dataplane};

/// One write call, as kept in [`MemoryDataplane::journal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Settings,
    PutVip(VipKey),
    RemoveVip(VipKey),
    /// Word `index` of the VIP filter.
    VipFilterWord(u32),
    PutService(ServiceKey),
    RemoveService(ServiceKey),
    PutServer(u32),
    /// A Maglev table written at `offset`, `len` slots.
    Table {
        offset: u32,
        len: u32,
    },
}

#[derive(Clone, Debug)]
pub struct MemoryDataplane {
    pub caps: Capacities,
    pub settings: Settings,
    pub vips: BTreeMap<VipKey, VipValue>,
    /// The VIP filter's words ([`ricochet_common::vip_filter::WORDS`] of them).
    pub vip_filter: Vec<u64>,
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    pub servers: Vec<ServerValue>,
    pub maglev: Vec<u32>,
    /// The flow table's entries (the engine never writes it; tests put flows here as the
    /// program would record them).
    pub flows: Vec<(FlowKey, FlowValue)>,
    /// Number of write calls so far (a whole table counts once): lets tests assert that a
    /// no-op apply writes nothing.
    pub writes: u64,
    /// Number of Maglev slots written so far (the elements of the table writes).
    pub table_slots_written: u64,
    /// Number of read calls so far (a whole map or table listing counts once).
    pub reads: Cell<u64>,
    /// Every write call in order, while `Some` (tests set it to `Some(Vec::new())`).
    pub journal: Option<Vec<Write>>,
    /// Fault injection: once `writes` reaches this number, every write fails (and
    /// changes nothing), as a kernel map update can fail halfway through a commit.
    pub fail_writes_from: Option<u64>,
}

impl MemoryDataplane {
    pub fn new(caps: Capacities) -> Self {
        MemoryDataplane {
            caps,
            settings: Settings::default(),
            vips: BTreeMap::new(),
            vip_filter: vec![0; vip_filter::WORDS as usize],
            services: BTreeMap::new(),
            servers: vec![ServerValue::default(); caps.servers as usize],
            maglev: vec![0; caps.maglev_slots as usize],
            flows: Vec::new(),
            writes: 0,
            table_slots_written: 0,
            reads: Cell::new(0),
            journal: None,
            fail_writes_from: None,
        }
    }

    /// Counts (and journals) a write about to happen, or fails it by injection.
    fn wrote(&mut self, w: Write) -> anyhow::Result<()> {
        if self.fail_writes_from.is_some_and(|n| self.writes >= n) {
            bail!("injected failure of write {w:?}");
        }
        self.writes += 1;
        if let Some(j) = &mut self.journal {
            j.push(w);
        }
        Ok(())
    }

    fn read(&self) {
        self.reads.set(self.reads.get() + 1);
    }
}

impl Dataplane for MemoryDataplane {
    fn capacities(&self) -> Capacities {
        self.caps
    }
    fn set_settings(&mut self, settings: &Settings) -> anyhow::Result<()> {
        self.wrote(Write::Settings)?;
        self.settings = *settings;
        Ok(())
    }
    fn settings(&self) -> anyhow::Result<Settings> {
        self.read();
        Ok(self.settings)
    }
    fn vips(&self) -> anyhow::Result<Vec<(VipKey, VipValue)>> {
        self.read();
        Ok(self.vips.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn put_vip(&mut self, key: &VipKey, value: &VipValue) -> anyhow::Result<()> {
        if !self.vips.contains_key(key) && self.vips.len() as u32 >= self.caps.vips {
            bail!("VIPS map is full ({} entries)", self.caps.vips);
        }
        self.wrote(Write::PutVip(*key))?;
        self.vips.insert(*key, *value);
        Ok(())
    }
    fn remove_vip(&mut self, key: &VipKey) -> anyhow::Result<()> {
        self.wrote(Write::RemoveVip(*key))?;
        self.vips
            .remove(key)
            .map(|_| ())
            .ok_or_else(|| anyhow::anyhow!("no such VIP"))
    }
    fn vip_filter(&self) -> anyhow::Result<Vec<u64>> {
        self.read();
        Ok(self.vip_filter.clone())
    }
    fn put_vip_filter_word(&mut self, index: u32, word: u64) -> anyhow::Result<()> {
        ensure!(
            index < vip_filter::WORDS,
            "VIP filter word {index} out of range"
        );
        self.wrote(Write::VipFilterWord(index))?;
        self.vip_filter[index as usize] = word;
        Ok(())
    }
    fn services(&self) -> anyhow::Result<Vec<(ServiceKey, ServiceValue)>> {
        self.read();
        Ok(self.services.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn put_service(&mut self, key: &ServiceKey, value: &ServiceValue) -> anyhow::Result<()> {
        if !self.services.contains_key(key) && self.services.len() as u32 >= self.caps.service_ports
        {
            bail!("SERVICES map is full ({} entries)", self.caps.service_ports);
        }
        ensure!(
            value.service_id < self.caps.services,
            "service id out of range"
        );
        self.wrote(Write::PutService(*key))?;
        self.services.insert(*key, *value);
        Ok(())
    }
    fn remove_service(&mut self, key: &ServiceKey) -> anyhow::Result<()> {
        self.wrote(Write::RemoveService(*key))?;
        self.services
            .remove(key)
            .map(|_| ())
            .ok_or_else(|| anyhow::anyhow!("no such service"))
    }
    fn servers(&self) -> anyhow::Result<Vec<ServerValue>> {
        self.read();
        Ok(self.servers.clone())
    }
    fn put_server(&mut self, id: u32, value: &ServerValue) -> anyhow::Result<()> {
        ensure!(id < self.caps.servers, "server id {id} out of range");
        self.wrote(Write::PutServer(id))?;
        self.servers[id as usize] = *value;
        Ok(())
    }
    fn write_table(&mut self, offset: u32, slots: &[u32]) -> anyhow::Result<()> {
        let end = offset as usize + slots.len();
        ensure!(
            end <= self.maglev.len(),
            "table region {offset}+{} out of range",
            slots.len()
        );
        self.wrote(Write::Table {
            offset,
            len: slots.len() as u32,
        })?;
        self.table_slots_written += slots.len() as u64;
        self.maglev[offset as usize..end].copy_from_slice(slots);
        Ok(())
    }
    fn read_table(&self, offset: u32, len: u32) -> anyhow::Result<Vec<u32>> {
        let end = offset as usize + len as usize;
        ensure!(end <= self.maglev.len(), "table region out of range");
        self.read();
        Ok(self.maglev[offset as usize..end].to_vec())
    }
    fn scan_flows(&self, visit: &mut dyn FnMut(&FlowKey, &FlowValue)) -> anyhow::Result<u64> {
        self.read();
        for (k, v) in &self.flows {
            visit(k, v);
        }
        Ok(self.flows.len() as u64)
    }
    fn service_counters(&self, _id: u32) -> anyhow::Result<Counters> {
        Ok(Counters::default())
    }
    fn server_counters(&self, _id: u32) -> anyhow::Result<Counters> {
        Ok(Counters::default())
    }
    fn reason_counters(&self) -> anyhow::Result<Vec<(Reason, u64)>> {
        Ok(Reason::ALL.iter().map(|r| (*r, 0)).collect())
    }
    fn event_counters(&self) -> anyhow::Result<Vec<(Event, u64)>> {
        Ok(Event::ALL.iter().map(|e| (*e, 0)).collect())
    }
}
