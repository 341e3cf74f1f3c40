//! The controller's state in an embedded transactional database (redb: one file,
//! copy-on-write B-trees, ACID transactions, checksummed commits).
//!
//! Layout, one redb table each:
//!
//! | table | key → value |
//! |---|---|
//! | `meta` | `"schema"`, `"revision"`, `"config_revision"` → u64 |
//! | `network_profiles`, `application_profiles`, `health_monitors`, `pools`, `service_engine_groups`, `virtual_services` | name → JSON `{"revision": N, "object": {...}}` (the `ricochet_config` type) |
//! | `service_engines` | name → JSON [`EngineRecord`] |
//! | `tokens` | SHA-256 of the token, hex → JSON [`TokenRecord`] |
//! | `events` | id (u64) → JSON [`Event`] |
//!
//! Every change is one write transaction ([`Store::write`]): it reads what it needs,
//! decides, writes, takes the next revision and appends its events, and commits with
//! `Durability::Immediate` (fsync) before the caller answers. A refusal or an error aborts
//! the transaction, so nothing of it remains. redb's commit is atomic: after a crash the
//! file opens at the last committed transaction.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use redb::{
    Database, Durability, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableError, WriteTransaction,
};
use ricochet_config::{
    ApplicationProfile, ApplicationProfileType, Config, HealthMonitor, NetworkProfile, Pool,
    ServiceEngineGroup, VirtualService, SYSTEM_L4_APPLICATION,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::diff::ConfigDiff;
use crate::error::ApiError;
use crate::index::{ConfigIndex, Indexed};
use crate::kind::{referrers, ConfigObject, Kind};
use crate::types::{Event, Role, TokenInfo, Versioned};

/// The store's file inside the state directory.
pub const STORE_FILE: &str = "controller.redb";

/// The layout version written in `meta`; a store of another version is refused.
const SCHEMA: u64 = 1;

/// Events kept; older ones are dropped as new ones arrive.
pub const MAX_EVENTS: u64 = 100_000;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ENGINES: TableDefinition<&str, &[u8]> = TableDefinition::new("service_engines");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

fn objects(kind: Kind) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(kind.field())
}

/// A failure of the store (not a refusal of a request: see [`StoreError::Refused`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request was refused; the transaction was aborted.
    #[error("{0}")]
    Refused(ApiError),
    /// Another process holds the database.
    #[error("{} is in use by another process (is another controller running with this state directory?)", .0.display())]
    InUse(PathBuf),
    /// A layout this version does not know.
    #[error("{} has store schema {found}, this controller knows schema {SCHEMA}", .path.display())]
    Schema {
        /// The file.
        path: PathBuf,
        /// Its schema.
        found: u64,
    },
    /// A stored value does not parse.
    #[error("stored {what} does not parse: {source}")]
    Corrupt {
        /// Which value.
        what: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The database failed.
    #[error("store: {0}")]
    Database(Box<redb::Error>),
}

macro_rules! from_redb {
    ($($e:ty),*) => {$(
        impl From<$e> for StoreError {
            fn from(e: $e) -> Self {
                StoreError::Database(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<ApiError> for StoreError {
    fn from(e: ApiError) -> Self {
        StoreError::Refused(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(e) => e,
            other => ApiError::internal("the store failed, nothing was changed", &other),
        }
    }
}

fn parse<T: DeserializeOwned>(
    what: impl FnOnce() -> String,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        what: what(),
        source,
    })
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("stored types serialize")
}

/// Now, RFC 3339 UTC with milliseconds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A registered service engine, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineRecord {
    /// The engine's name.
    pub name: String,
    /// Its addresses.
    pub addresses: Vec<std::net::IpAddr>,
    /// Its software version.
    pub version: String,
    /// When it first registered.
    pub registered_at: String,
    /// The revision of its last registration change.
    pub revision: u64,
}

/// An API token, as stored (under the hash of the token; the token itself is not kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Who the token is, e.g. `admin`; events name it as the actor.
    pub name: String,
    /// When it was created.
    pub created_at: String,
    /// What it may do. Absent in stores written before roles existed: those tokens were
    /// all-powerful, and [`Store::migrate_token_roles`] makes them `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// For an engine token, the engine it acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

impl TokenRecord {
    /// Its role; a record from before roles is an admin token.
    pub fn role(&self) -> Role {
        self.role.unwrap_or(Role::Admin)
    }

    /// The API's view of it.
    pub fn info(&self) -> TokenInfo {
        TokenInfo {
            name: self.name.clone(),
            role: self.role(),
            engine: self.engine.clone(),
            created_at: self.created_at.clone(),
        }
    }
}

/// An event to append, before it gets its id, time and revision.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// See [`Event::subject`].
    pub subject: String,
    /// See [`Event::state`].
    pub state: String,
    /// See [`Event::previous`].
    pub previous: Option<String>,
    /// See [`Event::reason`].
    pub reason: String,
}

/// The configuration as stored, with each object's revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The store's revision.
    pub revision: u64,
    /// The configuration revision.
    pub config_revision: u64,
    /// Every object, each kind sorted by name.
    pub config: Config,
    /// The revision of each object.
    pub revisions: HashMap<(Kind, String), u64>,
}

/// What a configuration change did (or would do).
#[derive(Debug, Clone)]
pub struct Applied {
    /// The configuration revision after it.
    pub config_revision: u64,
    /// Whether it was committed (false for a dry run or a change that changes nothing).
    pub committed: bool,
    /// What changed.
    pub diff: ConfigDiff,
}

/// A change of one object ([`Store::change_object`]).
#[derive(Debug, Clone)]
pub enum Edit<T> {
    /// Create it; refused if the name exists.
    Create(T),
    /// Replace it; refused if it does not exist.
    Replace(T),
    /// Delete it; refused if it does not exist, is built in or is in use.
    Delete,
}

/// What a change of one object did.
#[derive(Debug, Clone)]
pub struct ObjectChange<T> {
    /// The revision, whether it was committed, and the diff.
    pub applied: Applied,
    /// The object as stored afterwards, with the revision of its last change; `None` after
    /// a delete.
    pub stored: Option<Versioned<T>>,
}

/// The state of one write transaction: the revision it will commit as, and its events.
pub struct Tx<'a> {
    tx: &'a WriteTransaction,
    /// The store's count of objects read by writes.
    reads: &'a AtomicU64,
    /// The store's revision before this transaction.
    base: u64,
    changed: bool,
    config_changed: bool,
    events: Vec<NewEvent>,
}

