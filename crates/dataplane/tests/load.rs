//! Privileged: the kernel's verifier accepts the program and the maps work.
use ricochet_dataplane::{
    kernel::{KernelDataplane, LoadOptions},
    Capacities, Dataplane,
};

fn need_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test loads eBPF and needs root: run it as root"
    );
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
