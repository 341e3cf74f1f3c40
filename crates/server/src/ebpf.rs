//! Ricochet's TC decapsulator (`ricochet_decap`, from `crates/ebpf/src/bin/decap.rs`):
//! loading, attaching with a pinned TCX link, updating its VIP map, inspecting and removing.
//!
//! Pins in the pin directory:
//! - `DECAP_VIPS`, `DECAP_STATS`, `DECAP_GUE_PORTS`: the maps, created on the first setup
//!   and reused by later ones (aya's `map_pin_path` opens an existing pin instead of creating
//!   a map), so a second setup with more VIPs or GUE ports adds them to the maps the attached
//!   program already reads;
//! - `link_<interface>`: the TCX link attaching the program to `<interface>` ingress. The link
//!   holds the program; the pin holds the link after the process exits. Unpinning it (and
//!   closing our fd) detaches the program.
use std::{
    collections::BTreeSet,
    fs, io,
    mem::size_of,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use aya::{
    maps::{HashMap, Map, MapData, MapError, MapInfo, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        LinkOrder, ProgramInfo, SchedClassifier, TcAttachType,
    },
    EbpfLoader,
};
use ricochet_bpf::{DECAP, DECAP_PROGRAM};
use ricochet_common::{maps, DecapReason, VipKey};
use tracing::{debug, info, warn};

use crate::{
    state::{EbpfState, PinnedTcx},
    ServerError,
};

/// Where bpffs is conventionally mounted; setup mounts it there when it is missing.
pub(crate) const BPFFS_MOUNT: &str = "/sys/fs/bpf";

/// The pin of the VIP map.
pub(crate) fn vips_pin(pin_dir: &Path) -> PathBuf {
    pin_dir.join(maps::DECAP_VIPS)
}

/// The pin of the per-reason counters.
pub(crate) fn stats_pin(pin_dir: &Path) -> PathBuf {
    pin_dir.join(maps::DECAP_STATS)
}

/// The pin of the GUE ports map.
pub(crate) fn gue_ports_pin(pin_dir: &Path) -> PathBuf {
    pin_dir.join(maps::DECAP_GUE_PORTS)
}

/// The pin of the TCX link on `iface` (interface names never contain `/`).
pub(crate) fn link_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("link_{iface}"))
}

/// Whether `path` itself is on a bpffs.
fn is_bpffs(path: &Path) -> bool {
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type is c_long or c_uint depending on the libc"
    )]
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type().0 as i64 == libc::BPF_FS_MAGIC as i64)
}

/// Whether `path`, or the nearest of its ancestors that exists, is on a bpffs.
pub(crate) fn on_bpffs(path: &Path) -> bool {
    path.ancestors().find(|p| p.exists()).is_some_and(is_bpffs)
}

/// Makes sure `pin_dir` can hold pins: mounts bpffs on [`BPFFS_MOUNT`] when `pin_dir` lies
/// below it and nothing is mounted there (as bpftool does); otherwise fails with the command
/// to run.
fn ensure_bpffs(pin_dir: &Path, changes: &mut Vec<String>) -> anyhow::Result<()> {
    if on_bpffs(pin_dir) {
        return Ok(());
    }
    let mount_point = Path::new(BPFFS_MOUNT);
    if pin_dir.starts_with(mount_point) && mount_point.is_dir() && !is_bpffs(mount_point) {
        nix::mount::mount(
            Some("bpf"),
            mount_point,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| {
            format!("mounting bpffs on {BPFFS_MOUNT} (`mount -t bpf bpf {BPFFS_MOUNT}`)")
        })?;
        info!(mount_point = BPFFS_MOUNT, "mounted bpffs");
        changes.push(format!(
            "mounted bpffs on {BPFFS_MOUNT} (left mounted: it is system-wide)"
        ));
        if on_bpffs(pin_dir) {
            return Ok(());
        }
    }
    Err(ServerError::NoBpffs(pin_dir.to_owned()).into())
}

