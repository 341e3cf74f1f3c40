//! The client commands: `apply`, `get`, `create`, `replace`, `delete`, `events`.
//!
//! They speak the controller's API (`api_client`) and print tables for people, or the
//! API's JSON (`-o json`) or the objects as YAML (`-o yaml`, ready for `replace -f` or,
//! for the whole configuration, `apply -f`).

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use ricochet_api::diff::{ConfigDiff, FieldChange};
use ricochet_api::kind::Kind;
use ricochet_api::text::terminal_safe;
use ricochet_api::types::{
    ApplyResult, Configuration, Deleted, EventList, ObjectList, ServiceEngine, ServiceEngineList,
    StatusView, Versioned,
};
use ricochet_config::{
    ApplicationProfile, Config, HealthMonitor, NetworkProfile, Pool, ServiceEngineGroup,
    VirtualService,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::api_client::{Client, ClientArgs};

/// What `get` and friends name: a configuration kind, the engines, or the whole
/// configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One kind of configuration object.
    Object(Kind),
    /// Registered service engines.
    ServiceEngines,
    /// The whole configuration.
    Configuration,
    /// Virtual services and servers up, degraded or down.
    Status,
}

/// Kind names: plural, singular, without dashes, with underscores, and short aliases.
pub fn parse_target(text: &str) -> Result<Target, String> {
    let t = text.to_ascii_lowercase().replace('_', "-");
    let target = match t.as_str() {
        "network-profiles" | "network-profile" | "networkprofiles" | "networkprofile"
        | "netprofs" | "netprof" | "np" => Target::Object(Kind::NetworkProfile),
        "application-profiles"
        | "application-profile"
        | "applicationprofiles"
        | "applicationprofile"
        | "appprofs"
        | "appprof"
        | "ap" => Target::Object(Kind::ApplicationProfile),
        "health-monitors" | "health-monitor" | "healthmonitors" | "healthmonitor" | "monitors"
        | "monitor" | "hm" => Target::Object(Kind::HealthMonitor),
        "pools" | "pool" => Target::Object(Kind::Pool),
        "service-engine-groups"
        | "service-engine-group"
        | "serviceenginegroups"
        | "serviceenginegroup"
        | "se-groups"
        | "se-group"
        | "segs"
        | "seg" => Target::Object(Kind::ServiceEngineGroup),
        "virtual-services" | "virtual-service" | "virtualservices" | "virtualservice" | "vs"
        | "vsvc" => Target::Object(Kind::VirtualService),
        "service-engines" | "service-engine" | "serviceengines" | "serviceengine" | "engines"
        | "engine" | "se" => Target::ServiceEngines,
        "configuration" | "config" => Target::Configuration,
        "status" | "health" => Target::Status,
        _ => {
            return Err(format!(
                "unknown kind {text:?}: use virtual-services (vs), pools (pool), \
                 network-profiles (netprof), application-profiles (appprof), \
                 health-monitors (hm), service-engine-groups (seg), service-engines (se), \
                 configuration or status"
            ))
        }
    };
    Ok(target)
}

