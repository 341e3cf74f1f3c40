//! Waking the engines' desired-state long polls after commits, paced so that answering
//! them cannot take the controller from the writes.
//!
//! Every wake answers every waiting engine and each polls again: with thousands of
//! engines one wake is thousands of HTTP round trips. Waking them for each commit of a
//! burst would spend the controller's CPU on configurations the engines replace a moment
//! later. So the first commit after a quiet spell wakes them at once, and later ones wait
//! until [`MIN_INTERVAL`] or [`BUSY_SHARE`]'s multiple of the time the previous wake's
//! answers took, whichever is longer: answering polls takes at most a quarter of the
//! controller's time however many engines there are, and the next wake carries the
//! newest revision.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// Waiting polls are woken at most this often.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);
/// A wake's answers may take at most one part in this many of the time between wakes.
pub const BUSY_SHARE: u32 = 4;
/// The longest a wake's answers are timed (a poll that cannot send its answer, a slow
/// client, must not stop the wakes): wakes come at least every `BUSY_SHARE` times this.
const LONGEST_TIMED: Duration = Duration::from_secs(2);

/// The revision waiting polls see, and the pacing of its changes.
#[derive(Debug)]
pub struct PollWakes {
    /// The configuration revision published to waiting polls (behind `committed` while
    /// a wake is paced).
    published: watch::Sender<u64>,
    /// The newest committed configuration revision.
    committed: AtomicU64,
    /// Signalled by each commit.
    commits: Notify,
    /// Polls waiting for a newer revision now.
    waiting: AtomicUsize,
    /// Polls answered after waiting, since the start.
    answered: AtomicU64,
    /// The current interval between wakes, in microseconds (for `/metrics`).
    interval_us: AtomicU64,
}

/// A poll counted as waiting while this lives.
#[derive(Debug)]
pub struct Waiting<'a>(&'a PollWakes);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PollWakes {
    /// Starts at the configuration revision the store holds.
    pub fn new(config_revision: u64) -> PollWakes {
        PollWakes {
            published: watch::channel(config_revision).0,
            committed: AtomicU64::new(config_revision),
            commits: Notify::new(),
            waiting: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            interval_us: AtomicU64::new(MIN_INTERVAL.as_micros() as u64),
        }
    }

    /// A commit made `config_revision` the newest; never moves it backwards (two commits
    /// may finish in either order).
    pub fn commit(&self, config_revision: u64) {
        self.committed.fetch_max(config_revision, Ordering::AcqRel);
        self.commits.notify_one();
    }

    /// The revision published to polls.
    pub fn published(&self) -> u64 {
        *self.published.borrow()
    }

    /// Follows the published revision.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Counts a poll as waiting until the guard drops.
    pub fn wait(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(self)
    }

    /// A poll that waited has its answer.
    pub fn answered(&self) {
        self.answered.fetch_add(1, Ordering::AcqRel);
    }

    /// Polls waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// The current interval between wakes.
    pub fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_us.load(Ordering::Acquire))
    }

    /// Forwards committed revisions to the polls, paced; runs until the task is aborted.
    pub async fn pace(&self) {
        loop {
            self.commits.notified().await;
            let woken = self.waiting() as u64;
            let answered_before = self.answered.load(Ordering::Acquire);
            let latest = self.committed.load(Ordering::Acquire);
            let start = Instant::now();
            let moved = self.published.send_if_modified(|current| {
                let newer = latest > *current;
                if newer {
                    *current = latest;
                }
                newer
            });
            if !moved {
                continue;
            }
            // How long the woken polls take to get their answers.
            while self.answered.load(Ordering::Acquire) - answered_before < woken
                && start.elapsed() < LONGEST_TIMED
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let interval = MIN_INTERVAL.max(start.elapsed() * BUSY_SHARE);
            self.interval_us
                .store(interval.as_micros() as u64, Ordering::Release);
            tokio::time::sleep_until(start + interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Wakes at revision 1 and their pacer, running.
    fn paced() -> (Arc<PollWakes>, tokio::task::JoinHandle<()>) {
        let wakes = Arc::new(PollWakes::new(1));
        let pacer = tokio::spawn({
            let wakes = Arc::clone(&wakes);
            async move { wakes.pace().await }
        });
        (wakes, pacer)
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_spells_first_commit_wakes_at_once_and_a_burst_its_newest_revision_later() {
        let (wakes, pacer) = paced();
        let mut polls = wakes.subscribe();
        wakes.commit(2);
        polls.changed().await.unwrap();
        assert_eq!(*polls.borrow_and_update(), 2);
        let woken = Instant::now();
        // A burst: 3, then 5 before 4 (commits finish in either order).
        wakes.commit(3);
        wakes.commit(5);
        wakes.commit(4);
        polls.changed().await.unwrap();
        assert_eq!(*polls.borrow_and_update(), 5);
        assert!(woken.elapsed() >= MIN_INTERVAL, "{:?}", woken.elapsed());
        pacer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_are_spaced_by_a_multiple_of_the_time_their_answers_take() {
        let (wakes, pacer) = paced();
        // Ten polls that take 300 ms to be answered once woken.
        let answers = (0..10)
            .map(|_| {
                let wakes = Arc::clone(&wakes);
                let mut polls = wakes.subscribe();
                let (ready, ready_rx) = tokio::sync::oneshot::channel();
                let task = tokio::spawn(async move {
                    {
                        let _waiting = wakes.wait();
                        ready.send(()).unwrap();
                        polls.changed().await.unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    wakes.answered();
                });
                (ready_rx, task)
            })
            .collect::<Vec<_>>();
        let mut tasks = Vec::new();
        for (ready, task) in answers {
            ready.await.unwrap();
            tasks.push(task);
        }
        assert_eq!(wakes.waiting(), 10);
        let start = Instant::now();
        let mut polls = wakes.subscribe();
        wakes.commit(2);
        polls.changed().await.unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(wakes.waiting(), 0);
        // The pacer looks every 5 ms.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let interval = wakes.interval();
        assert!(
            interval >= Duration::from_millis(300) * BUSY_SHARE,
            "{interval:?}"
        );
        wakes.commit(3);
        polls.changed().await.unwrap();
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(300) * BUSY_SHARE,
            "the second wake came {took:?} after the first"
        );
        assert!(took < Duration::from_millis(350) * BUSY_SHARE, "{took:?}");
        pacer.abort();
    }
}