/// Fails if maps pinned by another build of the decapsulator have another layout.
fn check_pinned_layout(pin_dir: &Path) -> anyhow::Result<()> {
    let vips = vips_pin(pin_dir);
    let info = MapInfo::from_pin(&vips)
        .with_context(|| format!("opening pinned map {}", vips.display()))?;
    let (k, v) = (size_of::<VipKey>() as u32, size_of::<u32>() as u32);
    if info.key_size() != k || info.value_size() != v {
        bail!(
            "pinned map {} has {}-byte keys and {}-byte values, this build expects {k} and {v}: \
             run `ricochet server undo` (or remove {}) first",
            vips.display(),
            info.key_size(),
            info.value_size(),
            pin_dir.display()
        );
    }
    let stats = stats_pin(pin_dir);
    let info = MapInfo::from_pin(&stats)
        .with_context(|| format!("opening pinned map {}", stats.display()))?;
    if info.value_size() != size_of::<u64>() as u32 || info.max_entries() < DecapReason::COUNT {
        bail!(
            "pinned map {} has {} entries of {} bytes, this build expects {} of 8: \
             run `ricochet server undo` (or remove {}) first",
            stats.display(),
            info.max_entries(),
            info.value_size(),
            DecapReason::COUNT,
            pin_dir.display()
        );
    }
    Ok(())
}

/// The `ricochet_decap` programs attached to `iface`'s TCX ingress.
fn attached_decaps(iface: &str) -> anyhow::Result<Vec<ProgramInfo>> {
    let (_, progs) =
        SchedClassifier::query_tcx(iface, TcAttachType::Ingress).with_context(|| {
            format!(
                "listing the TCX ingress programs of interface {iface} (needs Linux 6.6 or newer)"
            )
        })?;
    Ok(progs
        .into_iter()
        .filter(|p| p.name_as_str() == Some(DECAP_PROGRAM))
        .collect())
}

/// Whether `prog` reads the VIP map pinned in `pin_dir`.
fn uses_pinned_map(prog: &ProgramInfo, pin_dir: &Path) -> anyhow::Result<bool> {
    let Ok(pinned) = MapInfo::from_pin(vips_pin(pin_dir)) else {
        return Ok(false);
    };
    let ids = prog
        .map_ids()
        .context("reading the map ids of ricochet_decap")?
        .unwrap_or_default();
    Ok(ids.contains(&pinned.id()))
}

