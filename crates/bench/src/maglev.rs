//! Maglev tables: how long `ricochet_maglev::build` takes for 10, 100 and 1,000 servers at
//! 65537 and 655373 slots, how much memory a table takes (in the builder and in the kernel's
//! array), and what fraction of the slots move when one server of N goes, against the
//! minimum 1/N.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use ricochet_maglev::{build, slot_counts, slots_moved_by_key, Backend, SLOTS_PER_BACKEND};
use serde::Serialize;

use crate::plot::{self, Axes, Series};
use crate::report::table;
use crate::stats::Summary;
use crate::{Body, Ctx};

const SERVER_COUNTS: [usize; 3] = [10, 100, 1000];
const TABLE_SIZES: [u32; 2] = [65_537, 655_373];

// ---- Peak heap of one build: a counting allocator ----

/// Counts the bytes the measuring thread allocates while [`measure_peak_heap`] runs (and
/// only then: otherwise it costs one relaxed load per allocation).
struct CountingAllocator;

/// Whether any thread is measuring (the fast path for everyone else).
static COUNTING: AtomicBool = AtomicBool::new(false);

thread_local! {
    // Const-initialised and without destructors: no allocation on first use, so usable
    // from inside the allocator.
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    /// Net bytes this thread allocated since it started measuring (negative when it frees
    /// older blocks).
    static NET: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    if !COUNTING.load(Ordering::Relaxed) {
        return;
    }
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            let now = NET.get() + delta;
            NET.set(now);
            PEAK.set(PEAK.get().max(now));
        }
    });
}

// SAFETY: every call forwards to the system allocator unchanged; the counters are atomics.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` and returns its result with the peak of heap bytes it held at once (allocated
/// by this thread and not yet freed since `f` started).
pub fn measure_peak_heap<T>(f: impl FnOnce() -> T) -> (T, usize) {
    NET.set(0);
    PEAK.set(0);
    TRACKING.set(true);
    COUNTING.store(true, Ordering::SeqCst);
    let out = f();
    TRACKING.set(false);
    // One measuring thread at a time: the others go back to the fast path.
    COUNTING.store(false, Ordering::SeqCst);
    (out, PEAK.get().max(0) as usize)
}

// ---- Inputs ----

/// `n` distinct server keys shaped like the engine's (an IPv4 address's four bytes):
/// 10.1.0.1, 10.1.0.2, ..., never ending in .0 or .255.
pub fn server_keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let hi = u8::try_from(i / 254).expect("fewer than 65024 servers");
            let lo = (i % 254) as u8 + 1;
            vec![10, 1, hi, lo]
        })
        .collect()
}

fn backends(keys: &[Vec<u8>]) -> Vec<Backend<'_>> {
    keys.iter().map(|k| Backend::new(k, 1)).collect()
}

/// `count` distinct indices spread evenly over `0..n` (all of them when `count >= n`).
pub fn spread_indices(n: usize, count: usize) -> Vec<usize> {
    let count = count.min(n);
    let mut v: Vec<usize> = (0..count).map(|k| k * n / count).collect();
    v.dedup();
    v
}

// ---- The kernel's view of a table: a BPF array of u32 ----

/// Creates a `BPF_MAP_TYPE_ARRAY` with 4-byte keys and values and `slots` entries (the
/// `MAGLEV` map's shape) and returns the kernel's memory accounting of it (`memlock` in
/// `/proc/self/fdinfo`).
fn kernel_array_bytes(slots: u32) -> anyhow::Result<u64> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    // union bpf_attr for BPF_MAP_CREATE starts with map_type, key_size, value_size,
    // max_entries, map_flags; the rest must be zero.
    let mut attr = [0u32; 32];
    attr[..5].copy_from_slice(&[BPF_MAP_TYPE_ARRAY, 4, 4, slots, 0]);
    // SAFETY: the attribute buffer is valid for its whole length, which we pass.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .context("creating a BPF array map (needs root / CAP_BPF)");
    }
    let fd = fd as i32;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"));
    // SAFETY: the descriptor is ours and used by nothing else.
    unsafe { libc::close(fd) };
    let info = info.context("reading the map's fdinfo")?;
    parse_memlock(&info).context("no memlock line in the map's fdinfo")
}

