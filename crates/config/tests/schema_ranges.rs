//! The OpenAPI schemas of the model (the `openapi` feature) against validation: each bound
//! the schemas state is a bound of `ricochet_config::openapi`, every bound listed there is
//! stated, and validation accepts a value at each end and refuses one just past it. A bound
//! changed on one side only fails here, instead of in schemathesis's runs against the
//! controller (a valid request refused, or an invalid one accepted).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use ricochet_config::openapi as bounds;
use ricochet_config::{
    is_valid_engine_name, is_valid_name, Config, MAX_ENGINE_NAME_LEN, MAX_NAME_LEN, NAME_PATTERN,
};
use serde_json::{json, Value};

/// What the schema of one property must state, and nothing else.
#[derive(Debug, Clone, PartialEq)]
enum Stated {
    /// `minimum` and `maximum` of an integer.
    Range(u64, u64),
    /// An object name, or a reference to one: `minLength`, `maxLength`, `pattern`.
    Name,
    /// An engine's name: `minLength`, `maxLength`, `pattern` of the engine name rule.
    EngineName,
    /// An unsigned integer with no bound of its own: utoipa states the type's `minimum` 0
    /// (and its format, `int32` for a u32, the maximum a client generates).
    Unsigned,
    /// `minItems` and `maxItems` of an array (either may be absent).
    Items(Option<u64>, Option<u64>),
}

fn range<T: Into<u64> + Copy>(r: RangeInclusive<T>) -> Stated {
    Stated::Range((*r.start()).into(), (*r.end()).into())
}

fn items(r: RangeInclusive<usize>) -> Stated {
    let n = |n: usize| Some(u64::try_from(n).unwrap());
    Stated::Items(n(*r.start()), n(*r.end()))
}

/// Every bound the model's schemas state: (schema, property, what).
fn expected() -> Vec<(&'static str, &'static str, Stated)> {
    let max_servers = u64::try_from(bounds::MAX_SERVERS).unwrap();
    vec![
        ("NetworkProfile", "name", Stated::Name),
        (
            "NetworkProfile",
            "session_idle_timeout",
            range(bounds::IDLE_TIMEOUT),
        ),
        ("DsrProfile", "gue_port", range(bounds::PORT)),
        ("ApplicationProfile", "name", Stated::Name),
        ("HealthMonitor", "name", Stated::Name),
        (
            "HealthMonitor",
            "send_interval",
            range(bounds::SEND_INTERVAL),
        ),
        (
            "HealthMonitor",
            "receive_timeout",
            range(bounds::RECEIVE_TIMEOUT),
        ),
        ("HealthMonitor", "successful_checks", range(bounds::CHECKS)),
        ("HealthMonitor", "failed_checks", range(bounds::CHECKS)),
        ("HealthMonitor", "monitor_port", range(bounds::PORT)),
        (
            "HttpMonitor",
            "http_response_code",
            Stated::Items(Some(1), None),
        ),
        ("Pool", "name", Stated::Name),
        ("Pool", "servers", Stated::Items(None, Some(max_servers))),
        ("Pool", "table_size", range(bounds::TABLE_SIZE)),
        ("Pool", "health_monitors", Stated::Name),
        ("Server", "port", range(bounds::PORT)),
        ("Server", "ratio", range(bounds::RATIO)),
        ("VirtualService", "name", Stated::Name),
        ("VirtualService", "services", Stated::Items(Some(1), None)),
        ("VirtualService", "application_profile", Stated::Name),
        ("VirtualService", "network_profile", Stated::Name),
        ("VirtualService", "pool", Stated::Name),
        ("VirtualService", "se_group", Stated::Name),
        ("Service", "port", range(bounds::PORT)),
        ("Service", "port_range_end", range(bounds::PORT)),
        ("ServiceEngineGroup", "name", Stated::Name),
        ("ServiceEngineGroup", "hash_seed", Stated::Unsigned),
        ("GroupEngine", "name", Stated::EngineName),
        ("GroupEngine", "addresses", items(bounds::ENGINE_ADDRESSES)),
        ("GroupBgp", "local_as", range(bounds::AS_NUMBER)),
        (
            "GroupBgp",
            "peers",
            Stated::Items(Some(bounds::MIN_BGP_PEERS as u64), None),
        ),
        ("GroupBgp", "hold_time", range(bounds::HOLD_TIME)),
        (
            "GroupBgp",
            "bfd_interval_ms",
            range(bounds::BFD_INTERVAL_MS),
        ),
        ("BgpPeer", "remote_as", range(bounds::AS_NUMBER)),
    ]
}

