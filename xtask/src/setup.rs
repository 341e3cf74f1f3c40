//! `cargo xtask setup`: installs what the project needs, idempotently.
//!
//! Every step checks first and only installs what is missing, so a ready machine finishes in
//! seconds. A step that cannot proceed says what to run next.

use std::path::Path;
use std::process::Command;

use crate::cmd::{display, is_root, output, probe, run, Failure};

/// Debian packages: the eBPF linker's LLVM, the servers, clients and tools of the test bed
/// (hping3 for the flood tests), and what the benchmarks compare against or draw with (wrk,
/// nginx's stream module, a font).
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "nginx",
    "tcpdump",
    "ethtool",
    "iproute2",
    "iputils-ping",
    "curl",
    "iperf3",
    "dnsmasq",
    "knot-dnsutils",
    "python3-scapy",
    // The virtual environment schemathesis is installed into (step 6).
    "python3-venv",
    "wrk",
    // Spoofed SYN and ACK floods in crates/cli/tests/flood_e2e.rs.
    "hping3",
    // The BGP daemon beside each engine of a service engine group, and the test bed's
    // router (crates/cli/tests/group_e2e.rs).
    "bird2",
    "libnginx-mod-stream",
    // The path-MTU test (crates/cli/tests/modes_e2e.rs) withholds a router's ICMP errors
    // with an nftables rule, to show the download needs them.
    "nftables",
    "fonts-dejavu-core",
    // The official Prometheus client's text parser reads /metrics in the tests.
    "python3-prometheus-client",
    // `cargo xtask package`: dpkg-shlibdeps and strip (dpkg-dev), lintian; its install test
    // builds a Debian 12 root with debootstrap.
    "dpkg-dev",
    "lintian",
    "debootstrap",
    // The web console's browser test (crates/cli/tests/console_e2e.rs): headless Chromium
    // driven through chromedriver.
    "chromium",
    "chromium-driver",
];

/// promtool lints the metrics' names in the tests (`promtool check metrics`).
const PROMTOOL: &str = "/usr/local/bin/promtool";

/// The LLVM major version that bpf-linker is built against; the nightly that compiles the eBPF
/// crate must emit bitcode of the same major version.
const LLVM_MAJOR: u32 = 22;
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";
pub(crate) const NIGHTLY: &str = "nightly";

/// schemathesis, from PyPI, which the controller's tests run against its OpenAPI document.
pub(crate) const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// Its virtual environment, in the workspace's target directory (nothing installed
/// system-wide); `crates/controller/tests/schemathesis.rs` runs it from there.
const SCHEMATHESIS_VENV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/schemathesis-venv");

const STEPS: usize = 7;

/// Entry point of `cargo xtask setup` (also the first step of `test` and `demo`): runs every
/// step in order.
pub fn setup() -> Result<(), Failure> {
    debian_packages(1)?;
    workspace_components(2)?;
    nightly_rust_src(3)?;
    nightly_llvm(4)?;
    bpf_linker(5)?;
    promtool(6)?;
    schemathesis(7)?;
    println!("Setup complete.");
    Ok(())
}

fn progress(index: usize, what: &str, status: &str) {
    println!("[{index}/{STEPS}] {what}: {status}");
}