impl Tx<'_> {
    /// The revision this transaction commits as; calling it marks the transaction as a
    /// change (a transaction that never calls it, nor records an event, is aborted).
    pub fn revision(&mut self) -> u64 {
        self.changed = true;
        self.base + 1
    }

    /// The store's revision before this transaction.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Appends an event (committed with the transaction).
    pub fn event(&mut self, event: NewEvent) {
        self.changed = true;
        self.events.push(event);
    }

    /// The stored configuration, inside the transaction.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let meta = self.tx.open_table(META)?;
        let mut snap = Snapshot {
            revision: self.base,
            config_revision: get_meta(&meta, "config_revision")?,
            ..Snapshot::default()
        };
        load_config(|kind| Ok(self.tx.open_table(objects(kind))?), &mut snap)?;
        self.reads
            .fetch_add(snap.revisions.len() as u64, Ordering::Relaxed);
        Ok(snap)
    }
}

fn get_meta(meta: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, StoreError> {
    Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(0))
}

fn load_kind<T: ConfigObject, R: ReadableTable<&'static str, &'static [u8]>>(
    table: &R,
    snap: &mut Snapshot,
) -> Result<(), StoreError> {
    let list = T::list_mut(&mut snap.config);
    for entry in table.iter()? {
        let (name, value) = entry?;
        let name = name.value().to_owned();
        let record: Versioned<T> = parse(|| T::KIND.path_of(&name), value.value())?;
        snap.revisions.insert((T::KIND, name), record.revision);
        list.push(record.object);
    }
    Ok(())
}

/// Loads every kind's objects into `snap`, each table opened by `open` (in a read or a
/// write transaction).
fn load_config<R: ReadableTable<&'static str, &'static [u8]>>(
    open: impl Fn(Kind) -> Result<R, StoreError>,
    snap: &mut Snapshot,
) -> Result<(), StoreError> {
    load_kind::<NetworkProfile, _>(&open(Kind::NetworkProfile)?, snap)?;
    load_kind::<ApplicationProfile, _>(&open(Kind::ApplicationProfile)?, snap)?;
    load_kind::<HealthMonitor, _>(&open(Kind::HealthMonitor)?, snap)?;
    load_kind::<Pool, _>(&open(Kind::Pool)?, snap)?;
    load_kind::<ServiceEngineGroup, _>(&open(Kind::ServiceEngineGroup)?, snap)?;
    load_kind::<VirtualService, _>(&open(Kind::VirtualService)?, snap)
}

/// One object, read in a write transaction.
fn load<T: ConfigObject>(
    tx: &Tx<'_>,
    kind: Kind,
    name: &str,
) -> Result<Option<Versioned<T>>, StoreError> {
    tx.reads.fetch_add(1, Ordering::Relaxed);
    let table = tx.tx.open_table(objects(kind))?;
    let value = table.get(name)?;
    value
        .map(|v| parse(|| kind.path_of(name), v.value()))
        .transpose()
}

/// 412: the object was changed since the revision an edit was prepared against.
fn object_changed(kind: Kind, name: &str, expected: u64, stored: u64) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::PRECONDITION_FAILED,
        "revision_mismatch",
        format!(
            "{kind} {name:?} was changed by someone else since revision {expected} (it is at \
             revision {stored}); nothing was saved: load it again and redo the edit"
        ),
    )
    .with_detail(kind.path_of(name), format!("changed at revision {stored}"))
}

/// 409: a create of a name that exists.
fn already_exists(kind: Kind, name: &str) -> ApiError {
    let collection = format!("/api/v1/{}", kind.segment());
    ApiError::new(
        axum::http::StatusCode::CONFLICT,
        "already_exists",
        format!("{kind} {name:?} already exists; replace it with PUT {collection}/{name}"),
    )
    .with_detail(
        format!("{}.name", kind.path_of(name)),
        format!("a {kind} with this name exists"),
    )
}

/// 409: a delete of the built-in application profile.
fn built_in(kind: Kind, name: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::CONFLICT,
        "built_in",
        format!("{SYSTEM_L4_APPLICATION} is built in and cannot be deleted"),
    )
    .with_detail(kind.path_of(name), "built in")
}

/// 409: a delete of an object that `users` refer to, each named with the field that does.
fn in_use(
    tx: &Tx<'_>,
    kind: Kind,
    name: &str,
    users: &[(Kind, String)],
) -> Result<ApiError, StoreError> {
    // The referring objects alone: [`referrers`] finds the fields that name `name`.
    let mut part = Config::default();
    for (user_kind, user) in users {
        match user_kind {
            Kind::Pool => part
                .pools
                .extend(load(tx, Kind::Pool, user)?.map(|v| v.object)),
            Kind::VirtualService => part
                .virtual_services
                .extend(load(tx, Kind::VirtualService, user)?.map(|v| v.object)),
            // Nothing else refers to objects.
            _ => {}
        }
    }
    let found = referrers(&part, kind, name);
    let who: Vec<String> = found.iter().map(|(_, k, n)| format!("{k} {n:?}")).collect();
    let mut e = ApiError::new(
        axum::http::StatusCode::CONFLICT,
        "in_use",
        format!(
            "{kind} {name:?} is in use by {}; change or delete {} first",
            who.join(", "),
            if found.len() == 1 { "it" } else { "them" }
        ),
    );
    for (path, _, _) in found {
        e = e.with_detail(path, format!("refers to {kind} {name:?}"));
    }
    Ok(e)
}

