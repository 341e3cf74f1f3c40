//! The configuration object kinds the controller stores and serves.
//!
//! One table drives the store (a redb table per kind), the API (a collection per kind under
//! `/api/v1`), the configuration's lists (`Config::pools`, ...) and the messages (a noun per
//! kind), so that adding a kind cannot leave one of them behind.

use std::fmt;

use ricochet_config::{
    ApplicationProfile, Config, HealthMonitor, NetworkProfile, Pool, ServiceEngineGroup,
    VirtualService,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A kind of configuration object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// [`NetworkProfile`].
    NetworkProfile,
    /// [`ApplicationProfile`].
    ApplicationProfile,
    /// [`HealthMonitor`].
    HealthMonitor,
    /// [`Pool`].
    Pool,
    /// [`ServiceEngineGroup`].
    ServiceEngineGroup,
    /// [`VirtualService`].
    VirtualService,
}

impl Kind {
    /// Every kind, in the order of [`Config`]'s lists (referenced kinds before the kinds
    /// that refer to them).
    pub const ALL: [Kind; 6] = [
        Kind::NetworkProfile,
        Kind::ApplicationProfile,
        Kind::HealthMonitor,
        Kind::Pool,
        Kind::ServiceEngineGroup,
        Kind::VirtualService,
    ];

    /// The URL segment of the collection, e.g. `virtual-services`.
    pub fn segment(self) -> &'static str {
        match self {
            Kind::NetworkProfile => "network-profiles",
            Kind::ApplicationProfile => "application-profiles",
            Kind::HealthMonitor => "health-monitors",
            Kind::Pool => "pools",
            Kind::ServiceEngineGroup => "service-engine-groups",
            Kind::VirtualService => "virtual-services",
        }
    }

    /// The list's field in [`Config`] and the root of validation paths, e.g.
    /// `virtual_services`. Also the name of the kind's table in the store.
    pub fn field(self) -> &'static str {
        match self {
            Kind::NetworkProfile => "network_profiles",
            Kind::ApplicationProfile => "application_profiles",
            Kind::HealthMonitor => "health_monitors",
            Kind::Pool => "pools",
            Kind::ServiceEngineGroup => "service_engine_groups",
            Kind::VirtualService => "virtual_services",
        }
    }

    /// The noun used in messages, e.g. `virtual service`.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::NetworkProfile => "network profile",
            Kind::ApplicationProfile => "application profile",
            Kind::HealthMonitor => "health monitor",
            Kind::Pool => "pool",
            Kind::ServiceEngineGroup => "service engine group",
            Kind::VirtualService => "virtual service",
        }
    }

    /// The kind whose URL segment is `segment`.
    pub fn from_segment(segment: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.segment() == segment)
    }

    /// The validation path of the object named `name`, e.g. `pools["web-pool"]` (the form
    /// `ricochet_config` uses for named objects).
    pub fn path_of(self, name: &str) -> String {
        format!("{}[{name:?}]", self.field())
    }

    /// The names of this kind's objects in `config`, in list order.
    pub fn names(self, config: &Config) -> Vec<&str> {
        match self {
            Kind::NetworkProfile => names(&config.network_profiles),
            Kind::ApplicationProfile => names(&config.application_profiles),
            Kind::HealthMonitor => names(&config.health_monitors),
            Kind::Pool => names(&config.pools),
            Kind::ServiceEngineGroup => names(&config.service_engine_groups),
            Kind::VirtualService => names(&config.virtual_services),
        }
    }

    /// The object named `name` as JSON, if `config` has it.
    pub fn json_of(self, config: &Config, name: &str) -> Option<serde_json::Value> {
        fn find<T: ConfigObject>(list: &[T], name: &str) -> Option<serde_json::Value> {
            list.iter()
                .find(|o| o.name() == name)
                .map(|o| serde_json::to_value(o).expect("model objects serialize"))
        }
        match self {
            Kind::NetworkProfile => find(&config.network_profiles, name),
            Kind::ApplicationProfile => find(&config.application_profiles, name),
            Kind::HealthMonitor => find(&config.health_monitors, name),
            Kind::Pool => find(&config.pools, name),
            Kind::ServiceEngineGroup => find(&config.service_engine_groups, name),
            Kind::VirtualService => find(&config.virtual_services, name),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noun())
    }
}

fn names<T: ConfigObject>(list: &[T]) -> Vec<&str> {
    list.iter().map(ConfigObject::name).collect()
}