/// The `memlock:` value of an fdinfo text.
pub fn parse_memlock(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

// ---- Measurements ----

#[derive(Serialize)]
struct BuildTimes {
    servers: usize,
    table_size: u32,
    /// Seconds per build, in the order measured.
    seconds: Vec<f64>,
    summary_ms: Summary,
}

#[derive(Serialize)]
struct Memory {
    servers: usize,
    table_size: u32,
    /// The table as the data plane holds it: one u32 per slot.
    table_bytes: u64,
    /// The kernel's accounting of a BPF array of `table_size` u32 (memlock).
    kernel_array_bytes: u64,
    /// Peak heap held during one build, the returned table included.
    builder_peak_bytes: usize,
}

#[derive(Serialize)]
struct Removal {
    removed: usize,
    moved_slots: usize,
    /// Slots the removed server owned (they must move).
    own_slots: usize,
}

#[derive(Serialize)]
struct Disruption {
    servers: usize,
    table_size: u32,
    removals: Vec<Removal>,
    /// Mean over removals of moved slots / table size.
    moved_fraction: f64,
    min_moved_fraction: f64,
    max_moved_fraction: f64,
    /// Mean share of the removed server (the slots that had to move).
    own_fraction: f64,
}

fn disruption(servers: usize, size: u32, removals: usize) -> anyhow::Result<Disruption> {
    let keys = server_keys(servers);
    let all = backends(&keys);
    let full = build(&all, size).context("building the full table")?;
    let counts = slot_counts(&full, servers);
    let mut out = Vec::new();
    for removed in spread_indices(servers, removals) {
        let rest: Vec<Backend> = all
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != removed)
            .map(|(_, b)| *b)
            .collect();
        let reduced = build(&rest, size).context("building the table without one server")?;
        out.push(Removal {
            removed,
            moved_slots: slots_moved_by_key(&full, &all, &reduced, &rest),
            own_slots: counts[removed],
        });
    }
    let fractions: Vec<f64> = out
        .iter()
        .map(|r| r.moved_slots as f64 / f64::from(size))
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let own: Vec<f64> = out
        .iter()
        .map(|r| r.own_slots as f64 / f64::from(size))
        .collect();
    Ok(Disruption {
        servers,
        table_size: size,
        moved_fraction: mean(&fractions),
        min_moved_fraction: fractions.iter().copied().fold(f64::INFINITY, f64::min),
        max_moved_fraction: fractions.iter().copied().fold(0.0, f64::max),
        own_fraction: mean(&own),
        removals: out,
    })
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.2} MiB", b as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Body> {
    let grid: Vec<(usize, u32)> = TABLE_SIZES
        .iter()
        .flat_map(|&m| SERVER_COUNTS.iter().map(move |&n| (n, m)))
        .collect();
    let (build_reps, removals) = if ctx.quick { (5, 3) } else { (100, 20) };

    // Build times: one build of every (N, M) per round, rounds repeated, so that drift and
    // noise from other processes spread over every cell alike. Pinned to one CPU.
    let _pinned = crate::sys::pin_thread(&[1, 0])?;
    let inputs: Vec<Vec<Vec<u8>>> = grid.iter().map(|&(n, _)| server_keys(n)).collect();
    let mut samples = vec![Vec::new(); grid.len()];
    for round in 0..=build_reps {
        for (i, &(_, size)) in grid.iter().enumerate() {
            let all = backends(&inputs[i]);
            let start = Instant::now();
            let table = build(&all, size).context("building a Maglev table")?;
            let seconds = start.elapsed().as_secs_f64();
            std::hint::black_box(&table);
            // Round 0 warms caches and the allocator; it is not kept.
            if round > 0 {
                samples[i].push(seconds);
            }
        }
    }
    let builds: Vec<BuildTimes> = grid
        .iter()
        .zip(samples)
        .map(|(&(servers, table_size), seconds)| {
            let millis: Vec<f64> = seconds.iter().map(|s| s * 1e3).collect();
            BuildTimes {
                servers,
                table_size,
                summary_ms: Summary::of(&millis),
                seconds,
            }
        })
        .collect();

    // Memory: the builder's peak heap, measured; the kernel's array, as the kernel accounts it.
    let mut memory = Vec::new();
    for (i, &(servers, table_size)) in grid.iter().enumerate() {
        let all = backends(&inputs[i]);
        let (table, peak) = measure_peak_heap(|| build(&all, table_size));
        table.context("building a Maglev table")?;
        memory.push(Memory {
            servers,
            table_size,
            table_bytes: 4 * u64::from(table_size),
            kernel_array_bytes: kernel_array_bytes(table_size)?,
            builder_peak_bytes: peak,
        });
    }

    let disruptions = grid
        .iter()
        .map(|&(n, m)| disruption(n, m, removals))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let raw_builds = ctx.write_raw_json("maglev-build-times.json", &builds)?;
    let raw_memory = ctx.write_raw_json("maglev-memory.json", &memory)?;
    let raw_disruption = ctx.write_raw_json("maglev-disruption.json", &disruptions)?;

    // Plots.
    let build_series: Vec<Series> = TABLE_SIZES
        .iter()
        .flat_map(|&m| {
            let of = |pick: fn(&Summary) -> f64, what: &str| Series {
                name: format!("M = {m}, {what}"),
                points: builds
                    .iter()
                    .filter(|b| b.table_size == m)
                    .map(|b| (b.servers as f64, pick(&b.summary_ms)))
                    .collect(),
            };
            [of(|s| s.p50, "median"), of(|s| s.p90, "p90")]
        })
        .collect();
    plot::line_chart(
        &ctx.plot_path("maglev-build-time.png"),
        "Maglev table build time (release build, one CPU)",
        "servers N (log)",
        "milliseconds (log)",
        &build_series,
        Axes {
            log_x: true,
            log_y: true,
        },
    )?;
    let mut moved_series: Vec<Series> = TABLE_SIZES
        .iter()
        .map(|&m| Series {
            name: format!("moved, M = {m}"),
            points: disruptions
                .iter()
                .filter(|d| d.table_size == m)
                .map(|d| (1.0 / d.servers as f64, d.moved_fraction))
                .collect(),
        })
        .collect();
    moved_series.push(Series {
        name: "minimum 1/N".into(),
        points: SERVER_COUNTS
            .iter()
            .rev()
            .map(|&n| (1.0 / n as f64, 1.0 / n as f64))
            .collect(),
    });
    plot::line_chart(
        &ctx.plot_path("maglev-disruption.png"),
        "Slots moved when one server of N is removed",
        "1/N (log)",
        "fraction of the table moved (log)",
        &moved_series,
        Axes {
            log_x: true,
            log_y: true,
        },
    )?;

    // Markdown.
    let mut md = String::new();
    writeln!(
        md,
        "`ricochet_maglev::build` on N servers of weight 1 whose keys are IPv4 addresses (4 \
         bytes, as the engine keys them), M slots. Release build, the measuring thread pinned \
         to one CPU; every round builds each of the six (N, M) once, {build_reps} rounds after \
         one warm-up round.\n"
    )?;
    writeln!(md, "### Build time\n")?;
    let rows: Vec<Vec<String>> = builds
        .iter()
        .map(|b| {
            let s = &b.summary_ms;
            vec![
                b.servers.to_string(),
                b.table_size.to_string(),
                ms(s.p50),
                ms(s.p90),
                ms(s.min),
                ms(s.max),
                s.n.to_string(),
            ]
        })
        .collect();
    md.push_str(&table(
        &[
            "N",
            "M",
            "median ms",
            "p90 ms",
            "min ms",
            "max ms",
            "builds",
        ],
        &rows,
    ));
    writeln!(
        md,
        "\n![Maglev build time](maglev-build-time.png)\n\nRaw: [{raw_builds}]({raw_builds}).\n"
    )?;

    writeln!(md, "### Memory\n")?;
    let rows: Vec<Vec<String>> = memory
        .iter()
        .map(|m| {
            vec![
                m.servers.to_string(),
                m.table_size.to_string(),
                bytes(m.table_bytes),
                bytes(m.kernel_array_bytes),
                bytes(m.builder_peak_bytes as u64),
                bytes((m.builder_peak_bytes as u64).saturating_sub(m.table_bytes)),
            ]
        })
        .collect();
    md.push_str(&table(
        &[
            "N",
            "M",
            "table (u32 per slot)",
            "kernel BPF array of M u32 (memlock)",
            "builder peak heap",
            "of which working memory besides the table",
        ],
        &rows,
    ));
    writeln!(
        md,
        "\nThe table is what the engine writes into the `MAGLEV` array, 4 bytes per slot. The \
         kernel column is measured: a `BPF_MAP_TYPE_ARRAY` of M 4-byte values created for the \
         purpose (the `MAGLEV` map's type), as `/proc/self/fdinfo` accounts it; the kernel \
         rounds array values up to 8 bytes, so a slot costs 8 bytes there. The builder's peak \
         is measured by a counting global allocator around one build: the heap held at once \
         during `build`, the returned table included. The engine also keeps a copy of each \
         live table (4 bytes per slot) to skip rewriting unchanged ones, and a changed table \
         is written into a fresh region before the old one is released, so a table being \
         replaced briefly takes its size twice in the array.\n\nRaw: [{raw_memory}]({raw_memory}).\n"
    )?;

    writeln!(md, "### Disruption: one server of N removed\n")?;
    let rows: Vec<Vec<String>> = disruptions
        .iter()
        .map(|d| {
            let min = 1.0 / d.servers as f64;
            vec![
                d.servers.to_string(),
                d.table_size.to_string(),
                format!("{:.5}", d.moved_fraction),
                format!("{:.5} - {:.5}", d.min_moved_fraction, d.max_moved_fraction),
                format!("{min:.5}"),
                format!("{:.3}", d.moved_fraction / min),
                format!("{:.5}", d.own_fraction),
                format!("{:.5}", d.moved_fraction - d.own_fraction),
                d.removals.len().to_string(),
            ]
        })
        .collect();
    md.push_str(&table(
        &[
            "N",
            "M",
            "moved (mean)",
            "range",
            "minimum 1/N",
            "moved / (1/N)",
            "removed server's own share",
            "moved among the others",
            "removals",
        ],
        &rows,
    ));
    writeln!(
        md,
        "\nFor each (N, M) the full table is built, then the table without server k, for \
         {removals} servers k spread over the list; a slot moved when its owner (by key) \
         differs. The removed server's own slots must move (about 1/N of the table); the rest \
         is Maglev's extra disruption, slots passed between the remaining servers.\n\n\
         ![Disruption](maglev-disruption.png)\n\nRaw: [{raw_disruption}]({raw_disruption}).\n"
    )?;
    let below: Vec<String> = grid
        .iter()
        .filter(|&&(n, m)| u64::from(m) < u64::from(SLOTS_PER_BACKEND) * n as u64)
        .map(|(n, m)| format!("N = {n} at M = {m}"))
        .collect();
    if !below.is_empty() {
        writeln!(
            md,
            "Note: {} has fewer than {SLOTS_PER_BACKEND} slots per server; the configuration \
             refuses such a `table_size` (the default for 1,000 servers is the next prime \
             above 100 × N, 100003), so that cell is measured for the issue's grid only.\n",
            below.join(", ")
        )?;
    }
    if ctx.quick {
        writeln!(
            md,
            "_Quick run: {build_reps} builds per cell and {removals} removals: noisier._\n"
        )?;
    }

    let cell = |n: usize, m: u32| builds.iter().find(|b| b.servers == n && b.table_size == m);
    let mut headlines = Vec::new();
    for m in TABLE_SIZES {
        let parts: Vec<String> = SERVER_COUNTS
            .iter()
            .filter_map(|&n| cell(n, m))
            .map(|b| format!("{} ms (N={})", ms(b.summary_ms.p50), b.servers))
            .collect();
        headlines.push(format!("build of M = {m}: median {}", parts.join(", ")));
    }
    let ratio = |d: &&Disruption| d.moved_fraction * d.servers as f64;
    let by_ratio = |a: &&Disruption, b: &&Disruption| ratio(a).total_cmp(&ratio(b));
    if let (Some(best), Some(worst)) = (
        disruptions.iter().min_by(by_ratio),
        disruptions.iter().max_by(by_ratio),
    ) {
        headlines.push(format!(
            "removing 1 of N servers moves {:.2}x (N={}, M={}) to {:.2}x (N={}, M={}) the \
             minimum 1/N of the slots",
            ratio(&best),
            best.servers,
            best.table_size,
            ratio(&worst),
            worst.servers,
            worst.table_size
        ));
    }
    if let Some(big) = memory.iter().find(|m| m.table_size == TABLE_SIZES[1]) {
        headlines.push(format!(
            "a {}-slot table: {} as u32, {} in the kernel's array",
            big.table_size,
            bytes(big.table_bytes),
            bytes(big.kernel_array_bytes)
        ));
    }

    Ok(Body {
        markdown: md,
        headlines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_ipv4_hosts() {
        let keys = server_keys(1000);
        let set: std::collections::BTreeSet<_> = keys.iter().collect();
        assert_eq!(set.len(), 1000);
        assert!(keys
            .iter()
            .all(|k| k.len() == 4 && k[3] != 0 && k[3] != 255));
    }

    #[test]
    fn spread_indices_are_distinct_and_in_range() {
        assert_eq!(spread_indices(10, 5), vec![0, 2, 4, 6, 8]);
        assert_eq!(spread_indices(3, 10), vec![0, 1, 2]);
        assert_eq!(spread_indices(1000, 3), vec![0, 333, 666]);
    }

    #[test]
    fn memlock_parsed() {
        let info = "pos:\t0\nmap_type:\t2\nmemlock:\t524608\nmap_id:\t9\n";
        assert_eq!(parse_memlock(info), Some(524_608));
        assert_eq!(parse_memlock("pos:\t0\n"), None);
    }

    #[test]
    fn peak_heap_counts_what_is_held_at_once() {
        let ((), peak) = measure_peak_heap(|| {
            let a = vec![1u8; 1 << 20];
            std::hint::black_box(&a);
            drop(a);
            let b = vec![2u8; 1 << 19];
            std::hint::black_box(&b);
        });
        assert_eq!(peak, 1 << 20);
    }

    #[test]
    fn disruption_of_removing_one_is_at_least_its_share() {
        let d = disruption(10, 1009, 3).unwrap();
        for r in &d.removals {
            assert!(r.moved_slots >= r.own_slots);
        }
        assert!(d.moved_fraction >= d.own_fraction);
        assert!(d.moved_fraction < 0.2, "{}", d.moved_fraction);
    }
}