/// The model's component schemas by name, as JSON.
fn schemas() -> BTreeMap<String, Value> {
    let mut all = Vec::new();
    <Config as utoipa::ToSchema>::schemas(&mut all);
    all.push((
        "Config".to_owned(),
        <Config as utoipa::PartialSchema>::schema(),
    ));
    all.into_iter()
        .map(|(name, schema)| (name, serde_json::to_value(schema).unwrap()))
        .collect()
}

const BOUND_KEYWORDS: [&str; 7] = [
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
];

/// A schema without utoipa's wrapper: an inlined schema given a description of its own
/// becomes `{"description", "oneOf": [schema]}`, which means the schema; an optional one
/// (`Option<ObjectName>`) `{"oneOf": [{"type": "null"}, schema]}`, whose bounds are the
/// schema's.
fn unwrapped(schema: &Value) -> &Value {
    match schema["oneOf"].as_array().map(Vec::as_slice) {
        Some([only]) => only,
        Some([null, only]) if *null == json!({"type": "null"}) => only,
        _ => schema,
    }
}

/// The bound keywords of a property's schema (for an array of names, of its items too).
fn stated(property: &Value) -> BTreeMap<String, Value> {
    let mut found = BTreeMap::new();
    let property = unwrapped(property);
    for (prefix, schema) in [("", property), ("items.", unwrapped(&property["items"]))] {
        for keyword in BOUND_KEYWORDS {
            if let Some(value) = schema.get(keyword) {
                found.insert(format!("{prefix}{keyword}"), value.clone());
            }
        }
    }
    found
}

fn what_to_state(what: &Stated, is_array: bool) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    match what {
        Stated::Range(min, max) => {
            out.insert("minimum".to_owned(), json!(min));
            out.insert("maximum".to_owned(), json!(max));
        }
        Stated::Name => {
            let prefix = if is_array { "items." } else { "" };
            out.insert(format!("{prefix}minLength"), json!(1));
            out.insert(format!("{prefix}maxLength"), json!(MAX_NAME_LEN));
            out.insert(format!("{prefix}pattern"), json!(NAME_PATTERN));
        }
        Stated::Unsigned => {
            out.insert("minimum".to_owned(), json!(0));
        }
        Stated::EngineName => {
            out.insert(
                "minLength".to_owned(),
                json!(bounds::ENGINE_NAME_LENGTH.start()),
            );
            out.insert(
                "maxLength".to_owned(),
                json!(bounds::ENGINE_NAME_LENGTH.end()),
            );
            out.insert("pattern".to_owned(), json!(bounds::ENGINE_NAME_PATTERN));
        }
        Stated::Items(min, max) => {
            if let Some(min) = min {
                out.insert("minItems".to_owned(), json!(min));
            }
            if let Some(max) = max {
                out.insert("maxItems".to_owned(), json!(max));
            }
        }
    }
    out
}

#[test]
fn the_schemas_state_exactly_the_bounds_of_validation() {
    let schemas = schemas();
    let expected = expected();
    for (schema, property, what) in &expected {
        let p = &schemas[*schema]["properties"][*property];
        assert!(p.is_object(), "{schema}.{property} is not in the schemas");
        let is_array = p["type"] == "array";
        assert_eq!(
            stated(p),
            what_to_state(what, is_array),
            "{schema}.{property}: {p:#}"
        );
    }
    // And no bound is stated that this test does not know, checked or not.
    for (name, schema) in &schemas {
        let Some(properties) = schema["properties"].as_object() else {
            continue;
        };
        for (property, p) in properties {
            let known = expected.iter().any(|(s, q, _)| s == name && q == property);
            assert!(
                known || stated(p).is_empty(),
                "{name}.{property} states {:?}, which this test does not hold to validation",
                stated(p)
            );
        }
    }
}