/// The part of the configuration that validating `edited` (the new version of one object)
/// needs, with `edited` in place of its stored version: every object whose validity the
/// change can alter, and what each of those depends on. Validating this part accepts
/// exactly when validating the whole configuration would, given that the stored one is
/// valid (every rule looks at one object, the objects it names, the virtual services on
/// its VIP, the pools holding its VIP as a server address or the groups holding one of its
/// engines; the differential test in `store/incremental_tests.rs` holds it to that):
/// - a virtual service: itself, the other virtual services on its VIP (overlapping ports,
///   one service engine group per VIP), and the pools with a server at its VIP;
/// - a pool: itself, the virtual services that use it (server family and port), and those
///   whose VIP is one of its servers;
/// - a network profile: itself and the virtual services that use it (fast path, DSR,
///   protocol), with the virtual services on their VIPs;
/// - a service engine group: itself and the groups holding one of its engines (an engine
///   is in at most one group);
/// - an application profile or a health monitor: itself (what refers to one only needs it
///   to exist; so for a group).
///
/// Each virtual service comes with its profiles, pool and group, each pool with its
/// monitors, so that no reference of the part dangles unless it dangles in the whole.
fn neighbourhood<T: Indexed>(
    tx: &Tx<'_>,
    index: &ConfigIndex,
    edited: &T,
) -> Result<Config, StoreError> {
    let mut part = Part {
        tx,
        edited: (T::KIND, edited.name()),
        edited_json: serde_json::to_vec(edited).expect("model objects serialize"),
        included: HashMap::new(),
        config: Config::default(),
    };
    let name = edited.name();
    let mut services = Vec::new();
    let mut pools = Vec::new();
    match T::KIND {
        Kind::VirtualService => services.push(name.to_owned()),
        Kind::Pool => {
            pools.push(name.to_owned());
            services.extend(users(index, Kind::Pool, name));
        }
        Kind::NetworkProfile => {
            part.include::<NetworkProfile>(name)?;
            services.extend(users(index, Kind::NetworkProfile, name));
        }
        Kind::ApplicationProfile => {
            part.include::<ApplicationProfile>(name)?;
        }
        Kind::HealthMonitor => {
            part.include::<HealthMonitor>(name)?;
        }
        Kind::ServiceEngineGroup => {
            part.include::<ServiceEngineGroup>(name)?;
            for engine in edited.engine_names() {
                for group in index.groups_with_engine(engine) {
                    part.include::<ServiceEngineGroup>(&group)?;
                }
            }
        }
    }
    for name in &services {
        let Some(vs) = part.virtual_service(name)? else {
            continue;
        };
        for other in index.on_vip(vs.vip) {
            part.virtual_service(&other)?;
        }
        for pool in index.pools_with_server(vs.vip) {
            part.pool(&pool)?;
        }
    }
    for name in &pools {
        let Some(pool) = part.pool(name)? else {
            continue;
        };
        for server in &pool.servers {
            for vs in index.on_vip(server.ip) {
                part.virtual_service(&vs)?;
            }
        }
    }
    let mut config = part.config;
    // In name order, as the whole configuration is read from the tables: a rule that
    // reports on the later of two objects reports on the same one.
    config.network_profiles.sort_by(|a, b| a.name.cmp(&b.name));
    config
        .application_profiles
        .sort_by(|a, b| a.name.cmp(&b.name));
    config.health_monitors.sort_by(|a, b| a.name.cmp(&b.name));
    config.pools.sort_by(|a, b| a.name.cmp(&b.name));
    config
        .service_engine_groups
        .sort_by(|a, b| a.name.cmp(&b.name));
    config.virtual_services.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(config)
}

/// The virtual services that refer to `name` of `kind`.
fn users(index: &ConfigIndex, kind: Kind, name: &str) -> Vec<String> {
    index
        .referrers(kind, name)
        .into_iter()
        .filter(|(k, _)| *k == Kind::VirtualService)
        .map(|(_, n)| n)
        .collect()
}

/// A part of the configuration being gathered by [`neighbourhood`].
struct Part<'a, 't> {
    tx: &'a Tx<'t>,
    /// The object being changed, whose new version stands in for the stored one.
    edited: (Kind, &'a str),
    edited_json: Vec<u8>,
    /// The objects looked for so far: where each is in its list, `None` if absent.
    included: HashMap<(Kind, String), Option<usize>>,
    config: Config,
}

impl Part<'_, '_> {
    /// Adds the object `name` of `T`'s kind (the edited version if it is the edited
    /// object) unless it was added before; returns it and whether it is new to the part,
    /// or `None` if it does not exist.
    fn include<T: ConfigObject>(&mut self, name: &str) -> Result<Option<(T, bool)>, StoreError> {
        if let Some(at) = self.included.get(&(T::KIND, name.to_owned())) {
            return Ok(at.map(|i| (T::list(&self.config)[i].clone(), false)));
        }
        let object: Option<T> = if self.edited == (T::KIND, name) {
            Some(parse(|| T::KIND.path_of(name), &self.edited_json)?)
        } else {
            load::<T>(self.tx, T::KIND, name)?.map(|v| v.object)
        };
        let at = object.as_ref().map(|object| {
            let list = T::list_mut(&mut self.config);
            list.push(object.clone());
            list.len() - 1
        });
        self.included.insert((T::KIND, name.to_owned()), at);
        Ok(object.map(|o| (o, true)))
    }

    /// A pool and its monitors.
    fn pool(&mut self, name: &str) -> Result<Option<Pool>, StoreError> {
        let Some((pool, new)) = self.include::<Pool>(name)? else {
            return Ok(None);
        };
        if new {
            for monitor in &pool.health_monitors {
                self.include::<HealthMonitor>(monitor)?;
            }
        }
        Ok(Some(pool))
    }

