//! `cargo xtask package`: the Debian package, assembled here and built with `dpkg-deb`.
//!
//! Why not cargo-deb: it would be one more tool to compile (a few minutes on a fresh machine,
//! for every `cargo xtask test`), while the xtask stays std-only and dpkg-deb is on every
//! Debian host. The package's content is small and explicit (the release binary, two units,
//! three conffiles, man pages, completions, maintainer scripts), and assembling it by hand
//! keeps every mode, path and script under our eyes; dpkg-shlibdeps gives the library
//! dependencies as debhelper would.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::{cargo, output, run, Failure};

pub const NAME: &str = "ricochet";
/// The workspace's version (every crate inherits it, xtask included).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const MAINTAINER: &str = "Ricochet developers <ricochet@example.invalid>";

/// Files of the package that are configuration: dpkg keeps local changes to them.
pub const CONFFILES: &[&str] = &[
    "/etc/ricochet/ricochet.yaml",
    "/etc/ricochet/engine.env",
    "/etc/ricochet/controller.env",
];
pub const UNITS: &[&str] = &["ricochet-controller.service", "ricochet-engine@.service"];
/// Pages every installation must have (all subcommands get one; these are checked by name).
pub const KEY_MAN_PAGES: &[&str] = &[
    "ricochet",
    "ricochet-engine",
    "ricochet-controller",
    "ricochet-detach",
    "ricochet-status",
    "ricochet-server-setup",
];
pub const BASH_COMPLETION: &str = "/usr/share/bash-completion/completions/ricochet";
const COMPLETIONS: &[(&str, &str)] = &[
    ("bash", BASH_COMPLETION),
    ("zsh", "/usr/share/zsh/vendor-completions/_ricochet"),
    ("fish", "/usr/share/fish/vendor_completions.d/ricochet.fish"),
];

