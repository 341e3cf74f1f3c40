//! The configuration's index, kept in memory beside the store: every object's name, who
//! refers to each object, the virtual services on each VIP, the pools that hold each
//! server address and the service engine groups that hold each engine.
//!
//! A write of one object reads and validates only the objects the index names as its
//! neighbourhood (see [`crate::store::Store::change_object`]), so that its cost follows
//! what it touches and not the size of the configuration. The index is derived: built from
//! the tables when the store opens, changed with every committed configuration change, and
//! never stored.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use ricochet_config::{
    ApplicationProfile, Config, HealthMonitor, Known, KnownNames, NetworkProfile, Pool,
    ServiceEngineGroup, VirtualService,
};

use crate::kind::{ConfigObject, Kind};

/// What the index keeps of an object of a kind.
pub trait Indexed: ConfigObject {
    /// The objects it refers to (which must exist while it does).
    fn references(&self) -> Vec<(Kind, &str)> {
        Vec::new()
    }

    /// Its VIP, for a virtual service.
    fn vip(&self) -> Option<IpAddr> {
        None
    }

    /// Its servers' addresses, for a pool.
    fn server_ips(&self) -> Vec<IpAddr> {
        Vec::new()
    }

    /// Its members' names, for a service engine group.
    fn engine_names(&self) -> Vec<&str> {
        Vec::new()
    }
}

impl Indexed for NetworkProfile {}
impl Indexed for ApplicationProfile {}
impl Indexed for HealthMonitor {}

impl Indexed for Pool {
    fn references(&self) -> Vec<(Kind, &str)> {
        self.health_monitors
            .iter()
            .map(|m| (Kind::HealthMonitor, m.as_str()))
            .collect()
    }

    fn server_ips(&self) -> Vec<IpAddr> {
        self.servers.iter().map(|s| s.ip).collect()
    }
}

impl Indexed for ServiceEngineGroup {
    fn engine_names(&self) -> Vec<&str> {
        self.engines.iter().map(|e| e.name.as_str()).collect()
    }
}

impl Indexed for VirtualService {
    fn references(&self) -> Vec<(Kind, &str)> {
        let mut references = vec![
            (Kind::NetworkProfile, self.network_profile.as_str()),
            (Kind::ApplicationProfile, self.application_profile.as_str()),
            (Kind::Pool, self.pool.as_str()),
        ];
        if let Some(group) = &self.se_group {
            references.push((Kind::ServiceEngineGroup, group.as_str()));
        }
        references
    }

    fn vip(&self) -> Option<IpAddr> {
        Some(self.vip)
    }
}

/// The index of one configuration (see the module's documentation).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConfigIndex {
    /// Every object's name, by kind.
    names: HashMap<Kind, BTreeSet<String>>,
    /// For each object that something refers to, the objects that do.
    referrers: HashMap<(Kind, String), BTreeSet<(Kind, String)>>,
    /// The virtual services on each VIP.
    vips: HashMap<IpAddr, BTreeSet<String>>,
    /// The pools holding each server address.
    servers: HashMap<IpAddr, BTreeSet<String>>,
    /// The service engine groups holding each engine (by its name).
    engines: HashMap<String, BTreeSet<String>>,
}

impl ConfigIndex {
    /// The index of `config`.
    pub fn of(config: &Config) -> Self {
        fn all<T: Indexed>(index: &mut ConfigIndex, list: &[T]) {
            for object in list {
                index.insert(object);
            }
        }
        let mut index = ConfigIndex::default();
        all(&mut index, &config.network_profiles);
        all(&mut index, &config.application_profiles);
        all(&mut index, &config.health_monitors);
        all(&mut index, &config.pools);
        all(&mut index, &config.service_engine_groups);
        all(&mut index, &config.virtual_services);
        index
    }

    /// Adds `object` (stored now).
    pub fn insert<T: Indexed>(&mut self, object: &T) {
        let name = object.name().to_owned();
        self.names.entry(T::KIND).or_default().insert(name.clone());
        for (kind, target) in object.references() {
            self.referrers
                .entry((kind, target.to_owned()))
                .or_default()
                .insert((T::KIND, name.clone()));
        }
        if let Some(vip) = object.vip() {
            self.vips.entry(vip).or_default().insert(name.clone());
        }
        for ip in object.server_ips() {
            self.servers.entry(ip).or_default().insert(name.clone());
        }
        for engine in object.engine_names() {
            self.engines
                .entry(engine.to_owned())
                .or_default()
                .insert(name.clone());
        }
    }

    /// Removes `object` (as it was stored).
    pub fn remove<T: Indexed>(&mut self, object: &T) {
        fn take<K: std::hash::Hash + Eq, V: Ord>(
            map: &mut HashMap<K, BTreeSet<V>>,
            key: K,
            value: &V,
        ) {
            if let Some(set) = map.get_mut(&key) {
                set.remove(value);
                if set.is_empty() {
                    map.remove(&key);
                }
            }
        }
        let name = object.name().to_owned();
        take(&mut self.names, T::KIND, &name);
        let me = (T::KIND, name.clone());
        for (kind, target) in object.references() {
            take(&mut self.referrers, (kind, target.to_owned()), &me);
        }
        if let Some(vip) = object.vip() {
            take(&mut self.vips, vip, &name);
        }
        for ip in object.server_ips() {
            take(&mut self.servers, ip, &name);
        }
        for engine in object.engine_names() {
            take(&mut self.engines, engine.to_owned(), &name);
        }
    }