/// A valid configuration with one object of each kind the probes below change, unused by
/// the others where a rule between objects would get in the way: `spare-pool` is used by
/// no virtual service, so that a server port needs no service port to match.
fn base() -> Value {
    json!({
        "network_profiles": [
            {"name": "tcp", "type": "tcp_fast_path",
             "dsr": {"enabled": true, "type": "l3", "encapsulation": "gue"}},
            {"name": "udp", "type": "udp_fast_path",
             "dsr": {"enabled": true, "type": "l3", "encapsulation": "gue"}}
        ],
        "application_profiles": [{"name": "l4-app", "type": "l4"}],
        "health_monitors": [
            {"name": "tcp-check", "type": "tcp", "send_interval": 3600, "receive_timeout": 1},
            {"name": "http-check", "type": "http", "http_monitor": {}}
        ],
        "pools": [
            {"name": "web-pool", "servers": [{"ip": "192.168.33.10"}]},
            {"name": "spare-pool", "servers": [{"ip": "192.168.34.10"}]}
        ],
        "service_engine_groups": [
            {"name": "seg",
             "engines": [{"name": "se1", "addresses": ["192.168.33.7", "fc00::7"]}],
             "bgp": {"local_as": 65001, "peers": [{"ip": "192.168.33.1", "remote_as": 65000}]}}
        ],
        "virtual_services": [
            {"name": "web-vs", "vip": "192.168.35.241", "services": [{"port": 1}],
             "network_profile": "tcp", "pool": "web-pool"}
        ]
    })
}

/// Where each schema's probed object is in [`base`]: JSON pointers, any of which may
/// accept a value (the range of `session_idle_timeout` is the TCP profile's at one end and
/// the UDP profile's at the other).
fn places(schema: &str) -> &'static [&'static str] {
    match schema {
        "NetworkProfile" => &["/network_profiles/0", "/network_profiles/1"],
        "DsrProfile" => &["/network_profiles/0/dsr"],
        "ApplicationProfile" => &["/application_profiles/0"],
        "HealthMonitor" => &["/health_monitors/0"],
        "HttpMonitor" => &["/health_monitors/1/http_monitor"],
        // The spare pool, with no server: a table of 2 slots is enough for none.
        "Pool" => &["/pools/1"],
        "Server" => &["/pools/1/servers/0"],
        "VirtualService" => &["/virtual_services/0"],
        "Service" => &["/virtual_services/0/services/0"],
        "ServiceEngineGroup" => &["/service_engine_groups/0"],
        "GroupEngine" => &["/service_engine_groups/0/engines/0"],
        "GroupBgp" => &["/service_engine_groups/0/bgp"],
        "BgpPeer" => &["/service_engine_groups/0/bgp/peers/0"],
        other => panic!("no place for {other}"),
    }
}

/// Whether `config` parses and validates (a value its type cannot hold is refused too).
fn accepted(config: &Value) -> bool {
    serde_json::from_value::<Config>(config.clone()).is_ok_and(|c| c.validate().is_ok())
}

/// Whether some place of `schema` accepts `value` as `property`, and whether every place
/// refuses it.
fn probe(schema: &str, property: &str, value: &Value) -> bool {
    places(schema).iter().any(|place| {
        let mut config = base();
        if schema == "Pool" {
            config["pools"][1]["servers"] = json!([]);
        }
        config.pointer_mut(place).unwrap()[property] = value.clone();
        accepted(&config)
    })
}