fn object_kind(target: Target, verb: &str) -> anyhow::Result<Kind> {
    match target {
        Target::Object(kind) => Ok(kind),
        Target::ServiceEngines => bail!(
            "service engines register themselves; `ricochet {verb}` works on virtual-services, \
             pools, network-profiles, application-profiles, health-monitors and \
             service-engine-groups (which name the engines that carry a virtual service)"
        ),
        Target::Configuration => {
            bail!("the whole configuration is applied with `ricochet apply -f FILE`, not `{verb}`")
        }
        Target::Status => bail!(
            "the status comes from the engines' health monitors; `ricochet {verb}` works on \
             virtual-services, pools, network-profiles, application-profiles, health-monitors \
             and service-engine-groups"
        ),
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Columns for people.
    Table,
    /// The API's answer, as is.
    Json,
    /// The objects themselves, ready to edit and send back.
    Yaml,
}

// ---------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The configuration file (YAML, the same model as `ricochet engine --config`).
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Show what would change, apply nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Apply without asking (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// virtual-services (vs), pools, network-profiles (netprof), application-profiles
    /// (appprof), health-monitors (hm), service-engine-groups (seg), service-engines (se),
    /// configuration, status (virtual services up / degraded / down and their servers'
    /// health).
    #[arg(value_parser = parse_target)]
    pub kind: Target,
    /// One object; all when omitted.
    pub name: Option<String>,
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Debug)]
pub struct FileArgs {
    /// The kind of the object (see `ricochet get --help`).
    #[arg(value_parser = parse_target)]
    pub kind: Target,
    /// The object, YAML or JSON; `-` reads stdin.
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The kind of the object (see `ricochet get --help`).
    #[arg(value_parser = parse_target)]
    pub kind: Target,
    /// The object's name.
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Only events after this revision.
    #[arg(long, default_value_t = 0)]
    pub since: u64,
    /// At most this many (oldest first).
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A name as a URL path segment, percent-encoded. A name longer than any the controller
/// accepts is refused here: it names nothing, and a URL over 64 KiB is more than the HTTP
/// library takes.
pub(crate) fn segment(name: &str) -> anyhow::Result<String> {
    const LONGEST: usize = 253; // engine names; object names are shorter
    if name.len() > LONGEST {
        bail!(
            "{:?}... ({} bytes) is no name: names have at most {} bytes ({})",
            name.chars().take(20).collect::<String>(),
            name.len(),
            ricochet_config::MAX_NAME_LEN,
            ricochet_config::NAME_RULE
        );
    }
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

fn collection(kind: Kind) -> String {
    format!("/api/v1/{}", kind.segment())
}

// ---------------------------------------------------------------------------------------
// apply
// ---------------------------------------------------------------------------------------

pub fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    // Parsed here first: a syntax error gets the file's line and column.
    let config = Config::load(&args.file)?;
    let body = serde_json::to_value(&config).expect("Config serializes");
    let client = args.client.client();

    let (preview, _): (ApplyResult, _) = client
        .call(
            "PUT",
            "/api/v1/configuration?dry_run=true",
            Some(&body),
            &[],
        )
        .map_err(|e| anyhow::anyhow!("{e}\nnothing was applied"))?;
    if preview.diff.is_empty() {
        outln!(
            "No changes: the controller already has this configuration (revision {}).",
            preview.revision
        );
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "Changes to the configuration at revision {}:",
        preview.revision
    );
    print!("{}", render_diff(&preview.diff));
    if args.dry_run {
        outln!("Dry run: nothing was applied.");
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!("not applied: confirm with --yes (stdin is not a terminal to ask)");
        }
        print!("Apply these changes? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            outln!("Not applied.");
            return Ok(ExitCode::FAILURE);
        }
    }
    // Applied only if the configuration is still the one previewed.
    let (applied, _): (ApplyResult, _) = client
        .call(
            "PUT",
            "/api/v1/configuration",
            Some(&body),
            &[("If-Match", format!("\"{}\"", preview.revision))],
        )
        .map_err(|e| anyhow::anyhow!("{e}\nnothing was applied"))?;
    if applied.committed {
        outln!("Applied: configuration revision {}.", applied.revision);
    } else {
        outln!(
            "No changes: the controller already has this configuration (revision {}).",
            applied.revision
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn value_text(v: &Option<Value>) -> String {
    match v {
        None => "(unset)".to_owned(),
        Some(v) => v.to_string(),
    }
}

/// The diff as `+ created`, `~ changed` (with each field), `- deleted` lines.
pub fn render_diff(diff: &ConfigDiff) -> String {
    let mut out = String::new();
    for kind in Kind::ALL {
        let d = diff.kind(kind);
        for name in &d.created {
            out.push_str(&format!("  + {kind} {name}\n"));
        }
        for changed in &d.changed {
            out.push_str(&format!("  ~ {kind} {}\n", changed.name));
            for FieldChange { path, old, new } in &changed.fields {
                out.push_str(&format!(
                    "      {path}: {} -> {}\n",
                    value_text(old),
                    value_text(new)
                ));
            }
        }
        for name in &d.deleted {
            out.push_str(&format!("  - {kind} {name}\n"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// get
// ---------------------------------------------------------------------------------------

pub fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.client();
    match args.kind {
        Target::Object(Kind::NetworkProfile) => get_objects::<NetworkProfile>(&client, &args),
        Target::Object(Kind::ApplicationProfile) => {
            get_objects::<ApplicationProfile>(&client, &args)
        }
        Target::Object(Kind::HealthMonitor) => get_objects::<HealthMonitor>(&client, &args),
        Target::Object(Kind::Pool) => get_objects::<Pool>(&client, &args),
        Target::Object(Kind::ServiceEngineGroup) => {
            get_objects::<ServiceEngineGroup>(&client, &args)
        }
        Target::Object(Kind::VirtualService) => get_objects::<VirtualService>(&client, &args),
        Target::ServiceEngines => get_engines(&client, &args),
        Target::Status => get_status(&client, &args),
        Target::Configuration => {
            if args.name.is_some() {
                bail!("`get configuration` takes no name");
            }
            let answer: Value = client.get("/api/v1/configuration")?;
            let typed: Configuration = serde_json::from_value(answer.clone())?;
            match args.output {
                Output::Json => print_json(&answer),
                Output::Yaml | Output::Table => {
                    outln!("# configuration revision {}", typed.revision);
                    print_yaml(&typed.config)?;
                }
            }
            Ok(())
        }
    }?;
    Ok(ExitCode::SUCCESS)
}

fn print_json(value: &Value) {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    // JSON escapes C0 controls itself, not DEL or C1; `\u{..}` is still JSON inside a string.
    outln!("{}", terminal_safe(&text));
}

fn print_yaml(value: &impl Serialize) -> anyhow::Result<()> {
    print!("{}", terminal_safe(&serde_yaml::to_string(value)?));
    Ok(())
}

fn get_objects<T: Row + DeserializeOwned + Serialize>(
    client: &Client,
    args: &GetArgs,
) -> anyhow::Result<()> {
    let kind = T::KIND;
    let (answer, items): (Value, Vec<Versioned<T>>) = match &args.name {
        Some(name) => {
            let answer: Value = client.get(&format!("{}/{}", collection(kind), segment(name)?))?;
            let one: Versioned<T> = serde_json::from_value(answer.clone())?;
            (answer, vec![one])
        }
        None => {
            let answer: Value = client.get(&collection(kind))?;
            let list: ObjectList<T> = serde_json::from_value(answer.clone())?;
            (answer, list.items)
        }
    };
    match args.output {
        Output::Json => print_json(&answer),
        Output::Yaml => match (&args.name, items.as_slice()) {
            (Some(_), [one]) => print_yaml(&one.object)?,
            _ => print_yaml(&items.iter().map(|i| &i.object).collect::<Vec<_>>())?,
        },
        Output::Table => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| {
                    let mut row = i.object.row();
                    row.push(i.revision.to_string());
                    row
                })
                .collect();
            let mut header: Vec<&str> = T::HEADER.to_vec();
            header.push("REVISION");
            print!("{}", table(&header, &rows));
            if rows.is_empty() {
                outln!("(no {}s)", kind.noun());
            }
        }
    }
    Ok(())
}

/// `get status [VS]`: each virtual service's state and reason, then its servers'.
fn get_status(client: &Client, args: &GetArgs) -> anyhow::Result<()> {
    let answer: Value = client.get("/api/v1/status")?;
    let mut view: StatusView = serde_json::from_value(answer.clone())?;
    if let Some(name) = &args.name {
        view.virtual_services.retain(|vs| &vs.name == name);
        if view.virtual_services.is_empty() {
            bail!("virtual service {name:?} does not exist");
        }
    }
    match args.output {
        Output::Json => print_json(&serde_json::to_value(&view)?),
        Output::Yaml => print_yaml(&view)?,
        Output::Table => {
            let mut rows = Vec::new();
            for vs in &view.virtual_services {
                rows.push(vec![
                    vs.name.clone(),
                    vs.vip.to_string(),
                    vs.pool.clone(),
                    vs.state.as_str().to_owned(),
                    "-".to_owned(),
                    vs.reason.clone(),
                ]);
                for server in &vs.servers {
                    let state = if server.enabled {
                        server.state.as_str()
                    } else {
                        "disabled"
                    };
                    rows.push(vec![
                        format!("  {}", server.ip),
                        String::new(),
                        String::new(),
                        state.to_owned(),
                        server.since.clone().unwrap_or_else(|| "-".to_owned()),
                        server.reason.clone().unwrap_or_default(),
                    ]);
                }
            }
            print!(
                "{}",
                table(
                    &[
                        "VIRTUAL SERVICE / SERVER",
                        "VIP",
                        "POOL",
                        "STATE",
                        "SINCE",
                        "REASON"
                    ],
                    &rows
                )
            );
            if view.virtual_services.is_empty() {
                outln!("(no virtual services)");
            }
        }
    }
    Ok(())
}

/// An engine's BGP sessions in a table cell: `192.168.33.1 established, fc00::1 connecting`.
fn bgp_sessions(b: &ricochet_api::types::BgpReport) -> String {
    if b.sessions.is_empty() {
        return "none".to_owned();
    }
    b.sessions
        .iter()
        .map(|s| format!("{} {}", s.peer, s.state.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn get_engines(client: &Client, args: &GetArgs) -> anyhow::Result<()> {
    let (answer, engines): (Value, Vec<ServiceEngine>) = match &args.name {
        Some(name) => {
            let answer: Value =
                client.get(&format!("/api/v1/service-engines/{}", segment(name)?))?;
            let one: ServiceEngine = serde_json::from_value(answer.clone())?;
            (answer, vec![one])
        }
        None => {
            let answer: Value = client.get("/api/v1/service-engines")?;
            let list: ServiceEngineList = serde_json::from_value(answer.clone())?;
            (answer, list.items)
        }
    };
    match args.output {
        Output::Json => print_json(&answer),
        Output::Yaml => print_yaml(&engines)?,
        Output::Table => {
            let rows: Vec<Vec<String>> = engines
                .iter()
                .map(|e| {
                    let report = e.report.as_ref().map(|r| &r.report);
                    vec![
                        e.name.clone(),
                        join(e.addresses.iter()),
                        e.version.clone(),
                        e.connection.as_str().to_owned(),
                        report.map_or("-".to_owned(), |r| r.state.as_str().to_owned()),
                        report
                            .and_then(|r| r.revision)
                            .map_or("-".to_owned(), |r| r.to_string()),
                        e.last_seen.clone().unwrap_or_else(|| "-".to_owned()),
                        report
                            .and_then(|r| r.bgp.as_ref())
                            .map_or("-".to_owned(), bgp_sessions),
                        report
                            .and_then(|r| r.bgp.as_ref())
                            .map_or("-".to_owned(), |b| {
                                let vips: Vec<String> = b
                                    .vips
                                    .iter()
                                    .filter(|v| v.announced)
                                    .map(|v| v.vip.to_string())
                                    .collect();
                                if vips.is_empty() {
                                    "none".to_owned()
                                } else {
                                    vips.join(",")
                                }
                            }),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "NAME",
                        "ADDRESSES",
                        "VERSION",
                        "CONNECTION",
                        "STATE",
                        "RUNS REVISION",
                        "LAST SEEN",
                        "BGP SESSIONS",
                        "ANNOUNCED"
                    ],
                    &rows
                )
            );
            if rows.is_empty() {
                outln!("(no service engines registered)");
            }
            for e in &engines {
                let bgp = e.report.as_ref().and_then(|r| r.report.bgp.as_ref());
                if let Some(err) = bgp.and_then(|b| b.error.as_ref()) {
                    outln!("BGP ERROR {}: {err}", e.name);
                }
                if args.name.is_some() {
                    for v in bgp.iter().flat_map(|b| &b.vips) {
                        let what = if v.announced {
                            "announced"
                        } else {
                            "withdrawn"
                        };
                        outln!("{} {what}: {}", v.vip, v.reason);
                    }
                }
                for w in e.report.iter().flat_map(|r| &r.report.warnings) {
                    outln!(
                        "WARNING {}: {} ({}): {}; to fix: {}",
                        e.name,
                        w.interface,
                        w.kind,
                        w.what,
                        w.fix
                    );
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// create, replace, delete, events
// ---------------------------------------------------------------------------------------

fn read_document(file: &Path) -> anyhow::Result<Value> {
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    // YAML is a superset of JSON: one parser reads both.
    let value: Value = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not YAML or JSON", file.display()))?;
    if !value.is_object() {
        bail!(
            "{} must hold one object (a mapping with its fields), not {}",
            file.display(),
            match value {
                Value::Array(_) => "a list",
                Value::Null => "nothing",
                _ => "a single value",
            }
        );
    }
    Ok(value)
}

pub fn create(args: FileArgs) -> anyhow::Result<ExitCode> {
    let kind = object_kind(args.kind, "create")?;
    let object = read_document(&args.file)?;
    let client = args.client.client();
    let (created, _): (Versioned<Value>, _) =
        client.call("POST", &collection(kind), Some(&object), &[])?;
    outln!(
        "created {kind} {} (revision {})",
        created.object["name"].as_str().unwrap_or_default(),
        created.revision
    );
    Ok(ExitCode::SUCCESS)
}

pub fn replace(args: FileArgs) -> anyhow::Result<ExitCode> {
    let kind = object_kind(args.kind, "replace")?;
    let object = read_document(&args.file)?;
    let Some(name) = object["name"].as_str().map(str::to_owned) else {
        bail!(
            "{} has no name: the name says which {kind} to replace",
            args.file.display()
        );
    };
    let client = args.client.client();
    let (replaced, _): (Versioned<Value>, _) = client.call(
        "PUT",
        &format!("{}/{}", collection(kind), segment(&name)?),
        Some(&object),
        &[],
    )?;
    outln!(
        "{kind} {name} is at revision {} (the revision of its last change)",
        replaced.revision
    );
    Ok(ExitCode::SUCCESS)
}

pub fn delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.client();
    let path = match args.kind {
        Target::ServiceEngines => format!("/api/v1/service-engines/{}", segment(&args.name)?),
        other => format!(
            "{}/{}",
            collection(object_kind(other, "delete")?),
            segment(&args.name)?
        ),
    };
    let (deleted, _): (Deleted, _) = client.call("DELETE", &path, None, &[])?;
    let what = match args.kind {
        Target::Object(kind) => kind.noun(),
        _ => "service engine",
    };
    outln!(
        "deleted {what} {} (revision {})",
        deleted.name,
        deleted.revision
    );
    Ok(ExitCode::SUCCESS)
}

pub fn events(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.client();
    let answer: Value = client.get(&format!(
        "/api/v1/events?since={}&limit={}",
        args.since, args.limit
    ))?;
    let list: EventList = serde_json::from_value(answer.clone())?;
    match args.output {
        Output::Json => print_json(&answer),
        Output::Yaml => print_yaml(&list.events)?,
        Output::Table => {
            let rows: Vec<Vec<String>> = list
                .events
                .iter()
                .map(|e| {
                    let state = match &e.previous {
                        Some(p) => format!("{p} -> {}", e.state),
                        None => e.state.clone(),
                    };
                    vec![
                        e.revision.to_string(),
                        e.time.clone(),
                        e.subject.clone(),
                        state,
                        e.reason.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["REVISION", "TIME", "SUBJECT", "STATE", "REASON"], &rows)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------

/// Left-aligned columns two spaces apart.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| terminal_safe(c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn join<T: ToString>(items: impl Iterator<Item = T>) -> String {
    let all: Vec<String> = items.map(|i| i.to_string()).collect();
    if all.is_empty() {
        "-".to_owned()
    } else {
        all.join(", ")
    }
}

/// A model type's table columns.
trait Row {
    const KIND: Kind;
    const HEADER: &'static [&'static str];
    fn row(&self) -> Vec<String>;
}

impl Row for NetworkProfile {
    const KIND: Kind = Kind::NetworkProfile;
    const HEADER: &'static [&'static str] = &["NAME", "TYPE", "DSR", "IDLE TIMEOUT"];
    fn row(&self) -> Vec<String> {
        let dsr = match &self.dsr {
            Some(d) if d.enabled => {
                format!("{}/{}", serde_plain(&d.kind), serde_plain(&d.encapsulation))
            }
            Some(_) => "disabled".to_owned(),
            None => "-".to_owned(),
        };
        vec![
            self.name.clone(),
            self.kind.as_str().to_owned(),
            dsr,
            format!("{}s", self.effective_idle_timeout()),
        ]
    }
}

impl Row for ApplicationProfile {
    const KIND: Kind = Kind::ApplicationProfile;
    const HEADER: &'static [&'static str] = &["NAME", "TYPE"];
    fn row(&self) -> Vec<String> {
        vec![self.name.clone(), serde_plain(&self.kind)]
    }
}

impl Row for HealthMonitor {
    const KIND: Kind = Kind::HealthMonitor;
    const HEADER: &'static [&'static str] = &[
        "NAME", "TYPE", "INTERVAL", "TIMEOUT", "RISE", "FALL", "PORT",
    ];
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.kind.as_str().to_owned(),
            format!("{}s", self.send_interval),
            format!("{}s", self.receive_timeout),
            self.successful_checks.to_string(),
            self.failed_checks.to_string(),
            self.monitor_port
                .map_or("service".to_owned(), |p| p.to_string()),
        ]
    }
}

impl Row for Pool {
    const KIND: Kind = Kind::Pool;
    const HEADER: &'static [&'static str] = &["NAME", "SERVERS", "HASH", "MONITORS"];
    fn row(&self) -> Vec<String> {
        let servers = join(self.servers.iter().map(|s| {
            let mut text = s.ip.to_string();
            if let Some(port) = s.port {
                text = match s.ip {
                    std::net::IpAddr::V4(_) => format!("{text}:{port}"),
                    std::net::IpAddr::V6(_) => format!("[{text}]:{port}"),
                };
            }
            if s.ratio != 1 {
                text.push_str(&format!(" (ratio {})", s.ratio));
            }
            if !s.enabled {
                text.push_str(" (disabled)");
            }
            text
        }));
        vec![
            self.name.clone(),
            servers,
            serde_plain(&self.consistent_hash),
            join(self.health_monitors.iter()),
        ]
    }
}

impl Row for ServiceEngineGroup {
    const KIND: Kind = Kind::ServiceEngineGroup;
    const HEADER: &'static [&'static str] = &["NAME", "ENGINES", "BGP", "HOLD", "BFD"];
    fn row(&self) -> Vec<String> {
        let engines = join(self.engines.iter().map(|e| {
            let addresses: Vec<String> = e.addresses.iter().map(ToString::to_string).collect();
            format!("{} ({})", e.name, addresses.join(" "))
        }));
        let (bgp, hold, bfd) = match &self.bgp {
            Some(bgp) => {
                let peers: Vec<String> = bgp
                    .peers
                    .iter()
                    .map(|p| format!("{} AS {}", p.ip, p.remote_as))
                    .collect();
                (
                    format!("AS {} \u{2192} {}", bgp.local_as, peers.join(", ")),
                    format!("{}s", bgp.hold_time),
                    if bgp.bfd {
                        format!("{}ms", bgp.bfd_interval_ms)
                    } else {
                        "off".to_owned()
                    },
                )
            }
            None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        vec![self.name.clone(), engines, bgp, hold, bfd]
    }
}

impl Row for VirtualService {
    const KIND: Kind = Kind::VirtualService;
    const HEADER: &'static [&'static str] = &[
        "NAME",
        "VIP",
        "PORTS",
        "POOL",
        "NETWORK PROFILE",
        "SE GROUP",
        "ENABLED",
    ];
    fn row(&self) -> Vec<String> {
        let ports = join(self.services.iter().map(|s| match s.range() {
            (1, 65535) => "all".to_owned(),
            (lo, hi) if lo == hi => lo.to_string(),
            (lo, hi) => format!("{lo}-{hi}"),
        }));
        vec![
            self.name.clone(),
            self.vip.to_string(),
            ports,
            self.pool.clone(),
            self.network_profile.clone(),
            self.se_group.clone().unwrap_or_else(|| "-".to_owned()),
            if self.enabled { "yes" } else { "no" }.to_owned(),
        ]
    }
}

/// A unit enum's serde name (`source_ip`, `l3`).
fn serde_plain(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_aliases() {
        for alias in [
            "vs",
            "virtual-service",
            "virtual_services",
            "VirtualServices",
        ] {
            assert_eq!(
                parse_target(alias),
                Ok(Target::Object(Kind::VirtualService)),
                "{alias}"
            );
        }
        assert_eq!(
            parse_target("netprof"),
            Ok(Target::Object(Kind::NetworkProfile))
        );
        assert_eq!(parse_target("hm"), Ok(Target::Object(Kind::HealthMonitor)));
        assert_eq!(
            parse_target("appprof"),
            Ok(Target::Object(Kind::ApplicationProfile))
        );
        assert_eq!(parse_target("pool"), Ok(Target::Object(Kind::Pool)));
        for alias in [
            "seg",
            "service-engine-groups",
            "service_engine_group",
            "SE-Groups",
        ] {
            assert_eq!(
                parse_target(alias),
                Ok(Target::Object(Kind::ServiceEngineGroup)),
                "{alias}"
            );
        }
        assert_eq!(parse_target("se"), Ok(Target::ServiceEngines));
        assert_eq!(parse_target("config"), Ok(Target::Configuration));
        let e = parse_target("vips").unwrap_err();
        assert!(e.contains("virtual-services (vs)"), "{e}");
    }

    #[test]
    fn names_are_percent_encoded_in_paths() {
        assert_eq!(segment("web-pool.v2_x~").unwrap(), "web-pool.v2_x~");
        assert!(segment(&"a".repeat(70_000)).is_err());
        assert_eq!(segment("a b/c").unwrap(), "a%20b%2Fc");
    }

    #[test]
    fn a_group_row_shows_members_peers_hold_time_and_bfd() {
        let config = Config::from_yaml_str(
            r#"
service_engine_groups:
  - name: g1
    engines:
      - { name: se1, addresses: [192.168.33.7, "fc00::7"] }
      - { name: se2, addresses: [192.168.33.8] }
    bgp:
      local_as: 65001
      peers: [{ ip: 192.168.33.1, remote_as: 65000 }]
      bfd: true
  - { name: g2 }
"#,
        )
        .unwrap();
        assert_eq!(
            config.service_engine_groups[0].row(),
            [
                "g1",
                "se1 (192.168.33.7 fc00::7), se2 (192.168.33.8)",
                "AS 65001 \u{2192} 192.168.33.1 AS 65000",
                "9s",
                "100ms"
            ]
        );
        assert_eq!(
            config.service_engine_groups[1].row(),
            ["g2", "-", "-", "-", "-"]
        );
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "X"],
            &[
                vec!["a".into(), "1".into()],
                vec!["long-name".into(), "2".into()],
            ],
        );
        assert_eq!(t, "NAME       X\na          1\nlong-name  2\n");
    }
}