fn debian_packages(index: usize) -> Result<(), Failure> {
    const WHAT: &str = "Debian packages";
    let mut missing = Vec::new();
    for package in PACKAGES {
        let mut query = Command::new("dpkg-query");
        query.args(["-W", "-f=${Status}", package]);
        let result = probe(&mut query).map_err(|f| {
            f.hint(
                "this setup supports Debian 12 (dpkg and apt); elsewhere install the \
                 equivalents of these packages by hand: "
                    .to_owned()
                    + &PACKAGES.join(" "),
            )
        })?;
        let status = String::from_utf8_lossy(&result.stdout);
        if !(result.status.success() && status.trim() == "install ok installed") {
            missing.push(*package);
        }
    }
    if missing.is_empty() {
        progress(
            index,
            WHAT,
            &format!("all {} already installed", PACKAGES.len()),
        );
        return Ok(());
    }

    let list = missing.join(" ");
    let commands =
        format!("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {list}");
    if !is_root() {
        return Err(Failure::new(format!(
            "[{index}/{STEPS}] {WHAT}: missing {list}, and installing them needs root"
        ))
        .hint(format!("run as root: {commands}"))
        .hint("or rerun `cargo xtask setup` as root"));
    }
    progress(index, WHAT, &format!("installing {list}"));
    let apt_failure = |f: Failure| {
        f.hint(format!("fix the apt problem above, then run: {commands}"))
            .hint(format!(
                "llvm-{LLVM_MAJOR}-dev and libpolly-{LLVM_MAJOR}-dev come from Debian 12's \
                 bookworm-security/updates suites; check /etc/apt/sources.list.d"
            ))
    };
    run(Command::new("apt-get").arg("update")).map_err(apt_failure)?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y"])
        .args(&missing))
    .map_err(apt_failure)?;
    progress(index, WHAT, &format!("installed {list}"));
    Ok(())
}

