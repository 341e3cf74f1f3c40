//! The differential test of [`Store::change_object`]: thousands of random creates,
//! replaces and deletes, each decided both by the store (which validates only the edited
//! object's neighbourhood) and by validating the whole resulting configuration, as every
//! write did before. They must agree on every edit; after each, the tables must hold what
//! the whole-configuration model holds, and the index must be the index of the tables.
//!
//! The objects are drawn from a small world (three VIPs, a few server addresses among
//! which one VIP, overlapping port ranges, TCP and UDP profiles, a profile without DSR,
//! monitors valid or not, service engine groups sharing members or not, virtual services
//! of one VIP in different groups) so that every rule that relates two objects is met
//! often.

use serde_json::{json, Value};

use super::*;

/// One random generator, seeded for a reproducible run.
struct World(fastrand::Rng);

impl World {
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.0.usize(..items.len())]
    }

    /// `true` with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        self.0.f64() < p
    }

    fn network_profile(&mut self, name: &str) -> Value {
        match name {
            "tcp" => json!({"name": name, "type": "tcp_fast_path",
                            "dsr": {"enabled": true, "type": "l3", "encapsulation": "ipinip"}}),
            "udp" => json!({"name": name, "type": "udp_fast_path",
                            "dsr": {"enabled": true, "type": "l3", "encapsulation": "ipinip"}}),
            // One that changes protocol or loses DSR when replaced.
            _ => match self.0.u8(..4) {
                0 => json!({"name": name, "type": "tcp_fast_path",
                            "dsr": {"enabled": true, "type": "l3", "encapsulation": "gre"}}),
                1 => json!({"name": name, "type": "udp_fast_path",
                            "dsr": {"enabled": true, "type": "l3", "encapsulation": "ipinip"}}),
                2 => json!({"name": name, "type": "tcp_fast_path",
                            "dsr": {"enabled": false, "type": "l3", "encapsulation": "ipinip"}}),
                _ => json!({"name": name, "type": "tcp_proxy"}),
            },
        }
    }

    fn health_monitor(&mut self, name: &str) -> Value {
        // receive_timeout must stay below send_interval: sometimes it does not.
        let receive = if self.chance(0.8) { 4 } else { 12 };
        json!({"name": name, "type": "tcp", "send_interval": 10, "receive_timeout": receive})
    }

    fn pool(&mut self, name: &str) -> Value {
        // Pool p4 is mostly IPv6, the others mostly IPv4; now and then a server of the
        // other family, or the address of a VIP.
        const V4: [&str; 4] = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.0.0.2"];
        const V6: [&str; 3] = ["fc00::10", "fc00::11", "fc00::1"];
        let v6 = name == "p4";
        let mut servers = Vec::new();
        for _ in 0..self.0.usize(0..=3) {
            let own_family = self.chance(0.95);
            let ip = if v6 == own_family {
                *self.pick(&V6)
            } else {
                *self.pick(&V4)
            };
            let mut server = json!({"ip": ip});
            if self.chance(0.15) {
                server["port"] = json!(self.pick(&[80, 443]));
            }
            if self.chance(0.03) {
                server["ratio"] = json!(0);
            }
            servers.push(server);
        }
        let mut pool = json!({"name": name, "servers": servers});
        if self.chance(0.4) {
            let monitor = *self.pick(&["hm1", "hm2", "hm3", "hm1", "hm-missing"]);
            pool["health_monitors"] = json!([monitor]);
        }
        pool
    }

    fn service_engine_group(&mut self, name: &str) -> Value {
        // Four engines for three groups: members are often in two groups. se4 has no IPv6
        // address, so an IPv6 peer refuses it.
        let mut engines = Vec::new();
        for engine in ["se1", "se2", "se3", "se4"] {
            if self.chance(0.25) {
                let addresses = match engine {
                    "se4" => json!(["10.5.0.4"]),
                    _ => json!([
                        format!("10.5.0.{}", &engine[2..]),
                        format!("fc00:5::{}", &engine[2..])
                    ]),
                };
                engines.push(json!({"name": engine, "addresses": addresses}));
            }
        }
        let mut group = json!({"name": name, "engines": engines});
        if self.chance(0.5) {
            let mut peers = vec![json!({"ip": "10.5.0.1", "remote_as": 65000})];
            if self.chance(0.3) {
                peers.push(json!({"ip": "fc00:5::1", "remote_as": 65000}));
            }
            let hold_time = if self.chance(0.9) { 9 } else { 2 };
            group["bgp"] = json!({"local_as": 65001, "peers": peers, "hold_time": hold_time});
        }
        group
    }

    fn virtual_service(&mut self, name: &str) -> Value {
        let pool = *self.pick(&["p1", "p2", "p3", "p4", "p1", "p2", "p3", "p4", "p-missing"]);
        let vip = match (pool == "p4") == self.chance(0.95) {
            true => "fc00::1",
            false => *self.pick(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1"]),
        };
        let mut services = vec![match self.0.u8(..5) {
            0 => json!({"port": 80}),
            1 => json!({"port": 53}),
            2 => json!({"port": 75, "port_range_end": 85}),
            3 => json!({"port": 8000 + u16::from(self.0.u8(..100))}),
            _ => json!({"port": 443}),
        }];
        if self.chance(0.2) {
            services.push(json!({"port": 8080}));
        }
        let network_profile = *self.pick(&["tcp", "tcp", "udp", "changing", "changing", "missing"]);
        let mut vs = json!({"name": name, "vip": vip, "services": services,
                            "network_profile": network_profile, "pool": pool});
        if self.chance(0.1) {
            vs["application_profile"] = json!(self.pick(&["l4b", "l4b", "app-missing"]));
        }
        if self.chance(0.3) {
            vs["se_group"] = json!(self.pick(&["g1", "g1", "g2", "g3", "g-missing"]));
        }
        vs
    }
}