    /// A virtual service, its profiles, its pool (with the pool's monitors) and its group.
    fn virtual_service(&mut self, name: &str) -> Result<Option<VirtualService>, StoreError> {
        let Some((vs, new)) = self.include::<VirtualService>(name)? else {
            return Ok(None);
        };
        if new {
            self.include::<NetworkProfile>(&vs.network_profile)?;
            self.include::<ApplicationProfile>(&vs.application_profile)?;
            self.pool(&vs.pool)?;
            if let Some(group) = &vs.se_group {
                self.include::<ServiceEngineGroup>(group)?;
            }
        }
        Ok(Some(vs))
    }
}

/// The built-in `System-L4-Application`.
fn system_l4_application() -> ApplicationProfile {
    ApplicationProfile {
        name: SYSTEM_L4_APPLICATION.to_owned(),
        kind: ApplicationProfileType::L4,
    }
}

/// The controller's store.
pub struct Store {
    db: Database,
    path: PathBuf,
    /// How long each commit took (its fsync, mostly): the controller's metrics.
    commits: prometheus_client::metrics::histogram::Histogram,
    /// The index of the stored configuration. Every configuration change holds it from
    /// before its transaction begins until the index is updated after the commit, so that
    /// the next change never sees an index behind the tables.
    index: Mutex<ConfigIndex>,
    /// Configuration objects read by write transactions: what makes a write's cost.
    reads: AtomicU64,
}

impl Store {
    /// Opens (or creates) the store at `path`; a new store gets the built-in objects.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::InUse(path.to_owned()))
            }
            Err(e) => return Err(e.into()),
        };
        let store = Store {
            db,
            path: path.to_owned(),
            commits: crate::metrics::commit_histogram(),
            index: Mutex::new(ConfigIndex::default()),
            reads: AtomicU64::new(0),
        };
        store.initialise()?;
        let index = ConfigIndex::of(&store.snapshot()?.config);
        *store.index() = index;
        Ok(store)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, ConfigIndex> {
        // A panic while it was held happened before the index changed (it changes after
        // the commit, in one step that does not panic), so the index is whole.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many configuration objects write transactions have read since the store
    /// opened (a one-object write reads its neighbourhood; an apply reads everything).
    pub fn objects_read(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The durations of the commits since the store was opened.
    pub fn commit_durations(&self) -> &prometheus_client::metrics::histogram::Histogram {
        &self.commits
    }

    fn initialise(&self) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.write(|tx| {
            // Creating every table here lets readers assume they exist.
            let mut meta = tx.tx.open_table(META)?;
            for kind in Kind::ALL {
                tx.tx.open_table(objects(kind))?;
            }
            tx.tx.open_table(ENGINES)?;
            tx.tx.open_table(TOKENS)?;
            tx.tx.open_table(EVENTS)?;
            match get_meta(&meta, "schema")? {
                0 => {
                    meta.insert("schema", SCHEMA)?;
                    tx.revision();
                }
                SCHEMA => {}
                found => return Err(StoreError::Schema { path, found }),
            }
            drop(meta);
            let mut apps = tx.tx.open_table(objects(Kind::ApplicationProfile))?;
            if apps.get(SYSTEM_L4_APPLICATION)?.is_none() {
                let revision = tx.revision();
                let record = Versioned {
                    revision,
                    object: system_l4_application(),
                };
                apps.insert(SYSTEM_L4_APPLICATION, to_json(&record).as_slice())?;
                tx.config_changed = true;
                tx.event(NewEvent {
                    subject: format!(
                        "{}/{SYSTEM_L4_APPLICATION}",
                        Kind::ApplicationProfile.segment()
                    ),
                    state: "created".into(),
                    previous: None,
                    reason: "built in".into(),
                });
            }
            Ok(())
        })
    }

    /// Runs `change` in one write transaction and commits it (durably) if it changed
    /// something; aborts it if it returns an error or changed nothing.
    pub fn write<T>(
        &self,
        change: impl FnOnce(&mut Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut wtx = self.db.begin_write()?;
        wtx.set_durability(Durability::Immediate);
        let base = {
            let meta = wtx.open_table(META)?;
            get_meta(&meta, "revision")?
        };
        let mut tx = Tx {
            tx: &wtx,
            reads: &self.reads,
            base,
            changed: false,
            config_changed: false,
            events: Vec::new(),
        };
        let out = match change(&mut tx) {
            Ok(out) => out,
            Err(e) => {
                wtx.abort()?;
                return Err(e);
            }
        };
        if !tx.changed {
            wtx.abort()?;
            return Ok(out);
        }
        let revision = base + 1;
        let (config_changed, events) = (tx.config_changed, std::mem::take(&mut tx.events));
        {
            let mut meta = wtx.open_table(META)?;
            meta.insert("revision", revision)?;
            if config_changed {
                meta.insert("config_revision", revision)?;
            }
            let mut table = wtx.open_table(EVENTS)?;
            let mut id = table.last()?.map(|(k, _)| k.value()).unwrap_or(0);
            let time = now();
            for e in events {
                id += 1;
                let event = Event {
                    id,
                    revision,
                    time: time.clone(),
                    subject: e.subject,
                    state: e.state,
                    previous: e.previous,
                    reason: e.reason,
                };
                table.insert(id, to_json(&event).as_slice())?;
            }
            while table.len()? > MAX_EVENTS {
                table.pop_first()?;
            }
        }
        let started = std::time::Instant::now();
        wtx.commit()?;
        self.commits.observe(started.elapsed().as_secs_f64());
        Ok(out)
    }

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    /// The store's revision and the configuration revision.
    pub fn revisions(&self) -> Result<(u64, u64), StoreError> {
        let rtx = self.read()?;
        let meta = rtx.open_table(META)?;
        Ok((
            get_meta(&meta, "revision")?,
            get_meta(&meta, "config_revision")?,
        ))
    }

    /// The whole configuration, consistent at one revision.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let rtx = self.read()?;
        let meta = rtx.open_table(META)?;
        let mut snap = Snapshot {
            revision: get_meta(&meta, "revision")?,
            config_revision: get_meta(&meta, "config_revision")?,
            ..Snapshot::default()
        };
        load_config(|kind| Ok(rtx.open_table(objects(kind))?), &mut snap)?;
        Ok(snap)
    }

    /// The objects of one kind, sorted by name, and the store's revision.
    pub fn list<T: ConfigObject>(&self) -> Result<(u64, Vec<Versioned<T>>), StoreError> {
        let rtx = self.read()?;
        let revision = get_meta(&rtx.open_table(META)?, "revision")?;
        let table = rtx.open_table(objects(T::KIND))?;
        let mut items = Vec::new();
        for entry in table.iter()? {
            let (name, value) = entry?;
            items.push(parse(|| T::KIND.path_of(name.value()), value.value())?);
        }
        Ok((revision, items))
    }

    /// One object.
    pub fn get<T: ConfigObject>(&self, name: &str) -> Result<Option<Versioned<T>>, StoreError> {
        let rtx = self.read()?;
        let table = rtx.open_table(objects(T::KIND))?;
        let value = table.get(name)?;
        value
            .map(|v| parse(|| T::KIND.path_of(name), v.value()))
            .transpose()
    }

    /// Changes the configuration in one transaction: `change` edits a copy of the stored
    /// configuration; the result must validate (the engine's rules, which include every
    /// reference between objects); then each created, changed or deleted object is written
    /// with the new revision and recorded as an event saying `cause`. A dry run, or a
    /// change that changes nothing, commits nothing. `expect`: the configuration revision
    /// the change was prepared against; if another change came first, it is refused (412).
    pub fn change_config(
        &self,
        change: impl FnOnce(&mut Config) -> Result<(), ApiError>,
        cause: &str,
        expect: Option<u64>,
        dry_run: bool,
    ) -> Result<Applied, StoreError> {
        self.change_config_if(change, cause, expect, None, dry_run)
    }

    /// [`Store::change_config`], refused (412) also if `object` (kind, name, revision) is
    /// stored with another revision: the edit of one object prepared against a version
    /// that someone else changed since (`If-Match` on the object's routes).
    pub fn change_config_if(
        &self,
        change: impl FnOnce(&mut Config) -> Result<(), ApiError>,
        cause: &str,
        expect: Option<u64>,
        object: Option<(Kind, &str, u64)>,
        dry_run: bool,
    ) -> Result<Applied, StoreError> {
        let mut index = self.index();
        let (applied, candidate) = self.write(|tx| {
            let current = tx.snapshot()?;
            if let Some((kind, name, expected)) = object {
                let stored = current.revisions.get(&(kind, name.to_owned()));
                if let Some(&stored) = stored.filter(|r| **r != expected) {
                    return Err(object_changed(kind, name, expected, stored).into());
                }
            }
            if let Some(expected) = expect.filter(|e| *e != current.config_revision) {
                return Err(ApiError::new(
                    axum::http::StatusCode::PRECONDITION_FAILED,
                    "revision_mismatch",
                    format!(
                        "the configuration changed since revision {expected} (it is at revision \
                         {}); review the changes again",
                        current.config_revision
                    ),
                )
                .into());
            }
            let mut candidate = current.config.clone();
            change(&mut candidate)?;
            // The built-in profile always exists; a declarative configuration that omits
            // it leaves it in place.
            if !candidate
                .application_profiles
                .iter()
                .any(|p| p.name == SYSTEM_L4_APPLICATION)
            {
                candidate.application_profiles.push(system_l4_application());
            }
            candidate.validate().map_err(ApiError::validation)?;
            let diff = ConfigDiff::between(&current.config, &candidate);
            if dry_run || diff.is_empty() {
                let applied = Applied {
                    config_revision: current.config_revision,
                    committed: false,
                    diff,
                };
                return Ok((applied, None));
            }
            let revision = tx.revision();
            tx.config_changed = true;
            for (kind, name, what) in diff.touched() {
                let mut table = tx.tx.open_table(objects(kind))?;
                match kind.json_of(&candidate, name) {
                    Some(object) => {
                        let record = Versioned { revision, object };
                        table.insert(name, to_json(&record).as_slice())?;
                    }
                    None => {
                        table.remove(name)?;
                    }
                }
                tx.events.push(NewEvent {
                    subject: format!("{}/{name}", kind.segment()),
                    state: what.to_owned(),
                    previous: None,
                    reason: cause.to_owned(),
                });
            }
            let applied = Applied {
                config_revision: revision,
                committed: true,
                diff,
            };
            Ok((applied, Some(candidate)))
        })?;
        if let Some(candidate) = candidate {
            *index = ConfigIndex::of(&candidate);
        }
        Ok(applied)
    }

    /// Creates, replaces or deletes one object, in one transaction whose cost follows what
    /// the object touches, not the size of the configuration: it reads the object, and
    /// validates it with only the objects the index names as able to change its validity
    /// or to be changed by it (see [`neighbourhood`]); a delete only checks that nothing
    /// refers to the object. `expect`: the object's revision the change was prepared
    /// against (`If-Match`); another one is refused (412). Refusals say what
    /// [`Store::change_config`] would: 404 for a missing object, 409 for an existing name,
    /// the built-in profile or an object in use, 422 with every validation error.
    pub fn change_object<T: Indexed>(
        &self,
        name: &str,
        edit: Edit<T>,
        cause: &str,
        expect: Option<u64>,
    ) -> Result<ObjectChange<T>, StoreError> {
        let kind = T::KIND;
        let mut index = self.index();
        let (change, old) = self.write(|tx| {
            let config_revision = get_meta(&tx.tx.open_table(META)?, "config_revision")?;
            let stored: Option<Versioned<T>> = load(tx, kind, name)?;
            if let (Some(expected), Some(stored)) = (expect, &stored) {
                if stored.revision != expected {
                    return Err(object_changed(kind, name, expected, stored.revision).into());
                }
            }
            let new = match (edit, &stored) {
                (Edit::Create(_), Some(_)) => return Err(already_exists(kind, name).into()),
                (Edit::Replace(_) | Edit::Delete, None) => {
                    return Err(ApiError::object_not_found(kind, name).into())
                }
                (Edit::Create(object) | Edit::Replace(object), _) => Some(object),
                (Edit::Delete, Some(_)) => None,
            };
            let mut before = Config::default();
            T::list_mut(&mut before).extend(stored.iter().map(|s| s.object.clone()));
            let mut after = Config::default();
            T::list_mut(&mut after).extend(new.iter().cloned());
            let diff = ConfigDiff::between(&before, &after);
            if diff.is_empty() {
                let unchanged = ObjectChange {
                    applied: Applied {
                        config_revision,
                        committed: false,
                        diff,
                    },
                    stored,
                };
                return Ok((unchanged, None));
            }
            match &new {
                Some(object) => {
                    let part = neighbourhood(tx, &index, object)?;
                    part.validate_part(&index.known_names())
                        .map_err(ApiError::validation)?;
                }
                None => {
                    if kind == Kind::ApplicationProfile && name == SYSTEM_L4_APPLICATION {
                        return Err(built_in(kind, name).into());
                    }
                    let users = index.referrers(kind, name);
                    if !users.is_empty() {
                        return Err(in_use(tx, kind, name, &users)?.into());
                    }
                }
            }
            let revision = tx.revision();
            tx.config_changed = true;
            let mut table = tx.tx.open_table(objects(kind))?;
            let now_stored = match new {
                Some(object) => {
                    let record = Versioned { revision, object };
                    table.insert(name, to_json(&record).as_slice())?;
                    Some(record)
                }
                None => {
                    table.remove(name)?;
                    None
                }
            };
            for (kind, name, what) in diff.touched() {
                tx.events.push(NewEvent {
                    subject: format!("{}/{name}", kind.segment()),
                    state: what.to_owned(),
                    previous: None,
                    reason: cause.to_owned(),
                });
            }
            let change = ObjectChange {
                applied: Applied {
                    config_revision: revision,
                    committed: true,
                    diff,
                },
                stored: now_stored,
            };
            Ok((change, Some(stored.map(|s| s.object))))
        })?;
        if let Some(old) = old {
            if let Some(old) = &old {
                index.remove(old);
            }
            if let Some(new) = &change.stored {
                index.insert(&new.object);
            }
        }
        Ok(change)
    }

    /// Events with a revision above `since`, oldest first, at most `limit`; and the
    /// store's revision.
    pub fn events(&self, since: u64, limit: usize) -> Result<(u64, Vec<Event>), StoreError> {
        let rtx = self.read()?;
        let revision = get_meta(&rtx.open_table(META)?, "revision")?;
        let table = match rtx.open_table(EVENTS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok((revision, Vec::new())),
            Err(e) => return Err(e.into()),
        };
        // Ids and revisions grow together: bisect the ids for the first event after
        // `since` (a few reads, not one per kept event), then read `limit` forward.
        let revision_from = |id: u64| -> Result<Option<u64>, StoreError> {
            let Some(entry) = table.range(id..)?.next() else {
                return Ok(None);
            };
            let (id, value) = entry?;
            let event: Event = parse(|| format!("event {}", id.value()), value.value())?;
            Ok(Some(event.revision))
        };
        let (mut lo, mut hi) = match (table.first()?, table.last()?) {
            (Some((first, _)), Some((last, _))) => (first.value(), last.value() + 1),
            _ => return Ok((revision, Vec::new())),
        };
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match revision_from(mid)? {
                Some(r) if r > since => hi = mid,
                _ => lo = mid + 1,
            }
        }
        let mut newer = Vec::new();
        for entry in table.range(lo..)?.take(limit) {
            let (id, value) = entry?;
            newer.push(parse(|| format!("event {}", id.value()), value.value())?);
        }
        Ok((revision, newer))
    }

    /// Every registered engine, sorted by name.
    pub fn engines(&self) -> Result<Vec<EngineRecord>, StoreError> {
        let rtx = self.read()?;
        let table = rtx.open_table(ENGINES)?;
        let mut all = Vec::new();
        for entry in table.iter()? {
            let (name, value) = entry?;
            all.push(parse(
                || format!("service engine {:?}", name.value()),
                value.value(),
            )?);
        }
        Ok(all)
    }

    /// One registered engine.
    pub fn engine(&self, name: &str) -> Result<Option<EngineRecord>, StoreError> {
        let rtx = self.read()?;
        let table = rtx.open_table(ENGINES)?;
        let value = table.get(name)?;
        value
            .map(|v| parse(|| format!("service engine {name:?}"), v.value()))
            .transpose()
    }

    /// Registers an engine, or updates its addresses and version; `connected` is the
    /// engine's connection event, if registering connects it, recorded in the same
    /// transaction. Returns the record and whether the registration changed.
    pub fn register_engine(
        &self,
        name: &str,
        addresses: &[std::net::IpAddr],
        version: &str,
        connected: Option<NewEvent>,
    ) -> Result<(EngineRecord, bool), StoreError> {
        self.write(|tx| {
            let mut table = tx.tx.open_table(ENGINES)?;
            let existing: Option<EngineRecord> = table
                .get(name)?
                .map(|v| parse(|| format!("service engine {name:?}"), v.value()))
                .transpose()?;
            if let Some(record) = &existing {
                if record.addresses == addresses && record.version == version {
                    if let Some(event) = connected {
                        tx.event(event);
                    }
                    return Ok((record.clone(), false));
                }
            }
            let revision = tx.revision();
            let record = EngineRecord {
                name: name.to_owned(),
                addresses: addresses.to_vec(),
                version: version.to_owned(),
                registered_at: existing
                    .as_ref()
                    .map_or_else(now, |r| r.registered_at.clone()),
                revision,
            };
            table.insert(name, to_json(&record).as_slice())?;
            let addresses: Vec<String> = addresses.iter().map(ToString::to_string).collect();
            tx.event(NewEvent {
                subject: format!("service-engines/{name}"),
                state: "registered".into(),
                previous: None,
                reason: match existing {
                    None => format!(
                        "registered with addresses [{}], version {version}",
                        addresses.join(", ")
                    ),
                    Some(_) => format!(
                        "registration updated: addresses [{}], version {version}",
                        addresses.join(", ")
                    ),
                },
            });
            if let Some(event) = connected {
                tx.event(event);
            }
            Ok((record, true))
        })
    }

    /// Removes an engine's registration; returns the revision, or `None` if it was not
    /// registered.
    pub fn unregister_engine(&self, name: &str, cause: &str) -> Result<Option<u64>, StoreError> {
        self.write(|tx| {
            let mut table = tx.tx.open_table(ENGINES)?;
            if table.remove(name)?.is_none() {
                return Ok(None);
            }
            let revision = tx.revision();
            tx.event(NewEvent {
                subject: format!("service-engines/{name}"),
                state: "unregistered".into(),
                previous: None,
                reason: cause.to_owned(),
            });
            Ok(Some(revision))
        })
    }

    /// Appends events in one transaction (one revision).
    pub fn record(&self, events: Vec<NewEvent>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            for e in events {
                tx.event(e);
            }
            Ok(())
        })
    }

    /// Every token, by the hex SHA-256 of the token.
    pub fn tokens(&self) -> Result<Vec<(String, TokenRecord)>, StoreError> {
        let rtx = self.read()?;
        let table = rtx.open_table(TOKENS)?;
        let mut all = Vec::new();
        for entry in table.iter()? {
            let (hash, value) = entry?;
            let hash = hash.value().to_owned();
            let record = parse(|| "a token record".to_owned(), value.value())?;
            all.push((hash, record));
        }
        Ok(all)
    }

    /// Replaces the admin tokens named `name` with the one whose hash is `hash`.
    pub fn replace_token(&self, name: &str, hash: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut table = tx.tx.open_table(TOKENS)?;
            let old = token_hashes_named(&table, name)?;
            for h in &old {
                table.remove(h.as_str())?;
            }
            let record = TokenRecord {
                name: name.to_owned(),
                created_at: now(),
                role: Some(Role::Admin),
                engine: None,
            };
            table.insert(hash, to_json(&record).as_slice())?;
            tx.event(NewEvent {
                subject: format!("tokens/{name}"),
                state: "created".into(),
                previous: None,
                reason: if old.is_empty() {
                    "first start: an admin token was created".into()
                } else {
                    format!("a new {name} token replaced the previous one")
                },
            });
            Ok(())
        })
    }

    /// Stores a new token under `hash`; refused (409) if a token has this name. Returns
    /// the record and the revision of the change.
    pub fn create_token(
        &self,
        record: TokenRecord,
        hash: &str,
        reason: &str,
    ) -> Result<u64, StoreError> {
        self.write(|tx| {
            let mut table = tx.tx.open_table(TOKENS)?;
            if !token_hashes_named(&table, &record.name)?.is_empty() {
                return Err(StoreError::Refused(
                    ApiError::new(
                        axum::http::StatusCode::CONFLICT,
                        "already_exists",
                        format!(
                            "a token named {:?} exists; revoke it first (DELETE \
                             /api/v1/tokens/{})",
                            record.name, record.name
                        ),
                    )
                    .with_detail("name", "a token with this name exists"),
                ));
            }
            table.insert(hash, to_json(&record).as_slice())?;
            let revision = tx.revision();
            let role = record.role();
            tx.event(NewEvent {
                subject: format!("tokens/{}", record.name),
                state: "created".into(),
                previous: None,
                reason: match &record.engine {
                    Some(engine) => format!("{reason}: role {role} for engine {engine}"),
                    None => format!("{reason}: role {role}"),
                },
            });
            Ok(revision)
        })
    }

    /// Removes the token named `name`: the revision of the change, or `None` if no token
    /// has this name.
    pub fn revoke_token(&self, name: &str, reason: &str) -> Result<Option<u64>, StoreError> {
        self.write(|tx| {
            let mut table = tx.tx.open_table(TOKENS)?;
            let old = token_hashes_named(&table, name)?;
            if old.is_empty() {
                return Ok(None);
            }
            for h in &old {
                table.remove(h.as_str())?;
            }
            let revision = tx.revision();
            tx.event(NewEvent {
                subject: format!("tokens/{name}"),
                state: "revoked".into(),
                previous: Some("created".into()),
                reason: reason.to_owned(),
            });
            Ok(Some(revision))
        })
    }

    /// Gives the `admin` role to the tokens stored before roles existed (they could do
    /// everything, so they keep doing it); the names of the tokens migrated.
    pub fn migrate_token_roles(&self) -> Result<Vec<String>, StoreError> {
        let stale: Vec<(String, TokenRecord)> = self
            .tokens()?
            .into_iter()
            .filter(|(_, r)| r.role.is_none())
            .collect();
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            let mut table = tx.tx.open_table(TOKENS)?;
            let mut names = Vec::new();
            for (hash, mut record) in stale {
                record.role = Some(Role::Admin);
                table.insert(hash.as_str(), to_json(&record).as_slice())?;
                tx.event(NewEvent {
                    subject: format!("tokens/{}", record.name),
                    state: "admin".into(),
                    previous: None,
                    reason: "store migration: tokens from before roles could do everything, \
                             so they became admin tokens"
                        .into(),
                });
                names.push(record.name);
            }
            Ok(names)
        })
    }
}