/// A model type stored as one object of a [`Kind`].
pub trait ConfigObject:
    Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + 'static
{
    /// The kind.
    const KIND: Kind;
    /// The object's name, its key.
    fn name(&self) -> &str;
    /// The kind's list in a configuration.
    fn list(config: &Config) -> &Vec<Self>;
    /// The kind's list in a configuration, mutable.
    fn list_mut(config: &mut Config) -> &mut Vec<Self>;
}

macro_rules! config_object {
    ($ty:ty, $kind:expr, $field:ident) => {
        impl ConfigObject for $ty {
            const KIND: Kind = $kind;
            fn name(&self) -> &str {
                &self.name
            }
            fn list(config: &Config) -> &Vec<Self> {
                &config.$field
            }
            fn list_mut(config: &mut Config) -> &mut Vec<Self> {
                &mut config.$field
            }
        }
    };
}

config_object!(NetworkProfile, Kind::NetworkProfile, network_profiles);
config_object!(
    ApplicationProfile,
    Kind::ApplicationProfile,
    application_profiles
);
config_object!(HealthMonitor, Kind::HealthMonitor, health_monitors);
config_object!(Pool, Kind::Pool, pools);
config_object!(
    ServiceEngineGroup,
    Kind::ServiceEngineGroup,
    service_engine_groups
);
config_object!(VirtualService, Kind::VirtualService, virtual_services);

/// Where objects refer to the object `name` of kind `kind`: `(path of the referring field,
/// referring kind, referring object's name)`. This is the delete rule's "used by".
pub fn referrers(config: &Config, kind: Kind, name: &str) -> Vec<(String, Kind, String)> {
    let mut found = Vec::new();
    match kind {
        Kind::NetworkProfile | Kind::ApplicationProfile | Kind::Pool => {
            for vs in &config.virtual_services {
                let (field, target) = match kind {
                    Kind::NetworkProfile => ("network_profile", &vs.network_profile),
                    Kind::ApplicationProfile => ("application_profile", &vs.application_profile),
                    _ => ("pool", &vs.pool),
                };
                if target == name {
                    found.push((
                        format!("{}.{field}", Kind::VirtualService.path_of(&vs.name)),
                        Kind::VirtualService,
                        vs.name.clone(),
                    ));
                }
            }
        }
        Kind::HealthMonitor => {
            for pool in &config.pools {
                for (i, monitor) in pool.health_monitors.iter().enumerate() {
                    if monitor == name {
                        found.push((
                            format!("{}.health_monitors[{i}]", Kind::Pool.path_of(&pool.name)),
                            Kind::Pool,
                            pool.name.clone(),
                        ));
                    }
                }
            }
        }
        Kind::ServiceEngineGroup => {
            for vs in &config.virtual_services {
                if vs.se_group.as_deref() == Some(name) {
                    found.push((
                        format!("{}.se_group", Kind::VirtualService.path_of(&vs.name)),
                        Kind::VirtualService,
                        vs.name.clone(),
                    ));
                }
            }
        }
        Kind::VirtualService => {}
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_segment_field_and_noun() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_segment(kind.segment()), Some(kind));
            assert_eq!(kind.segment().replace('-', "_"), kind.field());
            assert_eq!(kind.noun().replace(' ', "_") + "s", kind.field());
        }
        // Referenced kinds before the kinds that refer to them.
        let at = |k| Kind::ALL.iter().position(|&x| x == k).unwrap();
        assert!(at(Kind::ServiceEngineGroup) < at(Kind::VirtualService));
        assert_eq!(
            Kind::from_segment("service-engine-groups"),
            Some(Kind::ServiceEngineGroup)
        );
    }

    #[test]
    fn a_group_is_referred_to_by_the_virtual_services_it_carries() {
        let config = Config::from_yaml_str(
            r#"
service_engine_groups:
  - { name: g1, engines: [{ name: se1, addresses: [192.168.33.7] }] }
virtual_services:
  - { name: a, vip: 10.0.0.1, network_profile: np, pool: p, se_group: g1 }
  - { name: b, vip: 10.0.0.2, network_profile: np, pool: p }
"#,
        )
        .unwrap();
        assert_eq!(
            referrers(&config, Kind::ServiceEngineGroup, "g1"),
            [(
                r#"virtual_services["a"].se_group"#.to_owned(),
                Kind::VirtualService,
                "a".to_owned()
            )]
        );
        assert!(referrers(&config, Kind::ServiceEngineGroup, "g2").is_empty());
        assert_eq!(Kind::ServiceEngineGroup.names(&config), ["g1"]);
        assert_eq!(
            Kind::ServiceEngineGroup.json_of(&config, "g1").unwrap()["engines"][0]["name"],
            "se1"
        );
    }
}