/// The kinds and names the edits draw from.
const NAMES: [(Kind, &[&str]); 6] = [
    (Kind::NetworkProfile, &["tcp", "udp", "changing"]),
    (Kind::ApplicationProfile, &["l4b", SYSTEM_L4_APPLICATION]),
    (Kind::HealthMonitor, &["hm1", "hm2", "hm3"]),
    (Kind::Pool, &["p1", "p2", "p3", "p4"]),
    (Kind::ServiceEngineGroup, &["g1", "g2", "g3"]),
    (Kind::VirtualService, &["v1", "v2", "v3", "v4", "v5", "v6"]),
];

/// What the store answered, or what the whole-configuration model says it must.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Committed,
    Unchanged,
    Refused(u16),
}

/// The edit of `name` applied to the whole configuration, and what the rules before
/// this change (validate everything) decide.
fn expected<T: Indexed>(config: &Config, name: &str, edit: &Edit<T>) -> (Outcome, Config) {
    let mut candidate = config.clone();
    let list = T::list_mut(&mut candidate);
    let at = list.iter().position(|o| o.name() == name);
    match (edit, at) {
        (Edit::Create(_), Some(_)) => return (Outcome::Refused(409), config.clone()),
        (Edit::Replace(_) | Edit::Delete, None) => return (Outcome::Refused(404), config.clone()),
        (Edit::Create(object), None) => list.push(object.clone()),
        (Edit::Replace(object), Some(i)) => list[i] = object.clone(),
        (Edit::Delete, Some(i)) => {
            list.remove(i);
        }
    }
    list.sort_by(|a, b| a.name().cmp(b.name()));
    if ConfigDiff::between(config, &candidate).is_empty() {
        return (Outcome::Unchanged, config.clone());
    }
    if let Edit::Delete = edit {
        let built_in = T::KIND == Kind::ApplicationProfile && name == SYSTEM_L4_APPLICATION;
        if built_in || !referrers(config, T::KIND, name).is_empty() {
            return (Outcome::Refused(409), config.clone());
        }
    }
    match candidate.validate() {
        Ok(()) => (Outcome::Committed, candidate),
        Err(_) => (Outcome::Refused(422), config.clone()),
    }
}

