//! BIRD 2's control socket (the protocol `birdc` speaks): the engine reconfigures the
//! daemon and reads its protocols through it, without running `birdc`.
//!
//! A reply is lines of a four-digit code and a separator: `-` when more lines of the
//! reply follow, a space on the last one; a line that starts with a space continues the
//! previous code. Codes 0xxx end a command successfully, 1xxx/2xxx are table rows and
//! headers, 8xxx and 9xxx are errors (`8002 file:line:col syntax error`, `9001 syntax
//! error`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a command may take before the daemon is taken for hung.
const TIMEOUT: Duration = Duration::from_secs(3);

/// One connection to BIRD's control socket.
pub struct Bird {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// The greeting's version (`BIRD 2.0.12`).
    version: String,
}

/// A reply line: its code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub code: u16,
    pub text: String,
}

/// A row of `show protocols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    /// `BGP`, `Static`, `Device`, ...
    pub proto: String,
    /// `up`, `start`, `down`, `flush`.
    pub state: String,
    pub since: String,
    /// `Established`, `Active`, `Connect`, `Error: ...`, or empty.
    pub info: String,
}

impl Bird {
    /// Connects and reads the greeting.
    pub fn connect(path: &Path) -> anyhow::Result<Bird> {
        let stream = UnixStream::connect(path).map_err(|e| {
            anyhow::anyhow!(
                "no BGP daemon answers on {} ({e}): install bird2 and start `bird -s {}` \
                 with this engine's include file in its configuration",
                path.display(),
                path.display()
            )
        })?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        let writer = stream.try_clone()?;
        let mut bird = Bird {
            path: path.to_owned(),
            reader: BufReader::new(stream),
            writer,
            version: String::new(),
        };
        let greeting = bird.reply()?;
        bird.version = greeting
            .iter()
            .find(|l| l.code == 1)
            .map(|l| l.text.trim_end_matches(" ready.").to_owned())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} answered {:?}, not BIRD's greeting",
                    path.display(),
                    greeting
                )
            })?;
        Ok(bird)
    }

    /// The daemon as it names itself, e.g. `BIRD 2.0.12`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Sends `command` and reads its whole reply; an error code is an error with
    /// BIRD's text.
    pub fn command(&mut self, command: &str) -> anyhow::Result<Vec<Line>> {
        self.writer
            .write_all(format!("{command}\n").as_bytes())
            .map_err(|e| anyhow::anyhow!("sending {command:?} to {}: {e}", self.path.display()))?;
        let lines = self.reply()?;
        if let Some(bad) = lines.iter().find(|l| l.code >= 8000) {
            anyhow::bail!("BIRD refused {command:?}: {} (code {})", bad.text, bad.code);
        }
        Ok(lines)
    }

    /// Rereads the configuration (`configure`): BIRD restarts only the protocols whose
    /// configuration changed, so a new route list leaves the BGP sessions up.
    pub fn configure(&mut self) -> anyhow::Result<()> {
        let lines = self.command("configure")?;
        // 0003 Reconfigured, 0004 Reconfiguration in progress, 0018 confirmed, 0019 nothing
        // to do: any final 00xx is success.
        match lines.last() {
            Some(l) if l.code < 100 => Ok(()),
            other => anyhow::bail!("BIRD answered `configure` with {other:?}"),
        }
    }

    /// `show protocols`.
    pub fn protocols(&mut self) -> anyhow::Result<Vec<Protocol>> {
        let lines = self.command("show protocols")?;
        Ok(lines
            .iter()
            .filter(|l| l.code == 1002)
            .filter_map(|l| parse_protocol(&l.text))
            .collect())
    }

    fn reply(&mut self) -> anyhow::Result<Vec<Line>> {
        let mut lines: Vec<Line> = Vec::new();
        loop {
            let mut raw = String::new();
            let n = self.reader.read_line(&mut raw).map_err(|e| {
                anyhow::anyhow!(
                    "reading BIRD's reply on {} ({e}): is the daemon hung?",
                    self.path.display()
                )
            })?;
            if n == 0 {
                anyhow::bail!("BIRD closed its control socket {}", self.path.display());
            }
            let raw = raw.trim_end_matches('\n');
            match parse_line(raw) {
                Some((code, last, text)) => {
                    lines.push(Line {
                        code,
                        text: text.to_owned(),
                    });
                    if last {
                        return Ok(lines);
                    }
                }
                // A continuation: same code as the line before.
                None => {
                    let code = lines.last().map_or(0, |l| l.code);
                    lines.push(Line {
                        code,
                        text: raw.strip_prefix(' ').unwrap_or(raw).to_owned(),
                    });
                }
            }
        }
    }
}

/// `NNNN-text` (more follow) or `NNNN text` (last); `None` for a continuation line.
fn parse_line(raw: &str) -> Option<(u16, bool, &str)> {
    let code = raw.get(..4)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let last = match raw.as_bytes().get(4) {
        Some(b' ') | None => true,
        Some(b'-') => false,
        Some(_) => return None,
    };
    Some((code.parse().ok()?, last, raw.get(5..).unwrap_or("")))
}

/// A `show protocols` row: `name proto table state since info...` (since is one word,
/// a time, or two, a date and a time, by BIRD's `timeformat protocol`).
fn parse_protocol(text: &str) -> Option<Protocol> {
    let mut words = text.split_whitespace();
    let name = words.next()?.to_owned();
    let proto = words.next()?.to_owned();
    let _table = words.next()?;
    let state = words.next()?.to_owned();
    let mut since = words.next()?.to_owned();
    let rest: Vec<&str> = words.collect();
    let mut rest = rest.as_slice();
    // A date then a time.
    if let Some((first, tail)) = rest.split_first() {
        if first.contains(':') && since.contains('-') {
            since = format!("{since} {first}");
            rest = tail;
        }
    }
    Some(Protocol {
        name,
        proto,
        state,
        since,
        info: rest.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines_parse_with_their_separator() {
        assert_eq!(
            parse_line("0001 BIRD 2.0.12 ready."),
            Some((1, true, "BIRD 2.0.12 ready."))
        );
        assert_eq!(
            parse_line("2002-Name       Proto"),
            Some((2002, false, "Name       Proto"))
        );
        assert_eq!(parse_line("0000 "), Some((0, true, "")));
        assert_eq!(parse_line("0000"), Some((0, true, "")));
        assert_eq!(parse_line(" ricochet_vips4 Static"), None);
        assert_eq!(parse_line("12ab foo"), None);
    }

    #[test]
    fn protocol_rows_keep_the_info_whole() {
        let p = parse_protocol(
            "ricochet_peer_192_168_33_1 BGP        ---        start  11:48:24.526  Connect       Socket: Connection refused",
        )
        .unwrap();
        assert_eq!(p.name, "ricochet_peer_192_168_33_1");
        assert_eq!(p.proto, "BGP");
        assert_eq!(p.state, "start");
        assert_eq!(p.since, "11:48:24.526");
        assert_eq!(p.info, "Connect Socket: Connection refused");
        let p = parse_protocol("device1    Device     ---        up     2026-12-03 11:48:24  ")
            .unwrap();
        assert_eq!(p.since, "2026-12-03 11:48:24");
        assert_eq!(p.info, "");
    }
}