    /// The objects that refer to `name` of `kind`, sorted.
    pub fn referrers(&self, kind: Kind, name: &str) -> Vec<(Kind, String)> {
        self.referrers
            .get(&(kind, name.to_owned()))
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The virtual services whose VIP is `ip`.
    pub fn on_vip(&self, ip: IpAddr) -> Vec<String> {
        self.vips
            .get(&ip)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The pools with a server at `ip`.
    pub fn pools_with_server(&self, ip: IpAddr) -> Vec<String> {
        self.servers
            .get(&ip)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The service engine groups with the engine `engine` among their members.
    pub fn groups_with_engine(&self, engine: &str) -> Vec<String> {
        self.engines
            .get(engine)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many objects of `kind` there are.
    pub fn count(&self, kind: Kind) -> usize {
        self.names.get(&kind).map_or(0, BTreeSet::len)
    }

    /// What the hints of a missing reference list: the first names of each kind, in name
    /// order, and their count.
    pub fn known_names(&self) -> KnownNames {
        let known = |kind: Kind| match self.names.get(&kind) {
            Some(set) => Known::from_names(set.iter().map(String::as_str), set.len()),
            None => Known::default(),
        };
        KnownNames {
            network_profiles: known(Kind::NetworkProfile),
            application_profiles: known(Kind::ApplicationProfile),
            health_monitors: known(Kind::HealthMonitor),
            pools: known(Kind::Pool),
            service_engine_groups: known(Kind::ServiceEngineGroup),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../config/examples/seed.yaml");

    #[test]
    fn removing_what_was_inserted_leaves_the_index_as_it_was() {
        let config = Config::from_yaml_str(SEED).unwrap();
        let full = ConfigIndex::of(&config);
        let vs = &config.virtual_services[0];
        assert_eq!(
            full.referrers(Kind::Pool, &vs.pool),
            [(Kind::VirtualService, vs.name.clone())]
        );
        // The seed's DNS service shares the web service's VIP.
        let on_vip: Vec<String> = config
            .virtual_services
            .iter()
            .filter(|v| v.vip == vs.vip)
            .map(|v| v.name.clone())
            .collect();
        assert!(on_vip.len() > 1);
        let mut sorted = on_vip.clone();
        sorted.sort();
        assert_eq!(full.on_vip(vs.vip), sorted);
        let pool = &config.pools[0];
        let server = pool.servers[0].ip;
        let holding: Vec<&str> = config
            .pools
            .iter()
            .filter(|p| p.servers.iter().any(|s| s.ip == server))
            .map(|p| p.name.as_str())
            .collect();
        assert!(holding.contains(&pool.name.as_str()));
        let mut found = full.pools_with_server(server);
        found.sort();
        let mut holding: Vec<String> = holding.into_iter().map(str::to_owned).collect();
        holding.sort();
        assert_eq!(found, holding);

        let mut index = ConfigIndex::of(&config);
        index.remove(vs);
        assert!(index.referrers(Kind::Pool, &vs.pool).is_empty());
        assert_eq!(index.on_vip(vs.vip).len(), on_vip.len() - 1);
        assert!(!index.on_vip(vs.vip).contains(&vs.name));
        assert_eq!(
            index.count(Kind::VirtualService),
            config.virtual_services.len() - 1
        );
        index.insert(vs);
        assert_eq!(index, full);

        let mut none = ConfigIndex::of(&config);
        for p in &config.pools {
            none.remove(p);
        }
        for v in &config.virtual_services {
            none.remove(v);
        }
        // Only pools and virtual services refer to objects, and they are gone.
        assert!(none.servers.is_empty() && none.vips.is_empty());
        assert!(none.referrers.is_empty(), "{:?}", none.referrers);
    }

    #[test]
    fn groups_are_indexed_by_member_and_by_the_virtual_services_they_carry() {
        let config = Config::from_yaml_str(
            r#"
service_engine_groups:
  - { name: g1, engines: [{ name: se1, addresses: [10.0.0.7] }, { name: se2, addresses: [10.0.0.8] }] }
  - { name: g2, engines: [{ name: se2, addresses: [10.0.0.8] }] }
virtual_services:
  - { name: a, vip: 10.0.1.1, network_profile: np, pool: p, se_group: g1 }
"#,
        )
        .unwrap();
        let full = ConfigIndex::of(&config);
        assert_eq!(full.groups_with_engine("se1"), ["g1"]);
        assert_eq!(full.groups_with_engine("se2"), ["g1", "g2"]);
        assert_eq!(
            full.referrers(Kind::ServiceEngineGroup, "g1"),
            [(Kind::VirtualService, "a".to_owned())]
        );
        assert_eq!(full.known_names().service_engine_groups.first, ["g1", "g2"]);
        let mut index = ConfigIndex::of(&config);
        index.remove(&config.service_engine_groups[0]);
        index.remove(&config.virtual_services[0]);
        assert_eq!(index.groups_with_engine("se2"), ["g2"]);
        assert!(index.groups_with_engine("se1").is_empty());
        assert!(index.referrers.is_empty());
        index.insert(&config.service_engine_groups[0]);
        index.insert(&config.virtual_services[0]);
        assert_eq!(index, full);
    }
}