/// promtool, taken out of Debian's prometheus package rather than installed with it:
/// installing the package would also start a Prometheus server (its init script) on
/// port 9090. `apt-get download` and `dpkg-deb -x` run no maintainer script.
fn promtool(index: usize) -> Result<(), Failure> {
    const WHAT: &str = "promtool (from Debian's prometheus package)";
    if Path::new(PROMTOOL).exists() {
        progress(index, WHAT, "already installed");
        return Ok(());
    }
    if !is_root() {
        return Err(Failure::new(format!(
            "[{index}/{STEPS}] {WHAT}: {PROMTOOL} is missing, and installing it needs root"
        ))
        .hint("rerun `cargo xtask setup` as root"));
    }
    progress(index, WHAT, &format!("extracting it to {PROMTOOL}"));
    let dir = std::env::temp_dir().join(format!("ricochet-promtool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::new(format!("creating {}: {e}", dir.display())))?;
    let result = (|| {
        run(Command::new("apt-get")
            .current_dir(&dir)
            .args(["download", "prometheus"]))
        .map_err(|f| f.hint("run `apt-get update` (as root), then `cargo xtask setup` again"))?;
        let deb = std::fs::read_dir(&dir)
            .map_err(|e| Failure::new(format!("reading {}: {e}", dir.display())))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .ok_or_else(|| Failure::new("apt-get download prometheus left no .deb file"))?;
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(dir.join("root")))?;
        std::fs::copy(dir.join("root/usr/bin/promtool"), PROMTOOL)
            .map_err(|e| Failure::new(format!("copying promtool to {PROMTOOL}: {e}")))?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    progress(index, WHAT, "installed");
    Ok(())
}

/// Lists the installed rustup components (of `toolchain`, or of the workspace's toolchain).
fn installed_components(toolchain: Option<&str>) -> Result<Vec<String>, Failure> {
    let mut list = Command::new("rustup");
    list.current_dir(crate::workspace_root())
        .args(["component", "list", "--installed"]);
    if let Some(toolchain) = toolchain {
        list.args(["--toolchain", toolchain]);
    }
    let result = probe(&mut list).map_err(|f| f.hint("install rustup: https://rustup.rs"))?;
    if !result.status.success() {
        let stderr = String::from_utf8_lossy(&result.stderr);
        let mut failure = Failure::new(format!("`{}` failed: {}", display(&list), stderr.trim()));
        if let Some(toolchain) = toolchain {
            failure = failure.hint(format!(
                "install the `{toolchain}` toolchain: `rustup toolchain install {toolchain} \
                 --profile minimal --component rust-src`; the eBPF build needs one whose LLVM \
                 major is {LLVM_MAJOR} (check with `rustc +{toolchain} -vV`), e.g. the \
                 {toolchain} of 2026-05-19"
            ));
        }
        return Err(failure);
    }
    Ok(String::from_utf8_lossy(&result.stdout)
        .lines()
        // Lines look like `rustfmt-x86_64-unknown-linux-gnu` or `rust-src`.
        .map(str::to_owned)
        .collect())
}

fn has_component(installed: &[String], component: &str) -> bool {
    // Host-specific components carry the target triple (`rustfmt-x86_64-unknown-linux-gnu`),
    // which has at least two dashes; `rust-src` is not the component `rust` of a target.
    installed.iter().any(|line| {
        line == component
            || line
                .strip_prefix(component)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|triple| triple.matches('-').count() >= 2)
    })
}

fn workspace_components(index: usize) -> Result<(), Failure> {
    const WHAT: &str = "Rust components rustfmt and clippy (workspace toolchain)";
    let installed = installed_components(None)?;
    let missing: Vec<&str> = ["rustfmt", "clippy"]
        .into_iter()
        .filter(|c| !has_component(&installed, c))
        .collect();
    if missing.is_empty() {
        progress(index, WHAT, "already installed");
        return Ok(());
    }
    progress(index, WHAT, &format!("adding {}", missing.join(" ")));
    run(Command::new("rustup")
        .current_dir(crate::workspace_root())
        .args(["component", "add"])
        .args(&missing))
}

fn nightly_rust_src(index: usize) -> Result<(), Failure> {
    let what = format!("rust-src on the {NIGHTLY} toolchain (for -Z build-std=core)");
    if has_component(&installed_components(Some(NIGHTLY))?, "rust-src") {
        progress(index, &what, "already installed");
        return Ok(());
    }
    progress(index, &what, "adding");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

/// Parses the major version from `rustc -vV`'s `LLVM version: 22.1.4` line.
fn llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version:"))
        .and_then(|version| version.trim().split('.').next())
        .and_then(|major| major.parse().ok())
}

fn nightly_llvm(index: usize) -> Result<(), Failure> {
    let what = format!("LLVM of the {NIGHTLY} toolchain");
    let result = output(Command::new("rustc").arg(format!("+{NIGHTLY}")).arg("-vV"))?;
    let text = String::from_utf8_lossy(&result.stdout);
    let release = text
        .lines()
        .find_map(|line| line.strip_prefix("release:"))
        .unwrap_or("?")
        .trim()
        .to_owned();
    match llvm_major(&text) {
        Some(LLVM_MAJOR) => {
            progress(
                index,
                &what,
                &format!("{LLVM_MAJOR} (rustc {release}), as required"),
            );
            Ok(())
        }
        Some(other) => Err(Failure::new(format!(
            "[{index}/{STEPS}] {what}: rustc {release} uses LLVM {other}, but bpf-linker \
             {BPF_LINKER_VERSION} is built against LLVM {LLVM_MAJOR} and cannot read LLVM \
             {other} bitcode (linking the eBPF object fails with `Invalid record`)"
        ))
        .hint(format!(
            "install a nightly on LLVM {LLVM_MAJOR} as `{NIGHTLY}`: nightly 1.97 of 2026-05-19 \
             is known to work (`rustup toolchain install nightly-2026-05-19 --profile minimal \
             --component rust-src`), and `rustc +{NIGHTLY} -vV` must print `LLVM version: \
             {LLVM_MAJOR}.x`"
        ))),
        None => Err(Failure::new(format!(
            "[{index}/{STEPS}] {what}: no `LLVM version:` line in `rustc +{NIGHTLY} -vV`:\n{text}"
        ))),
    }
}

/// Whether cargo's install record says bpf-linker was built with the `llvm-22` feature.
/// `None` when the record cannot be read.
fn bpf_linker_built_for_llvm() -> Option<bool> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))?;
    let record = std::fs::read_to_string(cargo_home.join(".crates2.json")).ok()?;
    let entry = &record[record.find(&format!("\"bpf-linker {BPF_LINKER_VERSION} "))?..];
    // Every entry of the record has a `features` list; the first one after the key is ours.
    let features = &entry[entry.find("\"features\":[")?..];
    let features = &features[..features.find(']')?];
    Some(features.contains(&format!("\"llvm-{LLVM_MAJOR}\"")))
}