/// One random edit of an object of `T`'s kind, checked against the model.
fn edit_and_check<T: Indexed>(
    store: &Store,
    world: &mut World,
    model: &mut Config,
    counts: &mut HashMap<(Kind, &'static str, String), u32>,
    make: fn(&mut World, &str) -> Value,
) {
    let names = NAMES.iter().find(|(k, _)| *k == T::KIND).unwrap().1;
    let name = *world.pick(names);
    let edit = match world.0.u8(..10) {
        0..=1 => Edit::Delete,
        n => {
            let object: T = serde_json::from_value(make(world, name)).unwrap();
            if n < 7 {
                Edit::Create(object)
            } else {
                Edit::Replace(object)
            }
        }
    };
    let (want, after) = expected(model, name, &edit);
    let what = match &edit {
        Edit::Create(_) => "create",
        Edit::Replace(_) => "replace",
        Edit::Delete => "delete",
    };
    let got = match store.change_object(name, edit.clone(), "test", None) {
        Ok(change) if change.applied.committed => Outcome::Committed,
        Ok(_) => Outcome::Unchanged,
        Err(StoreError::Refused(e)) => {
            if e.status.as_u16() == 422 {
                // What the store says is wrong is wrong in the whole configuration too.
                let whole = match &edit {
                    Edit::Create(o) | Edit::Replace(o) => {
                        let mut c = model.clone();
                        T::list_mut(&mut c).retain(|x| x.name() != name);
                        T::list_mut(&mut c).push(o.clone());
                        T::list_mut(&mut c).sort_by(|a, b| a.name().cmp(b.name()));
                        c.validate().unwrap_err()
                    }
                    Edit::Delete => unreachable!("a delete is not validated"),
                };
                let paths: Vec<&str> = whole.errors().iter().map(|e| e.path.as_str()).collect();
                let details = e.body.details.iter().map(|d| d.path.as_str());
                for path in details {
                    assert!(paths.contains(&path), "{path} not among {paths:?}");
                }
            }
            Outcome::Refused(e.status.as_u16())
        }
        Err(other) => panic!("{other}"),
    };
    assert_eq!(
        got,
        want,
        "{what} {} {name:?} in {}",
        T::KIND,
        serde_json::to_string(model).unwrap()
    );
    *counts
        .entry((T::KIND, what, format!("{got:?}")))
        .or_default() += 1;
    *model = after;
}

#[test]
fn a_one_object_write_decides_as_validating_the_whole_configuration_would() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join(STORE_FILE)).unwrap();
    let mut world = World(fastrand::Rng::with_seed(0x5eed));
    let mut model = store.snapshot().unwrap().config;
    let mut counts = HashMap::new();
    for round in 0..9600 {
        match world.0.u8(..6) {
            0 => edit_and_check::<NetworkProfile>(
                &store,
                &mut world,
                &mut model,
                &mut counts,
                World::network_profile,
            ),
            1 => edit_and_check::<ApplicationProfile>(
                &store,
                &mut world,
                &mut model,
                &mut counts,
                |_, name| json!({"name": name, "type": "l4"}),
            ),
            2 => edit_and_check::<HealthMonitor>(
                &store,
                &mut world,
                &mut model,
                &mut counts,
                World::health_monitor,
            ),
            3 => edit_and_check::<Pool>(&store, &mut world, &mut model, &mut counts, World::pool),
            4 => edit_and_check::<ServiceEngineGroup>(
                &store,
                &mut world,
                &mut model,
                &mut counts,
                World::service_engine_group,
            ),
            _ => edit_and_check::<VirtualService>(
                &store,
                &mut world,
                &mut model,
                &mut counts,
                World::virtual_service,
            ),
        }
        let stored = store.snapshot().unwrap().config;
        assert_eq!(
            stored, model,
            "round {round}: the tables and the model differ"
        );
        assert_eq!(
            *store.index(),
            ConfigIndex::of(&stored),
            "round {round}: the index is not the tables' index"
        );
        // Now and then a whole apply (which rebuilds the index) of the same objects.
        if round % 1000 == 999 {
            store
                .change_config(
                    |c| {
                        *c = stored.clone();
                        Ok(())
                    },
                    "test",
                    None,
                    false,
                )
                .unwrap();
            assert_eq!(*store.index(), ConfigIndex::of(&stored));
        }
    }
    // Every kind of outcome happened often enough to mean something.
    let total = |kind: Kind, outcome: &str| -> u32 {
        counts
            .iter()
            .filter(|((k, _, o), _)| *k == kind && o == outcome)
            .map(|(_, n)| n)
            .sum()
    };
    for (kind, _) in NAMES {
        assert!(total(kind, "Committed") >= 20, "{kind}: {counts:?}");
    }
    for kind in [
        Kind::Pool,
        Kind::VirtualService,
        Kind::NetworkProfile,
        Kind::ServiceEngineGroup,
    ] {
        assert!(total(kind, "Refused(422)") >= 20, "{kind}: {counts:?}");
    }
    assert!(
        total(Kind::ServiceEngineGroup, "Refused(409)") >= 20,
        "deletes of groups in use: {counts:?}"
    );
    assert!(
        total(Kind::Pool, "Refused(409)") + total(Kind::NetworkProfile, "Refused(409)") >= 20,
        "deletes of objects in use: {counts:?}"
    );
    println!("{counts:#?}");
}

