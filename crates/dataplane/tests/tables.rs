//! Privileged: Maglev tables written and read in one batch (BPF_MAP_UPDATE_BATCH,
//! BPF_MAP_LOOKUP_BATCH) hold exactly what the same table written slot by slot holds.
//! Run as root: `cargo test -p ricochet-dataplane --test tables`.

use std::path::PathBuf;

use aya::maps::{Array, Map, MapData};
use ricochet_dataplane::{
    kernel::{detach, KernelDataplane, LoadOptions},
    Capacities, Dataplane,
};

fn need_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test loads eBPF and needs root: run it as root"
    );
}

/// A pin directory of this process, removed (with its pins) on drop, also on panic.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        if self.0.exists() {
            detach(&self.0, None).expect("removing the test's pins");
        }
    }
}

/// Table contents that no slot order or stride mistake could reproduce by chance.
fn table(len: usize, seed: u32) -> Vec<u32> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            x
        })
        .collect()
}

#[test]
fn batch_written_tables_match_slot_by_slot_ones() {
    need_root();
    const SLOTS: u32 = 2 * 65_537 + 100;
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/ricochet-test-tables-{}",
        std::process::id()
    )));
    let caps = Capacities {
        flows: 1024,
        maglev_slots: SLOTS,
        ..Capacities::default()
    };
    let mut dp = KernelDataplane::load(&LoadOptions {
        pin_dir: Some(pins.0.clone()),
        caps,
    })
    .expect("load");
    // The same map, opened through its pin: aya's per-element operations as the reference.
    let pinned = MapData::from_pin(pins.0.join(ricochet_common::maps::MAGLEV)).unwrap();
    let mut reference: Array<MapData, u32> = Array::try_from(Map::Array(pinned)).unwrap();

    let t = table(65_537, 7);
    // Region A slot by slot (from slot 0), region B in one batch (not at 0).
    for (i, v) in t.iter().enumerate() {
        reference.set(i as u32, v, 0).unwrap();
    }
    let b = 65_537 + 50;
    dp.write_table(b, &t).unwrap();
    let slot = |r: &Array<MapData, u32>, i: u32| r.get(&i, 0).unwrap();
    for i in 0..t.len() as u32 {
        assert_eq!(slot(&reference, i), slot(&reference, b + i), "slot {i}");
    }
    assert_eq!(slot(&reference, b - 1), 0, "nothing before the region");
    assert_eq!(slot(&reference, b + t.len() as u32), 0, "nothing after it");

    // Batch reads: from slot 0 (the kernel's start without a key) and from an offset.
    assert_eq!(dp.read_table(0, t.len() as u32).unwrap(), t);
    assert_eq!(dp.read_table(b, t.len() as u32).unwrap(), t);
    assert_eq!(dp.read_table(b + 3, 2).unwrap(), t[3..5]);

    // Up to the array's last slot.
    let tail = table(40, 9);
    dp.write_table(SLOTS - 40, &tail).unwrap();
    assert_eq!(slot(&reference, SLOTS - 1), tail[39]);
    assert_eq!(dp.read_table(SLOTS - 40, 40).unwrap(), tail);

    // A region past the end is refused whole: not even its first slots are written.
    let err = dp
        .write_table(SLOTS - 2, &[1, 2, 3])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "region of 3 slots at {} does not fit the array of {SLOTS} slots",
            SLOTS - 2
        )),
        "{err}"
    );
    assert_eq!(slot(&reference, SLOTS - 2), tail[38]);
    let err = dp.read_table(SLOTS - 2, 3).unwrap_err().to_string();
    assert!(err.contains("does not fit"), "{err}");
    // An empty table writes nothing and reads nothing.
    dp.write_table(5, &[]).unwrap();
    assert_eq!(dp.read_table(5, 0).unwrap(), Vec::<u32>::new());
    assert_eq!(slot(&reference, 5), t[5]);
    drop(dp);
}
