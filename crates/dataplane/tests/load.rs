//! Privileged: the kernel's verifier accepts the program and the maps work.
use ricochet_dataplane::{
    kernel::{KernelDataplane, LoadOptions},
    Capacities, Dataplane,
};

fn need_root() {
    ricochet_testkit::require_root("this test loads eBPF");
}

#[test]
fn verifier_accepts_program_and_maps_round_trip() {
    need_root();
    let caps = Capacities {
        flows: 1024,
        maglev_slots: 1024,
        ..Capacities::default()
    };
    let mut dp = KernelDataplane::load(&LoadOptions {
        pin_dir: None,
        caps,
    })
    .expect("load");
    assert!(!dp.adopted());
    assert_eq!(dp.capacities().maglev_slots, 1024);
    dp.write_table(10, &[1, 2, 3]).unwrap();
    assert_eq!(dp.read_table(10, 3).unwrap(), vec![1, 2, 3]);
    let words = ricochet_common::vip_filter::WORDS;
    assert_eq!(dp.vip_filter().unwrap(), vec![0; words as usize]);
    dp.put_vip_filter_word(0, 1).unwrap();
    dp.put_vip_filter_word(words - 1, 1 << 63).unwrap();
    let filter = dp.vip_filter().unwrap();
    assert_eq!((filter[0], filter[words as usize - 1]), (1, 1 << 63));
    assert_eq!(filter.iter().filter(|w| **w != 0).count(), 2);
    assert!(
        dp.put_vip_filter_word(words, 1).is_err(),
        "the filter has {words} words"
    );
    // A non-IP frame is passed and counted.
    let arp = [0xffu8; 60];
    let mut frame = arp;
    frame[12] = 0x08;
    frame[13] = 0x06;
    let out = dp.test_run(&frame, 0).unwrap();
    assert_eq!(out.action, 2, "XDP_PASS");
    let reasons = dp.reason_counters().unwrap();
    assert_eq!(
        reasons
            .iter()
            .find(|(r, _)| r.name() == "pass_not_ip")
            .unwrap()
            .1,
        1
    );
}

/// The verifier accepts every program of the other embedded objects too: the
/// decapsulator and the DSR probe encapsulator (TC), the trivial XDP programs and the
/// forwarding benchmark's. Their own users load them only in namespace tests and
/// benchmarks; a change to the shared packet code is caught here first.
#[test]
fn verifier_accepts_the_other_programs() {
    use aya::programs::Program;
    need_root();
    let objects: [(&str, &[u8], &[&str]); 4] = [
        ("decap", ricochet_bpf::DECAP, &[ricochet_bpf::DECAP_PROGRAM]),
        (
            "dsr-probe",
            ricochet_bpf::DSR_PROBE,
            &[ricochet_bpf::DSR_PROBE_PROGRAM],
        ),
        ("trivial", ricochet_bpf::TRIVIAL, &["xdp_pass", "xdp_tx"]),
        (
            "bench-xdp",
            ricochet_bpf::BENCH_XDP,
            &["bench_gen", "bench_sink", "bench_drop"],
        ),
    ];
    for (object, bytes, programs) in objects {
        let mut ebpf = aya::Ebpf::load(bytes).unwrap_or_else(|e| panic!("loading {object}: {e}"));
        for &name in programs {
            let loaded = match ebpf.program_mut(name) {
                Some(Program::Xdp(p)) => p.load(),
                Some(Program::SchedClassifier(p)) => p.load(),
                Some(other) => panic!("{object}: {name} is a {:?} program", other.prog_type()),
                None => panic!("{object} has no program {name}"),
            };
            loaded.unwrap_or_else(|e| panic!("{object}: the verifier refused {name}: {e:?}"));
        }
    }
}

const BPF_MAP_TYPE_ARRAY: u64 = 2;
const BPF_MAP_TYPE_PERCPU_ARRAY: u64 = 6;

/// Creates a per-CPU array of `max_entries` u64 counters and pins it at `path` (as an
/// older program's `REASONS` was, with fewer reasons).
fn pin_counter_map(path: &std::path::Path, max_entries: u32) {
    pin_u64_array(path, BPF_MAP_TYPE_PERCPU_ARRAY, max_entries);
}

/// Creates an array map of `map_type` with `max_entries` u64 values and pins it at `path`.
fn pin_u64_array(path: &std::path::Path, map_type: u64, max_entries: u32) {
    use std::os::unix::ffi::OsStrExt;
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries
    // (u32 each), map_flags...; zero-padded.
    let mut create = [0u64; 8];
    create[0] = map_type | (4 << 32);
    create[1] = 8 | ((max_entries as u64) << 32);
    // SAFETY: a valid bpf_attr prefix for the command, alive for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            create.as_mut_ptr(),
            std::mem::size_of_val(&create),
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // BPF_OBJ_PIN: pathname (u64 pointer), bpf_fd (u32).
    let mut pin = [name.as_ptr() as u64, fd as u64, 0, 0];
    // SAFETY: as above; `name` outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            pin.as_mut_ptr(),
            std::mem::size_of_val(&pin),
        )
    };
    assert_eq!(rc, 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    // SAFETY: our own descriptor; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
}

#[test]
fn outgrown_pinned_counters_are_replaced() {
    use ricochet_common::{maps, Reason};
    need_root();
    let dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/ricochet-test-counters-{}",
        std::process::id()
    ));
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = ricochet_dataplane::kernel::detach(&self.0, None);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    pin_counter_map(&dir.join(maps::REASONS), 20);
    let mut dp = KernelDataplane::load(&LoadOptions {
        pin_dir: Some(dir.clone()),
        caps: Capacities {
            flows: 1024,
            maglev_slots: 1024,
            ..Capacities::default()
        },
    })
    .expect("load over an outgrown REASONS pin");
    let mut frame = [0xffu8; 60];
    frame[12] = 0x08;
    frame[13] = 0x06;
    dp.test_run(&frame, 0).unwrap();
    let reasons = dp
        .reason_counters()
        .expect("every reason readable, the new ones included");
    assert_eq!(reasons.len(), Reason::COUNT as usize);
    assert_eq!(reasons[Reason::PassNotIp as usize], (Reason::PassNotIp, 1));
    let pinned = aya::maps::MapData::from_pin(dir.join(maps::REASONS))
        .unwrap()
        .info()
        .unwrap()
        .max_entries();
    assert_eq!(pinned, Reason::COUNT, "the new map is pinned in its place");
}

/// A pinned VIP filter of another size (another build's) would be read with other bits:
/// it is replaced by one of this program's size, which the engine's first apply fills.
#[test]
fn a_pinned_vip_filter_of_another_size_is_replaced() {
    use ricochet_common::{maps, vip_filter};
    need_root();
    let dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/ricochet-test-filter-{}",
        std::process::id()
    ));
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = ricochet_dataplane::kernel::detach(&self.0, None);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    pin_u64_array(&dir.join(maps::VIP_FILTER), BPF_MAP_TYPE_ARRAY, 512);
    let caps = Capacities {
        flows: 1024,
        maglev_slots: 1024,
        ..Capacities::default()
    };
    let load = || {
        KernelDataplane::load(&LoadOptions {
            pin_dir: Some(dir.clone()),
            caps,
        })
        .expect("load over a VIP_FILTER pin of 512 words")
    };
    let mut dp = load();
    assert_eq!(dp.vip_filter().unwrap().len(), vip_filter::WORDS as usize);
    // A pin of the right size is kept, words and all.
    dp.put_vip_filter_word(7, 0b1010).unwrap();
    drop(dp);
    assert_eq!(load().vip_filter().unwrap()[7], 0b1010);
}