fn schemathesis(index: usize) -> Result<(), Failure> {
    let what = format!("schemathesis {SCHEMATHESIS_VERSION} (PyPI, in target/schemathesis-venv)");
    let venv = Path::new(SCHEMATHESIS_VENV);
    let bin = venv.join("bin/schemathesis");
    let installed = Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if installed
        .as_deref()
        .is_some_and(|v| v.ends_with(&format!("version {SCHEMATHESIS_VERSION}")))
    {
        progress(index, &what, "already installed");
        return Ok(());
    }
    progress(index, &what, "installing");
    if !venv.join("bin/pip").exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(venv))
            .map_err(|f| f.hint("install python3-venv (step 1 does, as root)"))?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet"])
        .arg(format!("schemathesis=={SCHEMATHESIS_VERSION}")))
    .map_err(|f| f.hint("pip needs to reach pypi.org"))?;
    Ok(())
}

fn bpf_linker(index: usize) -> Result<(), Failure> {
    let what = format!("bpf-linker {BPF_LINKER_VERSION} (LLVM {LLVM_MAJOR})");
    let installed = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if let Some(version) = &installed {
        if version.split_whitespace().nth(1) == Some(BPF_LINKER_VERSION) {
            let status = match bpf_linker_built_for_llvm() {
                Some(true) => format!("already installed (feature llvm-{LLVM_MAJOR})"),
                Some(false) => format!(
                    "already installed, but cargo's record shows no llvm-{LLVM_MAJOR} feature; \
                     if linking eBPF fails, reinstall it with `cargo install --force ...` as below"
                ),
                None => "already installed".to_owned(),
            };
            progress(index, &what, &status);
            return Ok(());
        }
    }
    if !Path::new(LLVM_PREFIX).join("bin/llvm-config").exists() {
        return Err(Failure::new(format!(
            "[{index}/{STEPS}] {what}: {LLVM_PREFIX}/bin/llvm-config is missing"
        ))
        .hint(format!(
            "install llvm-{LLVM_MAJOR}-dev and libpolly-{LLVM_MAJOR}-dev (step 1 does, as root)"
        )));
    }
    progress(
        index,
        &what,
        &match &installed {
            Some(version) => format!("replacing `{version}` (a build takes a minute or two)"),
            None => "installing (a build takes a minute or two)".to_owned(),
        },
    );
    let mut install = Command::new("cargo");
    // Outside the workspace, so that its toolchain file and config do not apply.
    install
        .current_dir(std::env::temp_dir())
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{LLVM_MAJOR}"));
    if installed.is_some() {
        install.arg("--force");
    }
    run(&mut install).map_err(|f| {
        f.hint(format!(
            "without LLVM_PREFIX the build finds /usr/bin/llvm-config (LLVM 14) and fails with \
             `unable to find library -lLLVM`; check that {LLVM_PREFIX}/lib has libLLVM"
        ))
    })?;
    match Command::new("bpf-linker").arg("--version").output() {
        Ok(o) if o.status.success() => {
            progress(
                index,
                &what,
                &format!("installed {}", String::from_utf8_lossy(&o.stdout).trim()),
            );
            Ok(())
        }
        _ => Err(Failure::new("bpf-linker was installed but does not run")
            .hint("add cargo's bin directory (usually ~/.cargo/bin) to PATH")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_rustc_vv() {
        let text = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\n\
                    release: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major(text), Some(22));
        assert_eq!(llvm_major("rustc 1.0\n"), None);
    }

    #[test]
    fn component_names_match_with_or_without_target() {
        let installed = vec![
            "rustfmt-x86_64-unknown-linux-gnu".to_owned(),
            "rust-src".to_owned(),
        ];
        assert!(has_component(&installed, "rustfmt"));
        assert!(has_component(&installed, "rust-src"));
        assert!(!has_component(&installed, "clippy"));
        assert!(!has_component(&installed, "rust"));
    }
}