/// Loads the decapsulator with its maps pinned in `pin_dir`, puts `vips` into `DECAP_VIPS`
/// and `gue_ports` into `DECAP_GUE_PORTS`, and attaches it to `iface` ingress (or, if our pinned link is already there, updates the
/// link to this build's program when it differs). Records what it created in `st`.
pub(crate) fn ensure(
    pin_dir: &Path,
    iface: &str,
    vips: &[IpAddr],
    gue_ports: &[u16],
    st: &mut EbpfState,
    changes: &mut Vec<String>,
) -> anyhow::Result<()> {
    ensure_bpffs(pin_dir, changes)?;
    if !pin_dir.exists() {
        fs::create_dir_all(pin_dir)
            .with_context(|| format!("creating pin directory {}", pin_dir.display()))?;
        st.created_pin_dir = true;
        changes.push(format!("created pin directory {}", pin_dir.display()));
    }
    let (vips_path, stats_path) = (vips_pin(pin_dir), stats_pin(pin_dir));
    let ports_path = gue_ports_pin(pin_dir);
    let maps_existed = vips_path.exists() && stats_path.exists();
    if maps_existed {
        check_pinned_layout(pin_dir)?;
    }
    // Pinned by setup from this build on (an older setup's pin directory lacks it).
    let ports_existed = ports_path.exists();
    let mut bpf = EbpfLoader::new()
        .map_pin_path(maps::DECAP_VIPS, vips_path.as_path())
        .map_pin_path(maps::DECAP_STATS, stats_path.as_path())
        .map_pin_path(maps::DECAP_GUE_PORTS, ports_path.as_path())
        .load(DECAP)
        .with_context(|| {
            format!(
                "loading the decapsulator object with its maps pinned in {}",
                pin_dir.display()
            )
        })?;
    if !maps_existed {
        st.created_maps = true;
        changes.push(format!(
            "created the decapsulator maps {} and {}",
            vips_path.display(),
            stats_path.display()
        ));
    }

    // VIPs first: once attached, the program drops tunnel packets to addresses not in the map.
    let map = bpf
        .map_mut(maps::DECAP_VIPS)
        .context("the decapsulator object has no DECAP_VIPS map")?;
    let mut map: HashMap<_, VipKey, u32> =
        HashMap::try_from(map).context("DECAP_VIPS is not a hash map")?;
    for &vip in vips {
        let key = VipKey::new(vip);
        match map.get(&key, 0) {
            Ok(_) => continue,
            Err(MapError::KeyNotFound) => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("looking up VIP {vip} in {}", vips_path.display()))
            }
        }
        map.insert(key, 1, 0).with_context(|| {
            format!(
                "adding VIP {vip} to the decapsulator map {}",
                vips_path.display()
            )
        })?;
        if !st.vips.contains(&vip) {
            st.vips.push(vip);
        }
        info!(%vip, "VIP added to the decapsulator map");
        changes.push(format!("VIP {vip} added to the decapsulator map"));
    }

    if !ports_existed {
        st.created_gue_ports = true;
    }
    let map = bpf
        .map_mut(maps::DECAP_GUE_PORTS)
        .context("the decapsulator object has no DECAP_GUE_PORTS map")?;
    let mut map: HashMap<_, [u8; 2], u32> =
        HashMap::try_from(map).context("DECAP_GUE_PORTS is not a hash map")?;
    for &port in gue_ports {
        let key = port.to_be_bytes();
        match map.get(&key, 0) {
            Ok(_) => continue,
            Err(MapError::KeyNotFound) => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("looking up GUE port {port} in {}", ports_path.display())
                })
            }
        }
        map.insert(key, 1, 0).with_context(|| {
            format!(
                "adding GUE port {port} to {} (at most {} ports)",
                ports_path.display(),
                ricochet_common::limits::MAX_DECAP_GUE_PORTS
            )
        })?;
        info!(port, "GUE port added to the decapsulator");
        changes.push(format!(
            "the decapsulator takes GUE on UDP port {port} (packets to a VIP in it)"
        ));
    }

    let prog: &mut SchedClassifier = bpf
        .program_mut(DECAP_PROGRAM)
        .with_context(|| format!("the decapsulator object has no program {DECAP_PROGRAM}"))?
        .try_into()
        .with_context(|| format!("{DECAP_PROGRAM} is not a TC classifier"))?;
    prog.load()
        .with_context(|| format!("loading {DECAP_PROGRAM} into the kernel"))?;
    attach(prog, pin_dir, iface, st, changes)
    // `bpf` drops here: our fds close, the pinned link keeps the program attached.
}

fn record_link(st: &mut EbpfState, iface: &str, pin: &Path) {
    if !st.links.iter().any(|l| l.interface == iface) {
        st.links.push(PinnedTcx {
            interface: iface.to_owned(),
            pin: pin.to_owned(),
        });
    }
}

