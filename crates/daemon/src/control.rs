//! Stopping and reloading the daemon: two flags that signals (or a test) set and the
//! run loop reads every turn.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;

/// The daemon's stop and reload flags. Clones share them.
#[derive(Debug, Clone, Default)]
pub struct Control {
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

impl Control {
    /// Flags that only [`Control::stop`] and [`Control::reload`] set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Flags set by signals: SIGHUP asks for a reload, SIGTERM and SIGINT stop. Install
    /// them before anything slow: a SIGHUP during start-up must not kill the engine (the
    /// default action), and a SIGTERM must stop it cleanly once started.
    pub fn from_signals() -> anyhow::Result<Self> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let control = Self::new();
        signal_hook::flag::register(SIGHUP, control.reload.clone())
            .context("installing the SIGHUP handler")?;
        for sig in [SIGTERM, SIGINT] {
            signal_hook::flag::register(sig, control.stop.clone())
                .with_context(|| format!("installing the handler of signal {sig}"))?;
        }
        Ok(control)
    }

    /// Asks the run loop to end.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether the run loop should end.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Asks for the configuration to be read again (SIGHUP).
    pub fn reload(&self) {
        self.reload.store(true, Ordering::SeqCst);
    }

    /// Whether a reload was asked since the last call.
    pub(crate) fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_shared_by_clones_and_a_reload_is_taken_once() {
        let control = Control::new();
        let clone = control.clone();
        assert!(!control.stopping());
        assert!(!control.take_reload());
        clone.reload();
        assert!(control.take_reload());
        assert!(!control.take_reload());
        clone.stop();
        assert!(control.stopping());
    }

    #[test]
    fn sighup_asks_for_a_reload_and_sigterm_stops() {
        let control = Control::from_signals().unwrap();
        // SAFETY: raising a signal whose handler (signal-hook's) only sets flags.
        assert_eq!(unsafe { libc::raise(libc::SIGHUP) }, 0);
        assert!(control.take_reload());
        assert!(!control.stopping());
        // SAFETY: as above.
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        assert!(control.stopping());
    }
}
