//! A configuration file as the daemon's source: read and validated at start (a bad file
//! stops the engine before it touches the kernel), then read again on SIGHUP or when its
//! content changed, checked every watch interval.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ricochet_config::{Config, Desired};
use tracing::info;

/// A configuration file followed for changes.
pub struct FileSource {
    path: PathBuf,
    watch_interval: Duration,
    /// The content last read, to notice a change.
    text: Vec<u8>,
    last_watch: Instant,
}

impl FileSource {
    /// Reads and validates `path`: the source and its first configuration.
    pub fn open(
        path: &Path,
        watch_interval: Duration,
    ) -> anyhow::Result<(FileSource, Config, Desired)> {
        let (config, desired, text) = load_desired(path)?;
        let source = FileSource {
            path: path.to_owned(),
            watch_interval,
            text,
            last_watch: Instant::now(),
        };
        Ok((source, config, desired))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether to read the file again: a reload was asked (SIGHUP), or the watch
    /// interval elapsed and the content changed.
    pub fn changed(&mut self, reload: bool) -> bool {
        if reload {
            info!("SIGHUP: reloading the configuration");
            true
        } else if self.last_watch.elapsed() >= self.watch_interval {
            self.last_watch = Instant::now();
            std::fs::read(&self.path).is_ok_and(|t| t != self.text)
        } else {
            false
        }
    }

    /// Reads and validates the file after a change. A refused content is remembered too,
    /// so that the same bad file is reported once.
    ///
    /// An empty file is refused: it is valid YAML for a configuration without services,
    /// but a file rewritten in place (truncated, then written, as `std::fs::write`, shell
    /// redirections and many editors do) is empty for a moment, and applying that moment
    /// would remove every service until the next read.
    pub fn load(&mut self) -> anyhow::Result<(Config, Desired)> {
        match std::fs::read(&self.path) {
            Ok(t) if t.iter().all(u8::is_ascii_whitespace) => {
                self.text = t;
                anyhow::bail!(
                    "{} is empty: refused, the running configuration stays (to run without \
                     services, write `virtual_services: []`)",
                    self.path.display()
                );
            }
            _ => {}
        }
        match load_desired(&self.path) {
            Ok((config, desired, text)) => {
                self.text = text;
                Ok((config, desired))
            }
            Err(e) => {
                if let Ok(t) = std::fs::read(&self.path) {
                    self.text = t;
                }
                Err(e)
            }
        }
    }
}

/// Reads, parses and validates the configuration file at `path`; also its bytes.
pub fn load_desired(path: &Path) -> anyhow::Result<(Config, Desired, Vec<u8>)> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::load(path)?;
    let desired = config
        .compile()
        // The errors' own text starts with "invalid configuration".
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((config, desired, text))
}