/// A one-object write reads what it touches, whatever the size of the configuration; a
/// change of a profile that every virtual service uses touches them all.
#[test]
fn a_write_reads_its_neighbourhood_not_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join(STORE_FILE)).unwrap();
    let n = 2000;
    let config: Config = serde_json::from_value(json!({
        "network_profiles": [{"name": "tcp", "type": "tcp_fast_path",
                              "dsr": {"enabled": true, "type": "l3", "encapsulation": "ipinip"}}],
        "pools": (0..n).map(|i| json!({"name": format!("p{i}"),
            "servers": [{"ip": format!("10.1.{}.{}", i / 250, i % 250 + 1)}]})).collect::<Vec<_>>(),
        "virtual_services": (0..n).map(|i| json!({"name": format!("v{i}"),
            "vip": format!("10.0.{}.{}", i / 250, i % 250 + 1), "services": [{"port": 80}],
            "network_profile": "tcp", "pool": format!("p{i}")})).collect::<Vec<_>>(),
    }))
    .unwrap();
    let apply = |c: &Config| {
        store
            .change_config(
                |stored| {
                    *stored = c.clone();
                    Ok(())
                },
                "test",
                None,
                false,
            )
            .unwrap()
    };
    apply(&config);
    // A declarative apply compares with, so reads, the whole stored configuration.
    let before = store.objects_read();
    assert!(!apply(&config).committed);
    assert!(store.objects_read() - before >= 2 * n as u64);

    let reads = |f: &dyn Fn()| {
        let before = store.objects_read();
        f();
        store.objects_read() - before
    };
    let parse = |v: Value| -> VirtualService { serde_json::from_value(v).unwrap() };
    let create_pool = reads(&|| {
        let pool: Pool = serde_json::from_value(json!({"name": "new", "servers": []})).unwrap();
        store
            .change_object("new", Edit::Create(pool), "test", None)
            .unwrap();
    });
    let replace_vs = reads(&|| {
        let vs = parse(
            json!({"name": "v7", "vip": "10.0.0.8", "services": [{"port": 443}],
                              "network_profile": "tcp", "pool": "p7"}),
        );
        let change = store
            .change_object("v7", Edit::Replace(vs), "test", None)
            .unwrap();
        assert!(change.applied.committed);
    });
    let delete_vs = reads(&|| {
        store
            .change_object::<VirtualService>("v9", Edit::Delete, "test", None)
            .unwrap();
    });
    let refused = reads(&|| {
        // Its VIP is pool p3's server: refused, after reading that pool.
        let vs = parse(
            json!({"name": "x", "vip": "10.1.0.4", "services": [{"port": 80}],
                              "network_profile": "tcp", "pool": "p8"}),
        );
        let e = store
            .change_object("x", Edit::Create(vs), "test", None)
            .unwrap_err();
        assert!(e.to_string().contains("10.1.0.4"), "{e}");
    });
    // The object, then its profile, pool and the pools holding its VIP: a handful.
    for (what, count) in [
        ("create a pool", create_pool),
        ("replace a virtual service", replace_vs),
        ("delete a virtual service", delete_vs),
        ("refused create", refused),
    ] {
        assert!(count <= 8, "{what} read {count} objects among {}", 2 * n);
    }
    let profile = reads(&|| {
        let p: NetworkProfile = serde_json::from_value(json!({"name": "tcp",
            "type": "tcp_fast_path", "session_idle_timeout": 600,
            "dsr": {"enabled": true, "type": "l3", "encapsulation": "ipinip"}}))
        .unwrap();
        store
            .change_object("tcp", Edit::Replace(p), "test", None)
            .unwrap();
    });
    assert!(
        profile >= n as u64,
        "every virtual service uses the profile: {profile}"
    );
    println!(
        "reads: create pool {create_pool}, replace vs {replace_vs}, delete vs {delete_vs}, \
              refused {refused}, profile {profile}"
    );
}
