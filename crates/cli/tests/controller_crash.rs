//! Crash test of the controller's store: the real `ricochet controller` is killed with
//! SIGKILL at random moments while a client streams creates through the API; after each
//! kill it restarts on the same state directory, and every create that was answered must
//! be there, with the revision it was answered with, and revisions never go back.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::ControllerProcess;

const ROUNDS: usize = 6;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Every health monitor in the store, by name, with its revision; and the store's
/// revision.
fn stored(ctl: &ControllerProcess) -> (BTreeMap<String, u64>, u64) {
    let mut r = agent()
        .get(format!("{}/api/v1/health-monitors", ctl.url))
        .header("Authorization", format!("Bearer {}", ctl.token()))
        .call()
        .expect("the restarted controller answers");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let items = body["items"].as_array().unwrap();
    let by_name = items
        .iter()
        .map(|i| {
            (
                i["object"]["name"].as_str().unwrap().to_owned(),
                i["revision"].as_u64().unwrap(),
            )
        })
        .collect();
    (by_name, body["revision"].as_u64().unwrap())
}

#[test]
fn acknowledged_writes_survive_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let started = Instant::now();
    // Name -> revision of every create the controller answered 201.
    let mut acknowledged: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_revision = 0;
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    println!("random seed {seed}");

    for round in 0..ROUNDS {
        let ctl = ControllerProcess::start(&state);

        // The store opens and holds everything acknowledged before the kill.
        let (present, revision) = stored(&ctl);
        for (name, rev) in &acknowledged {
            assert_eq!(
                present.get(name),
                Some(rev),
                "round {round}: {name}, acknowledged at revision {rev}, is missing or changed"
            );
        }
        assert!(
            revision >= last_revision,
            "round {round}: the revision went back from {last_revision} to {revision}"
        );
        last_revision = revision;

        // Stream creates from two clients until the kill.
        let acked = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (url, token) = (ctl.url.clone(), ctl.token());
                let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let agent = agent();
                    for i in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let name = format!("hm-{round}-{w}-{i}");
                        let body = json!({"name": name, "type": "tcp"}).to_string();
                        let answer = agent
                            .post(format!("{url}/api/v1/health-monitors"))
                            .header("Authorization", format!("Bearer {token}"))
                            .content_type("application/json")
                            .send(body.as_bytes());
                        match answer {
                            Ok(mut r) if r.status().as_u16() == 201 => {
                                let v: Value =
                                    serde_json::from_str(&r.body_mut().read_to_string().unwrap())
                                        .unwrap();
                                let revision = v["revision"].as_u64().unwrap();
                                acked.lock().unwrap().push((name, revision));
                            }
                            Ok(r) => panic!("create {name} answered {}", r.status()),
                            // Killed: this request may or may not have been committed.
                            Err(_) => break,
                        }
                    }
                })
            })
            .collect();
        let delay = Duration::from_millis(rng.u64(150..900));
        std::thread::sleep(delay);
        ctl.kill_hard();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.join().expect("writer thread");
        }
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        assert!(
            !acked.is_empty(),
            "round {round}: no write was acknowledged"
        );
        let mut revisions: Vec<u64> = acked.iter().map(|(_, r)| *r).collect();
        revisions.sort_unstable();
        revisions.dedup();
        assert_eq!(
            revisions.len(),
            acked.len(),
            "round {round}: each create has its own revision"
        );
        println!(
            "round {round}: {} creates acknowledged in the {delay:?} before SIGKILL",
            acked.len()
        );
        acknowledged.extend(acked);
    }

    // A last restart: everything acknowledged is there; unacknowledged creates may be
    // present (committed just before the kill) but nothing else.
    let ctl = ControllerProcess::start(&state);
    let (present, revision) = stored(&ctl);
    for (name, rev) in &acknowledged {
        assert_eq!(present.get(name), Some(rev), "{name} lost");
    }
    assert!(revision >= last_revision);
    assert!(present.len() >= acknowledged.len());
    assert!(present.keys().all(|n| n.starts_with("hm-")));
    let elapsed = started.elapsed();
    println!(
        "{} acknowledged creates over {ROUNDS} SIGKILLs all present; {} objects stored; {elapsed:?}",
        acknowledged.len(),
        present.len()
    );
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}