/// The hashes of the tokens named `name`.
fn token_hashes_named(
    table: &redb::Table<'_, &str, &[u8]>,
    name: &str,
) -> Result<Vec<String>, StoreError> {
    let mut found = Vec::new();
    for entry in table.iter()? {
        let (h, value) = entry?;
        let record: TokenRecord = parse(|| "a token record".to_owned(), value.value())?;
        if record.name == name {
            found.push(h.value().to_owned());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(STORE_FILE)).unwrap();
        (dir, store)
    }

    const SEED: &str = include_str!("../../config/examples/seed.yaml");

    #[test]
    fn tokens_stored_before_roles_become_admin_tokens() {
        let (_dir, store) = store();
        // A record as the previous version wrote it: no role.
        store
            .write(|tx| {
                let mut table = tx.tx.open_table(TOKENS)?;
                let old = br#"{"name":"admin","created_at":"2026-01-01T00:00:00.000Z"}"#;
                table.insert("ab12", old.as_slice())?;
                tx.revision();
                Ok(())
            })
            .unwrap();
        assert_eq!(store.tokens().unwrap()[0].1.role, None);
        assert_eq!(store.migrate_token_roles().unwrap(), ["admin"]);
        let (hash, record) = &store.tokens().unwrap()[0];
        assert_eq!((hash.as_str(), record.role), ("ab12", Some(Role::Admin)));
        assert!(store.migrate_token_roles().unwrap().is_empty(), "once");
    }

    #[test]
    fn a_new_store_has_the_built_in_profile_at_revision_1() {
        let (_dir, store) = store();
        assert_eq!(store.revisions().unwrap(), (1, 1));
        let (_, apps) = store.list::<ApplicationProfile>().unwrap();
        assert_eq!(apps.len(), 1);
        assert_eq!(apps[0].object, system_l4_application());
        assert_eq!(apps[0].revision, 1);
    }

    #[test]
    fn reopening_keeps_everything_and_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        {
            let store = Store::open(&path).unwrap();
            let seed = Config::from_yaml_str(SEED).unwrap();
            let applied = store
                .change_config(
                    |c| {
                        *c = seed;
                        Ok(())
                    },
                    "test",
                    None,
                    false,
                )
                .unwrap();
            assert!(applied.committed);
            assert_eq!(applied.config_revision, 2);
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.revisions().unwrap(), (2, 2));
        let snap = store.snapshot().unwrap();
        assert_eq!(snap.config.virtual_services.len(), 3);
        assert_eq!(snap.revisions[&(Kind::Pool, "web-pool".to_owned())], 2);
        assert_eq!(
            snap.revisions[&(Kind::ApplicationProfile, SYSTEM_L4_APPLICATION.to_owned())],
            1,
            "declaring the built-in profile again does not change it"
        );
    }

    #[test]
    fn a_second_open_of_the_same_file_is_refused() {
        let (dir, _store) = store();
        match Store::open(&dir.path().join(STORE_FILE)) {
            Err(StoreError::InUse(_)) => {}
            other => panic!("expected InUse, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_refused_change_leaves_no_trace() {
        let (_dir, store) = store();
        let before = store.revisions().unwrap();
        let err = store
            .change_config(
                |c| {
                    c.pools.push(Pool {
                        name: "p".into(),
                        servers: vec![],
                        lb_algorithm: Default::default(),
                        consistent_hash: Default::default(),
                        table_size: Some(4),
                        health_monitors: vec![],
                    });
                    Ok(())
                },
                "test",
                None,
                false,
            )
            .unwrap_err();
        let StoreError::Refused(e) = err else {
            panic!("expected a refusal")
        };
        assert_eq!(e.body.details[0].path, r#"pools["p"].table_size"#);
        assert_eq!(store.revisions().unwrap(), before);
        assert!(store.list::<Pool>().unwrap().1.is_empty());
        assert_eq!(store.events(1, 100).unwrap().1, vec![]);
    }

    #[test]
    fn events_since_a_revision() {
        let (_dir, store) = store();
        store
            .record(vec![NewEvent {
                subject: "x".into(),
                state: "a".into(),
                previous: None,
                reason: "r".into(),
            }])
            .unwrap();
        let (revision, all) = store.events(0, 100).unwrap();
        assert_eq!(revision, 2);
        let states: Vec<(u64, &str)> = all.iter().map(|e| (e.revision, e.state.as_str())).collect();
        assert_eq!(states, [(1, "created"), (2, "a")]);
        assert_eq!(store.events(1, 100).unwrap().1.len(), 1);
        assert_eq!(store.events(2, 100).unwrap().1.len(), 0);
        assert_eq!(store.events(0, 1).unwrap().1[0].revision, 1, "oldest first");
    }

    #[test]
    fn events_after_every_revision_are_found_by_bisection() {
        let (_dir, store) = store();
        // Revisions 2..=40, some with two events (one revision, two ids).
        for r in 2..=40u64 {
            let event = |state: &str| NewEvent {
                subject: format!("x/{r}"),
                state: state.into(),
                previous: None,
                reason: "r".into(),
            };
            let mut events = vec![event("a")];
            if r % 3 == 0 {
                events.push(event("b"));
            }
            store.record(events).unwrap();
        }
        let (_, all) = store.events(0, usize::MAX).unwrap();
        for since in 0..=41 {
            let expected: Vec<&Event> = all.iter().filter(|e| e.revision > since).collect();
            let (_, got) = store.events(since, usize::MAX).unwrap();
            assert_eq!(got.iter().collect::<Vec<_>>(), expected, "since {since}");
            let (_, two) = store.events(since, 2).unwrap();
            assert_eq!(
                two.iter().collect::<Vec<_>>(),
                expected[..expected.len().min(2)]
            );
        }
    }
}

#[cfg(test)]
mod incremental_tests;
