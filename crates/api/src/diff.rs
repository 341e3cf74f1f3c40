//! What a change does to the configuration: objects created, changed (with the fields
//! that changed) and deleted, per kind. `ricochet apply` shows it as the preview, and
//! every commit uses it to decide which objects get the new revision.

use std::collections::BTreeMap;

use ricochet_config::Config;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kind::Kind;

/// The difference between two configurations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigDiff {
    /// Network profiles.
    pub network_profiles: KindDiff,
    /// Application profiles.
    pub application_profiles: KindDiff,
    /// Health monitors.
    pub health_monitors: KindDiff,
    /// Pools.
    pub pools: KindDiff,
    /// Service engine groups.
    #[serde(default)]
    pub service_engine_groups: KindDiff,
    /// Virtual services.
    pub virtual_services: KindDiff,
}

/// The difference in one kind's objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KindDiff {
    /// Names of new objects.
    pub created: Vec<String>,
    /// Objects whose content changed.
    pub changed: Vec<ChangedObject>,
    /// Names of removed objects.
    pub deleted: Vec<String>,
}

/// An object whose content changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangedObject {
    /// The object's name.
    pub name: String,
    /// The fields that differ.
    pub fields: Vec<FieldChange>,
}

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldChange {
    /// Within the object, e.g. `servers[1].ratio`.
    pub path: String,
    /// The value before; absent if the field was not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub old: Option<Value>,
    /// The value after; absent if the field is no longer set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub new: Option<Value>,
}

impl ConfigDiff {
    /// Compares `old` and `new` object by object, matching objects by name.
    pub fn between(old: &Config, new: &Config) -> Self {
        let old = by_kind(old);
        let new = by_kind(new);
        let mut diff = ConfigDiff::default();
        for kind in Kind::ALL {
            let empty = BTreeMap::new();
            let before = old.get(&kind).unwrap_or(&empty);
            let after = new.get(&kind).unwrap_or(&empty);
            let d = diff.kind_mut(kind);
            for (name, value) in after {
                match before.get(name) {
                    None => d.created.push(name.clone()),
                    Some(previous) if previous != value => {
                        let mut fields = Vec::new();
                        field_changes("", Some(previous), Some(value), &mut fields);
                        d.changed.push(ChangedObject {
                            name: name.clone(),
                            fields,
                        });
                    }
                    Some(_) => {}
                }
            }
            d.deleted
                .extend(before.keys().filter(|n| !after.contains_key(*n)).cloned());
        }
        diff
    }

    /// The diff of one kind.
    pub fn kind(&self, kind: Kind) -> &KindDiff {
        match kind {
            Kind::NetworkProfile => &self.network_profiles,
            Kind::ApplicationProfile => &self.application_profiles,
            Kind::HealthMonitor => &self.health_monitors,
            Kind::Pool => &self.pools,
            Kind::ServiceEngineGroup => &self.service_engine_groups,
            Kind::VirtualService => &self.virtual_services,
        }
    }

    fn kind_mut(&mut self, kind: Kind) -> &mut KindDiff {
        match kind {
            Kind::NetworkProfile => &mut self.network_profiles,
            Kind::ApplicationProfile => &mut self.application_profiles,
            Kind::HealthMonitor => &mut self.health_monitors,
            Kind::Pool => &mut self.pools,
            Kind::ServiceEngineGroup => &mut self.service_engine_groups,
            Kind::VirtualService => &mut self.virtual_services,
        }
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        Kind::ALL.into_iter().all(|k| {
            let d = self.kind(k);
            d.created.is_empty() && d.changed.is_empty() && d.deleted.is_empty()
        })
    }

    /// Every object touched, as (kind, name, "created" | "changed" | "deleted").
    pub fn touched(&self) -> Vec<(Kind, &str, &'static str)> {
        let mut all = Vec::new();
        for kind in Kind::ALL {
            let d = self.kind(kind);
            all.extend(d.created.iter().map(|n| (kind, n.as_str(), "created")));
            all.extend(d.changed.iter().map(|c| (kind, c.name.as_str(), "changed")));
            all.extend(d.deleted.iter().map(|n| (kind, n.as_str(), "deleted")));
        }
        all
    }
}