#[test]
fn validation_accepts_each_stated_bound_and_refuses_past_it() {
    assert!(accepted(&base()), "the base configuration is valid");
    for (schema, property, what) in expected() {
        let at = format!("{schema}.{property}");
        match what {
            Stated::Range(min, max) => {
                assert!(probe(schema, property, &json!(min)), "{at} = {min} refused");
                assert!(probe(schema, property, &json!(max)), "{at} = {max} refused");
                if let Some(below) = min.checked_sub(1) {
                    assert!(
                        !probe(schema, property, &json!(below)),
                        "{at} = {below} accepted"
                    );
                }
                let above = max + 1;
                assert!(
                    !probe(schema, property, &json!(above)),
                    "{at} = {above} accepted"
                );
            }
            Stated::Items(min, max) => {
                let items = |n: u64| -> Value {
                    (0..n)
                        .map(|i| match (schema, property) {
                            // Distinct server addresses: 10.0.0.1, 10.0.0.2, ...
                            ("Pool", "servers") => {
                                let i = i + 1;
                                json!({"ip": format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)})
                            }
                            ("VirtualService", "services") => json!({"port": 100 + i}),
                            ("HttpMonitor", "http_response_code") => json!("http_2xx"),
                            // One per family, then a third (of either: too many).
                            ("GroupEngine", "addresses") => {
                                json!(["192.168.33.7", "fc00::7", "192.168.33.9"][i as usize])
                            }
                            ("GroupBgp", "peers") => {
                                json!({"ip": format!("192.168.33.{}", i + 1), "remote_as": 65000})
                            }
                            other => panic!("no items for {other:?}"),
                        })
                        .collect()
                };
                if let Some(min) = min {
                    assert!(
                        probe(schema, property, &items(min)),
                        "{at} of {min} refused"
                    );
                    assert!(
                        !probe(schema, property, &items(min - 1)),
                        "{at} of {} accepted",
                        min - 1
                    );
                }
                if let Some(max) = max {
                    // table_size: the default grows with the pool.
                    assert!(
                        probe(schema, property, &items(max)),
                        "{at} of {max} refused"
                    );
                    assert!(
                        !probe(schema, property, &items(max + 1)),
                        "{at} of {} accepted",
                        max + 1
                    );
                }
            }
            Stated::Unsigned => {
                for (value, ok) in [
                    (json!(0), true),
                    (json!(u32::MAX), true),
                    (json!(-1), false),
                ] {
                    assert_eq!(probe(schema, property, &value), ok, "{at} = {value}");
                }
            }
            Stated::EngineName => {
                let longest = "n".repeat(MAX_ENGINE_NAME_LEN);
                for (name, ok) in [
                    ("n", true),
                    ("-n_1.x", true),
                    (longest.as_str(), true),
                    ("", false),
                    (&format!("{longest}n"), false),
                    ("n n", false),
                    ("n:1", false),
                ] {
                    assert_eq!(probe(schema, property, &json!(name)), ok, "{at} = {name:?}");
                }
            }
            // References name objects that exist or are refused; the rule of the names
            // themselves is the next test's.
            Stated::Name if property != "name" => {}
            Stated::Name => {
                let longest = "n".repeat(MAX_NAME_LEN);
                for (name, ok) in [
                    ("n", true),
                    (longest.as_str(), true),
                    ("", false),
                    (&format!("{longest}n"), false),
                    ("-n", false),
                    ("n n", false),
                ] {
                    let mut config = base();
                    let place = places(schema)[0];
                    config.pointer_mut(place).unwrap()["name"] = json!(name);
                    // A renamed object loses its users: check the name's own refusal.
                    let refused_for_name = serde_json::from_value::<Config>(config)
                        .unwrap()
                        .validate()
                        .err()
                        .is_some_and(|e| e.errors().iter().any(|e| e.path.ends_with("].name")));
                    assert_eq!(!refused_for_name, ok, "{at} = {name:?}");
                }
            }
        }
    }
}

#[test]
fn the_name_pattern_is_the_name_rule() {
    let pattern = regex_automata::meta::Regex::new(NAME_PATTERN).unwrap();
    let agree = |name: &str| {
        let by_schema = (1..=MAX_NAME_LEN).contains(&name.len()) && pattern.is_match(name);
        assert_eq!(by_schema, is_valid_name(name), "{name:?}");
    };
    for name in [
        "a",
        "A-1",
        "9",
        "x.y:z_w-v",
        "-a",
        ".a",
        "_a",
        ":a",
        "a b",
        "a/b",
        "é",
        "",
    ] {
        agree(name);
    }
    agree(&"a".repeat(MAX_NAME_LEN));
    agree(&"a".repeat(MAX_NAME_LEN + 1));
    random_names("aZ09-_.:", " /é\n\0+", MAX_NAME_LEN, 7, agree);
}

/// 20,000 random names of every length up to `max` + 2, mostly of `allowed` characters
/// (1 in 100 of `others`), each given to `check`.
fn random_names(allowed: &str, others: &str, max: usize, seed: u64, check: impl Fn(&str)) {
    let allowed: Vec<char> = allowed.chars().collect();
    let others: Vec<char> = others.chars().collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..20_000 {
        let len = rng.usize(0..=max + 2);
        let name: String = (0..len)
            .map(|_| match rng.u8(..100) {
                0 => others[rng.usize(..others.len())],
                _ => allowed[rng.usize(..allowed.len())],
            })
            .collect();
        check(&name);
    }
}

#[test]
fn the_engine_name_pattern_is_the_engine_name_rule() {
    let pattern = regex_automata::meta::Regex::new(bounds::ENGINE_NAME_PATTERN).unwrap();
    let agree = |name: &str| {
        let by_schema = bounds::ENGINE_NAME_LENGTH.contains(&name.len()) && pattern.is_match(name);
        assert_eq!(by_schema, is_valid_engine_name(name), "{name:?}");
    };
    for name in ["a", "-a", "se-1.lab_a", "a:b", "a b", "é", ""] {
        agree(name);
    }
    agree(&"a".repeat(MAX_ENGINE_NAME_LEN));
    agree(&"a".repeat(MAX_ENGINE_NAME_LEN + 1));
    random_names("aZ09-_.", " /é\n\0+:", MAX_ENGINE_NAME_LEN, 11, agree);
}
