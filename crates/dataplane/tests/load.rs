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