/// Each kind's objects as JSON, by name. Serialising gives the stored form, with every
/// default applied, so that writing a default explicitly is not a change.
fn by_kind(config: &Config) -> BTreeMap<Kind, BTreeMap<String, Value>> {
    let Value::Object(mut lists) = serde_json::to_value(config).expect("Config serializes") else {
        unreachable!("a Config serializes to an object")
    };
    let mut out = BTreeMap::new();
    for kind in Kind::ALL {
        let mut objects = BTreeMap::new();
        if let Some(Value::Array(items)) = lists.remove(kind.field()) {
            for item in items {
                let name = item
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                objects.insert(name, item);
            }
        }
        out.insert(kind, objects);
    }
    out
}

/// Appends the differences between `old` and `new` at `path`: objects field by field,
/// arrays element by element (extra elements are additions or removals), anything else
/// as a whole.
fn field_changes(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<FieldChange>) {
    match (old, new) {
        (Some(a), Some(b)) if a == b => {}
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let sub = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                field_changes(&sub, a.get(key), b.get(key), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            for i in 0..a.len().max(b.len()) {
                field_changes(&format!("{path}[{i}]"), a.get(i), b.get(i), out);
            }
        }
        _ => out.push(FieldChange {
            path: path.to_owned(),
            old: old.cloned(),
            new: new.cloned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml_str(yaml).unwrap()
    }

    #[test]
    fn created_changed_deleted_with_field_paths() {
        let old = config(
            "pools:\n  - { name: a, servers: [{ ip: 10.0.0.1 }, { ip: 10.0.0.2 }] }\n  - { name: b }\n",
        );
        let new = config(
            "pools:\n  - { name: a, servers: [{ ip: 10.0.0.1, ratio: 3 }] }\n  - { name: c }\n",
        );
        let diff = ConfigDiff::between(&old, &new);
        assert_eq!(diff.pools.created, ["c"]);
        assert_eq!(diff.pools.deleted, ["b"]);
        let [changed] = diff.pools.changed.as_slice() else {
            panic!("one changed pool expected: {diff:?}")
        };
        assert_eq!(changed.name, "a");
        let paths: Vec<&str> = changed.fields.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["servers[0].ratio", "servers[1]"]);
        assert_eq!(changed.fields[0].old, Some(Value::from(1)));
        assert_eq!(changed.fields[0].new, Some(Value::from(3)));
        assert_eq!(
            changed.fields[1].new, None,
            "a removed server has no new value"
        );
        assert!(diff.virtual_services == KindDiff::default());
        assert!(!diff.is_empty());
    }

    #[test]
    fn a_group_changes_field_by_field_and_its_defaults_are_no_change() {
        let old = config(
            "service_engine_groups:\n  - { name: g, engines: [{ name: se1, addresses: [10.0.0.7] }], \
             bgp: { local_as: 65001, peers: [{ ip: 10.0.0.1, remote_as: 65000 }] } }\n",
        );
        let same = config(
            "service_engine_groups:\n  - { name: g, hash_seed: 0, engines: [{ name: se1, addresses: [10.0.0.7] }], \
             bgp: { local_as: 65001, peers: [{ ip: 10.0.0.1, remote_as: 65000 }], hold_time: 9, bfd: false, \
             bfd_interval_ms: 100 } }\n",
        );
        assert!(ConfigDiff::between(&old, &same).is_empty());
        let mut new = old.clone();
        new.service_engine_groups[0].bgp.as_mut().unwrap().hold_time = 30;
        let diff = ConfigDiff::between(&old, &new);
        let [changed] = diff.service_engine_groups.changed.as_slice() else {
            panic!("one changed group expected: {diff:?}")
        };
        assert_eq!(changed.fields[0].path, "bgp.hold_time");
        assert_eq!(diff.touched(), [(Kind::ServiceEngineGroup, "g", "changed")]);
    }

    #[test]
    fn explicit_defaults_are_no_change() {
        let old = config("pools:\n  - { name: a, servers: [{ ip: 10.0.0.1 }] }\n");
        let new = config(
            "pools:\n  - { name: a, consistent_hash: source_ip, servers: [{ ip: 10.0.0.1, ratio: 1, enabled: true }] }\n",
        );
        assert!(ConfigDiff::between(&old, &new).is_empty());
    }
}