/// Builds the release binary and the `.deb`; returns the package's path.
pub fn build(root: &Path, target: &Path) -> Result<PathBuf, Failure> {
    // The eBPF objects are built and embedded by crates/bpf's build script, in release too.
    run(cargo(root).args(["build", "--release", "-p", NAME]))?;
    let binary = target.join("release").join(NAME);
    let arch = text(Command::new("dpkg").arg("--print-architecture"))?;
    let out = target.join("package");
    let stage = out.join(format!("{NAME}_{VERSION}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).map_err(|e| io_failure(&stage, e))?;
    }
    let packaging = root.join("packaging");
    let put = |path: &str, mode: u32, content: &[u8]| write_file(&stage, path, mode, content);

    // The binary, stripped as dh_strip does (its embedded eBPF objects are data, untouched).
    let bin = stage.join("usr/bin/ricochet");
    create_parent(&bin)?;
    run(Command::new("strip")
        .args([
            "--strip-unneeded",
            "--remove-section=.comment",
            "--remove-section=.note",
        ])
        .arg("-o")
        .arg(&bin)
        .arg(&binary))?;
    set_mode(&bin, 0o755)?;

    for unit in UNITS {
        put(
            &format!("/lib/systemd/system/{unit}"),
            0o644,
            &read(&packaging.join("systemd").join(unit))?,
        )?;
    }
    for conffile in CONFFILES {
        let name = Path::new(conffile).file_name().expect("a file name");
        put(conffile, 0o644, &read(&packaging.join("etc").join(name))?)?;
    }

    // Man pages and completions come from the binary's own clap definitions.
    let pages = out.join("man");
    if pages.exists() {
        fs::remove_dir_all(&pages).map_err(|e| io_failure(&pages, e))?;
    }
    run(Command::new(&bin)
        .args(["generate", "man", "--out"])
        .arg(&pages))?;
    let mut names: Vec<PathBuf> = fs::read_dir(&pages)
        .map_err(|e| io_failure(&pages, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    for page in &names {
        let name = page
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        put(
            &format!("/usr/share/man/man1/{name}.gz"),
            0o644,
            &gzip(&read(page)?)?,
        )?;
    }
    for (shell, path) in COMPLETIONS {
        let script = output(Command::new(&bin).args(["generate", "completion", shell]))?.stdout;
        if script.is_empty() {
            return Err(Failure::new(format!(
                "`ricochet generate completion {shell}` printed nothing"
            )));
        }
        put(path, 0o644, &script)?;
    }

    let doc = "/usr/share/doc/ricochet";
    put(
        &format!("{doc}/copyright"),
        0o644,
        &read(&packaging.join("debian/copyright"))?,
    )?;
    put(
        &format!("{doc}/changelog.gz"),
        0o644,
        &gzip(changelog(root)?.as_bytes())?,
    )?;
    put(
        &format!("{doc}/examples/seed.yaml"),
        0o644,
        &read(&root.join("crates/config/examples/seed.yaml"))?,
    )?;
    put(
        "/usr/share/lintian/overrides/ricochet",
        0o644,
        &read(&packaging.join("debian/lintian-overrides"))?,
    )?;

    // The control area.
    for script in ["postinst", "prerm", "postrm"] {
        put(
            &format!("/DEBIAN/{script}"),
            0o755,
            &read(&packaging.join("debian").join(script))?,
        )?;
    }
    put(
        "/DEBIAN/conffiles",
        0o644,
        (CONFFILES.join("\n") + "\n").as_bytes(),
    )?;
    let (files, dirs) = walk(&stage)?;
    // create_dir_all follows the umask; a package's directories are 0755 whatever it is.
    for dir in &dirs {
        set_mode(&stage.join(dir), 0o755)?;
    }
    let payload: Vec<&PathBuf> = files.iter().filter(|f| !f.starts_with("DEBIAN")).collect();
    // As dh_md5sums: conffiles have their sums in dpkg's conffile records already.
    let summed: Vec<&PathBuf> = payload
        .iter()
        .copied()
        .filter(|f| !CONFFILES.contains(&format!("/{}", f.display()).as_str()))
        .collect();
    let md5sums = md5sums(&stage, &summed)?;
    put("/DEBIAN/md5sums", 0o644, md5sums.as_bytes())?;
    let installed_kib: u64 = payload
        .iter()
        .map(|f| fs::metadata(stage.join(f)).map_or(0, |m| m.len().div_ceil(1024)))
        .sum::<u64>()
        + dirs.iter().filter(|d| !d.starts_with("DEBIAN")).count() as u64;
    let depends = format!("{}, adduser", shlib_depends(&out, &bin)?);
    put(
        "/DEBIAN/control",
        0o644,
        control(&arch, installed_kib, &depends).as_bytes(),
    )?;

    let deb = out.join(format!("{NAME}_{VERSION}_{arch}.deb"));
    let mut build = Command::new("dpkg-deb");
    build
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb)
        .env("SOURCE_DATE_EPOCH", source_date_epoch(root)?);
    run(&mut build)?;
    println!("    built {} ({depends})", deb.display());
    Ok(deb)
}

/// Runs lintian on the package; any error or warning fails (overrides, with their
/// reasons, are in packaging/debian/lintian-overrides). Informational tags are printed.
pub fn lintian(deb: &Path) -> Result<(), Failure> {
    let result = crate::cmd::probe(
        Command::new("lintian")
            .args(["--display-info", "--fail-on", "error,warning"])
            .arg(deb),
    )?;
    let report = String::from_utf8_lossy(&result.stdout);
    print!("{report}");
    if result.status.success() {
        println!(
            "    lintian: no error or warning ({} informational tags)",
            report.lines().filter(|l| l.starts_with("I:")).count()
        );
        Ok(())
    } else {
        Err(Failure::new(format!(
            "lintian reports errors or warnings on {} ({}): {}",
            deb.display(),
            result.status,
            String::from_utf8_lossy(&result.stderr).trim()
        ))
        .hint("fix the package, or override a tag with its reason in packaging/debian/lintian-overrides"))
    }
}

fn control(arch: &str, installed_kib: u64, depends: &str) -> String {
    format!(
        "Package: {NAME}\n\
         Version: {VERSION}\n\
         Architecture: {arch}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Section: net\n\
         Priority: optional\n\
         Description: L4 load balancer with Direct Server Return on XDP\n \
         Ricochet balances TCP and UDP virtual services over pools of servers with\n \
         Direct Server Return: an XDP program sends each client packet to a server in\n \
         IP-in-IP, and the server answers the client directly. Its configuration\n \
         follows VMware Avi's object model (network profiles, virtual services, pools).\n \
         .\n \
         This package has the `ricochet` command (service engine, controller with a\n \
         REST API, their clients and the pool servers' setup), systemd units for the\n \
         controller and for an engine per interface (ricochet-engine@IFACE), man pages\n \
         and shell completions.\n"
    )
}

/// A Debian changelog of one entry, dated by the last commit (so a rebuild of the same
/// commit gives the same file).
fn changelog(root: &Path) -> Result<String, Failure> {
    let date = text(
        Command::new("git")
            .current_dir(root)
            .args(["log", "-1", "--format=%cD"]),
    )?;
    Ok(format!(
        "{NAME} ({VERSION}) unstable; urgency=medium\n\n  \
         * Built from the source tree by `cargo xtask package`.\n\n \
         -- {MAINTAINER}  {date}\n"
    ))
}

fn source_date_epoch(root: &Path) -> Result<String, Failure> {
    text(
        Command::new("git")
            .current_dir(root)
            .args(["log", "-1", "--format=%ct"]),
    )
}

/// The library dependencies of `binary`, as dpkg-shlibdeps computes them for debhelper
/// (`libc6 (>= 2.34), libgcc-s1 (>= 4.2)`). It insists on a debian/control, so it runs in
/// a scratch directory holding a minimal one.
fn shlib_depends(scratch: &Path, binary: &Path) -> Result<String, Failure> {
    let dir = scratch.join("shlibdeps");
    write_file(
        &dir,
        "/debian/control",
        0o644,
        format!("Source: {NAME}\n\nPackage: {NAME}\nArchitecture: any\n").as_bytes(),
    )?;
    let out = text(
        Command::new("dpkg-shlibdeps")
            .current_dir(&dir)
            .arg("-O")
            .arg(binary),
    )?;
    out.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_owned)
        .ok_or_else(|| Failure::new(format!("dpkg-shlibdeps printed no shlibs:Depends: {out}")))
}

/// Regular files and directories under `stage`, relative to it, sorted.
fn walk(stage: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), Failure> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut pending = vec![stage.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).map_err(|e| io_failure(&dir, e))? {
            let path = entry.map_err(|e| io_failure(&dir, e))?.path();
            let relative = path
                .strip_prefix(stage)
                .expect("under the stage")
                .to_owned();
            if path.is_dir() {
                dirs.push(relative);
                pending.push(path);
            } else {
                files.push(relative);
            }
        }
    }
    files.sort();
    dirs.sort();
    Ok((files, dirs))
}

