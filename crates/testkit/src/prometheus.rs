//! Reading `/metrics` as Prometheus would: the official Python client's text parser
//! (`prometheus_client.parser`, Debian's python3-prometheus-client) and `promtool check
//! metrics` (from Debian's prometheus package; `cargo xtask setup` installs both).
//! Neither shares code with the encoder under test.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// Where `cargo xtask setup` puts promtool (taken out of Debian's package, which would
/// start a Prometheus server if installed).
pub const PROMTOOL: &str = "/usr/local/bin/promtool";

/// One sample: its name (with `_total`, `_bucket`... as exposed), labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One metric family as the parser reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family's name (the Python parser drops a counter's `_total`).
    pub name: String,
    /// `counter`, `gauge`, `histogram`, ...
    pub kind: String,
    pub help: String,
    pub samples: Vec<Sample>,
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "help": f.documentation,
                "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]})
print(json.dumps(out))
"#;

fn run_with_stdin(command: &mut Command, input: &str) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {command:?}: {e} (run `cargo xtask setup`)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Parses `text` with the official Python client's parser; panics with its error.
pub fn parse(text: &str) -> Vec<Family> {
    // Debian's interpreter: `python3` on PATH may be another one without the package.
    let out = run_with_stdin(Command::new("/usr/bin/python3").args(["-c", PARSE]), text);
    assert!(
        out.status.success(),
        "the Prometheus parser refused the metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|f| Family {
            name: f["name"].as_str().unwrap().to_owned(),
            kind: f["type"].as_str().unwrap().to_owned(),
            help: f["help"].as_str().unwrap().to_owned(),
            samples: f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Sample {
                    name: s["name"].as_str().unwrap().to_owned(),
                    labels: s["labels"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                        .collect(),
                    value: s["value"].as_f64().unwrap(),
                })
                .collect(),
        })
        .collect()
}

/// `promtool check metrics` on `text`: its complaints (naming lints, format errors), if any.
pub fn promtool_check(text: &str) -> Result<(), String> {
    let out = run_with_stdin(Command::new(PROMTOOL).args(["check", "metrics"]), text);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The parsed families, with lookups by name and labels.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub families: Vec<Family>,
}

impl Metrics {
    /// Parses `text` (see [`parse`]).
    pub fn parse(text: &str) -> Self {
        Metrics {
            families: parse(text),
        }
    }

    /// The family whose samples are named `sample_name` (a counter's `x_total` is in
    /// family `x`), with its type.
    pub fn family_of(&self, sample_name: &str) -> Option<&Family> {
        self.families
            .iter()
            .find(|f| f.samples.iter().any(|s| s.name == sample_name) || f.name == sample_name)
    }

    /// Every sample named `name` whose labels include `labels`.
    pub fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.families
            .iter()
            .flat_map(|f| &f.samples)
            .filter(move |s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
    }

    /// The one sample named `name` with `labels`; panics if there is none or several.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self.samples(name, labels).collect();
        match found[..] {
            [one] => one.value,
            _ => panic!("{} samples {name} with {labels:?}: {found:?}", found.len()),
        }
    }

    /// The sample's value, or `None` when it is absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self.samples(name, labels).collect();
        match found[..] {
            [] => None,
            [one] => Some(one.value),
            _ => panic!("{} samples {name} with {labels:?}", found.len()),
        }
    }

    /// The type of the family holding `sample_name`.
    pub fn kind(&self, sample_name: &str) -> &str {
        &self
            .family_of(sample_name)
            .unwrap_or_else(|| panic!("no family has {sample_name}"))
            .kind
    }
}