fn attach(
    prog: &mut SchedClassifier,
    pin_dir: &Path,
    iface: &str,
    st: &mut EbpfState,
    changes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let pin = link_pin(pin_dir, iface);
    let new = prog.info().context("reading the loaded program's info")?;
    if pin.exists() {
        let link: FdLink = PinnedLink::from_pin(&pin)
            .with_context(|| format!("opening the pinned link {}", pin.display()))?
            .into();
        let linked_prog = link
            .info()
            .with_context(|| format!("reading link {}", pin.display()))?
            .program_id();
        let current = attached_decaps(iface)?
            .into_iter()
            .find(|p| p.id() == linked_prog);
        record_link(st, iface, &pin);
        match current {
            Some(p) if p.tag() == new.tag() && uses_pinned_map(&p, pin_dir)? => {
                debug!(
                    iface,
                    "decapsulator already attached with this build's program"
                );
                return Ok(());
            }
            Some(_) => {
                // Another build (or stale maps): swap the program under the same link, so
                // there is no moment without decapsulation.
                let link = SchedClassifierLink::try_from(link)
                    .with_context(|| format!("{} is not a TCX link", pin.display()))?;
                prog.attach_to_link(link).with_context(|| {
                    format!("updating the program of link {} on {iface}", pin.display())
                })?;
                info!(iface, "decapsulator program replaced");
                changes.push(format!(
                    "replaced the decapsulator program on {iface} ingress (same pinned link)"
                ));
                return verify_attached(iface, new.id());
            }
            None => {
                // The link outlived its attachment (the interface was deleted and created
                // again): drop it and attach afresh.
                warn!(iface, pin = %pin.display(), "pinned link is no longer attached; replacing it");
                fs::remove_file(&pin)
                    .with_context(|| format!("removing stale link pin {}", pin.display()))?;
            }
        }
    }
    let id = prog
        .attach_with_options(iface, TcAttachType::Ingress, TcAttachOptions::TcxOrder(LinkOrder::default()))
        .with_context(|| {
            format!("attaching {DECAP_PROGRAM} to interface {iface} ingress with a TCX link (needs Linux 6.6 or newer)")
        })?;
    let link: FdLink = prog
        .take_link(id)
        .context("taking the TCX link")?
        .try_into()
        .context("the TCX attachment is not an fd link")?;
    // If pinning fails the link is dropped, which detaches the program: nothing half-done.
    link.pin(&pin)
        .with_context(|| format!("pinning the decapsulator link at {}", pin.display()))?;
    record_link(st, iface, &pin);
    info!(iface, pin = %pin.display(), "decapsulator attached");
    changes.push(format!(
        "attached the eBPF decapsulator to {iface} ingress (TCX link pinned at {})",
        pin.display()
    ));
    verify_attached(iface, new.id())
}

fn verify_attached(iface: &str, prog_id: u32) -> anyhow::Result<()> {
    if attached_decaps(iface)?.iter().any(|p| p.id() == prog_id) {
        Ok(())
    } else {
        bail!("{DECAP_PROGRAM} (program id {prog_id}) is not listed on {iface} ingress after attaching it")
    }
}

fn open_vips(pin_dir: &Path) -> anyhow::Result<HashMap<MapData, VipKey, u32>> {
    let p = vips_pin(pin_dir);
    let data =
        MapData::from_pin(&p).with_context(|| format!("opening pinned map {}", p.display()))?;
    let map =
        Map::from_map_data(data).with_context(|| format!("opening pinned map {}", p.display()))?;
    HashMap::try_from(map).with_context(|| format!("{} is not a hash map", p.display()))
}

/// Removes `vips` from the pinned `DECAP_VIPS` (missing ones are fine).
pub(crate) fn remove_vips(pin_dir: &Path, vips: &[IpAddr]) -> anyhow::Result<()> {
    let mut map = open_vips(pin_dir)?;
    for &vip in vips {
        match map.remove(&VipKey::new(vip)) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("removing VIP {vip} from the decapsulator map"))
            }
        }
        info!(%vip, "VIP removed from the decapsulator map");
    }
    Ok(())
}

/// Detaches (unpins) the links and removes the pins that setup created. Failures are
/// collected in `errors` so the rest is still undone.
pub(crate) fn teardown(pin_dir: &Path, st: &EbpfState, errors: &mut Vec<anyhow::Error>) {
    for l in &st.links {
        match PinnedLink::from_pin(&l.pin) {
            Ok(pinned) => match pinned.unpin() {
                // Dropping the last reference detaches the program from the interface.
                Ok(fd) => {
                    drop(fd);
                    info!(iface = %l.interface, "decapsulator detached");
                }
                Err(e) => errors.push(
                    anyhow::Error::new(e).context(format!("unpinning link {}", l.pin.display())),
                ),
            },
            Err(_) if !l.pin.exists() => warn!(pin = %l.pin.display(), "link pin already gone"),
            Err(e) => errors.push(
                anyhow::Error::new(e).context(format!("opening link pin {}", l.pin.display())),
            ),
        }
    }
    let mut created: Vec<PathBuf> = Vec::new();
    if st.created_maps {
        created.extend([vips_pin(pin_dir), stats_pin(pin_dir)]);
    }
    if st.created_maps || st.created_gue_ports {
        created.push(gue_ports_pin(pin_dir));
    }
    {
        for p in created {
            if let Err(e) = fs::remove_file(&p) {
                if e.kind() != io::ErrorKind::NotFound {
                    errors.push(
                        anyhow::Error::new(e).context(format!("removing map pin {}", p.display())),
                    );
                }
            }
        }
    }
    if st.created_pin_dir {
        match fs::remove_dir(pin_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(pin_dir = %pin_dir.display(), error = %e, "pin directory left in place (not empty?)")
            }
        }
    }
}