fn md5sums(stage: &Path, files: &[&PathBuf]) -> Result<String, Failure> {
    let mut md5 = Command::new("md5sum");
    md5.current_dir(stage).args(files);
    Ok(String::from_utf8_lossy(&output(&mut md5)?.stdout).into_owned())
}

/// `gzip -9n`: maximal compression and no name or time stamp (lintian asks for both).
fn gzip(content: &[u8]) -> Result<Vec<u8>, Failure> {
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new(format!("cannot run gzip: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(content)
        .map_err(|e| Failure::new(format!("writing to gzip: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| Failure::new(format!("gzip: {e}")))?;
    if !out.status.success() {
        return Err(Failure::new(format!("gzip failed ({})", out.status)));
    }
    Ok(out.stdout)
}

/// A command's trimmed standard output.
fn text(command: &mut Command) -> Result<String, Failure> {
    Ok(String::from_utf8_lossy(&output(command)?.stdout)
        .trim()
        .to_owned())
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    fs::read(path).map_err(|e| io_failure(path, e))
}

/// Writes `content` at `path` (absolute inside the package) under `stage`, with `mode`;
/// directories on the way get 0755.
fn write_file(stage: &Path, path: &str, mode: u32, content: &[u8]) -> Result<(), Failure> {
    let file = stage.join(path.trim_start_matches('/'));
    create_parent(&file)?;
    fs::write(&file, content).map_err(|e| io_failure(&file, e))?;
    set_mode(&file, mode)
}

fn create_parent(file: &Path) -> Result<(), Failure> {
    let parent = file.parent().expect("a file has a parent");
    fs::create_dir_all(parent).map_err(|e| io_failure(parent, e))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), Failure> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| io_failure(path, e))
}

fn io_failure(path: &Path, error: std::io::Error) -> Failure {
    Failure::new(format!("{}: {error}", path.display()))
}
