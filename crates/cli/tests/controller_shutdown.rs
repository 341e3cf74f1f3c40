//! SIGTERM stops the real `ricochet controller` within 2 s even with a half-sent request
//! and an idle connection open (before: it waited for them forever).

mod support;

use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::ControllerProcess;

#[test]
fn sigterm_with_half_open_connections_exits_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let mut ctl = ControllerProcess::start(&dir.path().join("state"));
    let addr = ctl.url.trim_start_matches("http://").to_owned();
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(b"POST /api/v1/pools HTTP/1.1\r\nHost: x\r\nContent-Le")
        .unwrap();
    let _idle = TcpStream::connect(&addr).unwrap();
    // Let the controller accept both.
    std::thread::sleep(Duration::from_millis(300));

    let pid = i32::try_from(ctl.child.id()).unwrap();
    let sent = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = loop {
        if let Some(status) = ctl.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "the controller still runs 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = sent.elapsed();
    println!("exited {status} {took:?} after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(
        took < Duration::from_secs(2),
        "exited {took:?} after SIGTERM"
    );
}