/// What is attached to an interface's ingress.
#[derive(Debug, Default)]
pub(crate) struct Inspection {
    /// How many `ricochet_decap` programs are attached.
    pub attached: usize,
    /// Whether one of them reads the VIP map pinned in the pin directory.
    pub uses_pinned_map: bool,
    /// The VIPs in the maps of the attached decapsulators.
    pub vips: BTreeSet<IpAddr>,
    /// The GUE ports in their maps.
    pub gue_ports: BTreeSet<u16>,
}

/// Finds the decapsulators on `iface` ingress and the VIPs in their own maps (read through
/// the program's map ids, so this works even when the pins are gone).
pub(crate) fn inspect(pin_dir: &Path, iface: &str) -> anyhow::Result<Inspection> {
    let mut out = Inspection::default();
    for p in attached_decaps(iface)? {
        out.attached += 1;
        out.uses_pinned_map |= uses_pinned_map(&p, pin_dir)?;
        for id in p
            .map_ids()
            .context("reading the map ids of ricochet_decap")?
            .unwrap_or_default()
        {
            let info = MapInfo::from_id(id).with_context(|| format!("reading map {id}"))?;
            if info.name_as_str() == Some(maps::DECAP_GUE_PORTS) {
                let data = MapData::from_id(id).with_context(|| format!("opening map {id}"))?;
                let map: HashMap<MapData, [u8; 2], u32> =
                    HashMap::try_from(Map::from_map_data(data)?)
                        .context("DECAP_GUE_PORTS is not a hash map")?;
                for key in map.keys() {
                    out.gue_ports
                        .insert(u16::from_be_bytes(key.context("reading DECAP_GUE_PORTS")?));
                }
                continue;
            }
            if info.name_as_str() != Some(maps::DECAP_VIPS) {
                continue;
            }
            let data = MapData::from_id(id).with_context(|| format!("opening map {id}"))?;
            let map: HashMap<MapData, VipKey, u32> = HashMap::try_from(Map::from_map_data(data)?)
                .context("DECAP_VIPS is not a hash map")?;
            for key in map.keys() {
                if let Some(ip) = key.context("reading DECAP_VIPS")?.ip() {
                    out.vips.insert(ip);
                }
            }
        }
    }
    Ok(out)
}

/// The counters pinned in `pin_dir`, summed over CPUs.
pub(crate) fn stats(pin_dir: &Path) -> anyhow::Result<Vec<(&'static str, u64)>> {
    let p = stats_pin(pin_dir);
    let data = MapData::from_pin(&p).with_context(|| {
        format!(
            "opening the decapsulator counters {} (is the server set up?)",
            p.display()
        )
    })?;
    let map = Map::from_map_data(data).with_context(|| format!("opening {}", p.display()))?;
    let counters: PerCpuArray<MapData, u64> = PerCpuArray::try_from(map)
        .with_context(|| format!("{} is not a per-CPU array", p.display()))?;
    DecapReason::ALL
        .iter()
        .map(|&r| {
            let per_cpu = counters
                .get(&(r as u32), 0)
                .with_context(|| format!("reading counter {} from {}", r.name(), p.display()))?;
            Ok((r.name(), per_cpu.iter().sum()))
        })
        .collect()
}
