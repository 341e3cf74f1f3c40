//! An in-memory [`Dataplane`] with the kernel maps' semantics (capacity limits, array
//! indices in range), for tests of the engine that run without a kernel.

use std::collections::BTreeMap;

use anyhow::{bail, ensure};
use ricochet_common::{
    Counters, Event, Reason, ServerValue, ServiceKey, ServiceValue, Settings, VipKey, VipValue,
};

use crate::{Capacities, Dataplane};

#[derive(Clone, Debug)]
pub struct MemoryDataplane {
    pub caps: Capacities,
    pub settings: Settings,
    pub vips: BTreeMap<VipKey, VipValue>,
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    pub servers: Vec<ServerValue>,
    pub maglev: Vec<u32>,
    /// Number of map writes so far: lets tests assert that a no-op apply writes nothing.
    pub writes: u64,
}

impl MemoryDataplane {
    pub fn new(caps: Capacities) -> Self {
        MemoryDataplane {
            caps,
            settings: Settings::default(),
            vips: BTreeMap::new(),
            services: BTreeMap::new(),
            servers: vec![ServerValue::default(); caps.servers as usize],
            maglev: vec![0; caps.maglev_slots as usize],
            writes: 0,
        }
    }
}

impl Dataplane for MemoryDataplane {
    fn capacities(&self) -> Capacities {
        self.caps
    }
    fn set_settings(&mut self, settings: &Settings) -> anyhow::Result<()> {
        self.writes += 1;
        self.settings = *settings;
        Ok(())
    }
    fn settings(&self) -> anyhow::Result<Settings> {
        Ok(self.settings)
    }
    fn vips(&self) -> anyhow::Result<Vec<(VipKey, VipValue)>> {
        Ok(self.vips.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn put_vip(&mut self, key: &VipKey, value: &VipValue) -> anyhow::Result<()> {
        if !self.vips.contains_key(key) && self.vips.len() as u32 >= self.caps.vips {
            bail!("VIPS map is full ({} entries)", self.caps.vips);
        }
        self.writes += 1;
        self.vips.insert(*key, *value);
        Ok(())
    }
    fn remove_vip(&mut self, key: &VipKey) -> anyhow::Result<()> {
        self.writes += 1;
        self.vips
            .remove(key)
            .map(|_| ())
            .ok_or_else(|| anyhow::anyhow!("no such VIP"))
    }
    fn services(&self) -> anyhow::Result<Vec<(ServiceKey, ServiceValue)>> {
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
        self.writes += 1;
        self.services.insert(*key, *value);
        Ok(())
    }
    fn remove_service(&mut self, key: &ServiceKey) -> anyhow::Result<()> {
        self.writes += 1;
        self.services
            .remove(key)
            .map(|_| ())
            .ok_or_else(|| anyhow::anyhow!("no such service"))
    }
    fn servers(&self) -> anyhow::Result<Vec<ServerValue>> {
        Ok(self.servers.clone())
    }
    fn put_server(&mut self, id: u32, value: &ServerValue) -> anyhow::Result<()> {
        ensure!(id < self.caps.servers, "server id {id} out of range");
        self.writes += 1;
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
        self.writes += 1;
        self.maglev[offset as usize..end].copy_from_slice(slots);
        Ok(())
    }
    fn read_table(&self, offset: u32, len: u32) -> anyhow::Result<Vec<u32>> {
        let end = offset as usize + len as usize;
        ensure!(end <= self.maglev.len(), "table region out of range");
        Ok(self.maglev[offset as usize..end].to_vec())
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
