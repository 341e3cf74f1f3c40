//! The package installed into a clean Debian 12 root, the way an operator installs it.
//!
//! A minimal bookworm root (debootstrap `--variant=minbase`, plus systemd for
//! `systemd-analyze verify` and man-db for the pages) is built once from the mirror apt
//! already uses and cached under the target directory; each run copies it to a fresh root,
//! installs the `.deb` with dpkg (apt-get -f fetches missing dependencies), checks what an operator
//! relies on, then reinstalls, removes and purges it to exercise the maintainer scripts.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::cmd::{display, probe, run, Failure};
use crate::package;

const SUITE: &str = "bookworm";
/// What the cached root holds; a change of this text rebuilds it.
const BASE_RECIPE: &str = "debootstrap --variant=minbase --include=systemd,man-db bookworm";
const RECIPE_FILE: &str = "ricochet-base-recipe";

pub fn install_test(target: &Path, deb: &Path) -> Result<(), Failure> {
    let dir = target.join("package-test");
    let base = dir.join("bookworm-base");
    let start = Instant::now();
    ensure_base(&base)?;
    println!(
        "    base root ready in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    let root = dir.join("root");
    remove_root(&root)?;
    let copied = Instant::now();
    run(Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(&base)
        .arg(&root))?;
    println!(
        "    copied to {} in {:.1} s",
        root.display(),
        copied.elapsed().as_secs_f64()
    );
    let result = (|| {
        let _proc = Mount::proc(&root)?;
        let chroot = Chroot { root: &root };
        install(&chroot, deb, &base)?;
        check_installed(&chroot)?;
        maintainer_scripts(&chroot)
    })();
    // The root goes whatever happened; /proc is unmounted first (the guard above).
    remove_root(&root)?;
    result?;
    println!(
        "    package installed and checked in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Commands run inside the root, with a clean environment.
struct Chroot<'a> {
    root: &'a Path,
}

impl Chroot<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("chroot");
        command
            .arg(self.root)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C")
            .env("HOME", "/root");
        command
    }

    fn run(&self, args: &[&str]) -> Result<(), Failure> {
        run(&mut self.command(args))
    }

    /// Runs and returns (success, stdout, stderr).
    fn probe(&self, args: &[&str]) -> Result<(bool, String, String), Failure> {
        let mut command = self.command(args);
        let out = probe(&mut command)?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Runs, requires success, returns stdout.
    fn stdout(&self, args: &[&str]) -> Result<String, Failure> {
        let (ok, stdout, stderr) = self.probe(args)?;
        if !ok {
            return Err(Failure::new(format!(
                "in the root: `{}` failed: {}{}",
                args.join(" "),
                stdout.trim(),
                stderr.trim()
            )));
        }
        Ok(stdout)
    }

    fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn status(&self) -> Result<String, Failure> {
        let (_, stdout, _) = self.probe(&["dpkg-query", "-W", "-f=${Status}", package::NAME])?;
        Ok(stdout.trim().to_owned())
    }
}

fn install(chroot: &Chroot, deb: &Path, base: &Path) -> Result<(), Failure> {
    fs::copy(deb, chroot.path("/tmp/ricochet.deb"))
        .map_err(|e| Failure::new(format!("copying {} into the root: {e}", deb.display())))?;
    // dpkg does not fetch dependencies: a missing one leaves the package unpacked, and
    // apt-get -f installs it, then configures the package. (In this root all three are
    // already there: systemd and man-db bring adduser.)
    let (ok, stdout, stderr) = chroot.probe(&["dpkg", "-i", "/tmp/ricochet.deb"])?;
    if !ok {
        if !stderr.contains("dependency problems") {
            return Err(Failure::new(format!(
                "dpkg -i failed for another reason than dependencies:\n{stdout}{stderr}"
            )));
        }
        println!("    dpkg -i: dependencies missing; apt-get -f install");
        chroot.run(&["apt-get", "-f", "install", "-y", "--no-install-recommends"])?;
    }
    expect_eq("package status", &chroot.status()?, "install ok installed")?;
    // Keep what apt downloaded in the cached root, so that a repeat run needs no network.
    let archives = chroot.path("/var/cache/apt/archives");
    if let Ok(entries) = fs::read_dir(&archives) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "deb") {
                let cached = base.join("var/cache/apt/archives").join(entry.file_name());
                if !cached.exists() {
                    fs::copy(&path, &cached)
                        .map_err(|e| Failure::new(format!("caching {}: {e}", path.display())))?;
                }
            }
        }
    }
    Ok(())
}

fn check_installed(chroot: &Chroot) -> Result<(), Failure> {
    let mut expected: Vec<String> = vec![
        "/usr/bin/ricochet".into(),
        "/usr/share/doc/ricochet/copyright".into(),
        "/usr/share/doc/ricochet/changelog.gz".into(),
        "/usr/share/doc/ricochet/examples/seed.yaml".into(),
        package::BASH_COMPLETION.into(),
    ];
    expected.extend(
        package::UNITS
            .iter()
            .map(|u| format!("/lib/systemd/system/{u}")),
    );
    expected.extend(package::CONFFILES.iter().map(|c| c.to_string()));
    expected.extend(
        package::KEY_MAN_PAGES
            .iter()
            .map(|p| format!("/usr/share/man/man1/{p}.1.gz")),
    );
    for path in &expected {
        if !chroot.path(path).is_file() {
            return Err(Failure::new(format!("the installed package has no {path}")));
        }
    }

    let conffiles = chroot.stdout(&["dpkg-query", "-W", "-f=${Conffiles}", package::NAME])?;
    for conffile in package::CONFFILES {
        if !conffiles.contains(&format!(" {conffile} ")) {
            return Err(Failure::new(format!(
                "{conffile} is not registered as a conffile: {conffiles}"
            )));
        }
    }

    let version = chroot.stdout(&["ricochet", "--version"])?;
    expect_eq(
        "ricochet --version",
        version.trim(),
        &format!("ricochet {}", package::VERSION),
    )?;
    let check = chroot.stdout(&["ricochet", "check-config", "/etc/ricochet/ricochet.yaml"])?;
    if !check.contains("valid") {
        return Err(Failure::new(format!(
            "the default configuration is not valid: {check}"
        )));
    }

    // The controller's user: a system account that cannot log in.
    let user = chroot.stdout(&["getent", "passwd", "ricochet"])?;
    let fields: Vec<&str> = user.trim().split(':').collect();
    let uid: u32 = fields
        .get(2)
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX);
    if uid >= 1000 || fields.get(6) != Some(&"/usr/sbin/nologin") {
        return Err(Failure::new(format!(
            "ricochet should be a system user (uid < 1000, shell /usr/sbin/nologin): {user}"
        )));
    }

    // Every page renders without a warning, and man finds the key ones by name.
    let pages = fs::read_dir(chroot.path("/usr/share/man/man1"))
        .map_err(|e| Failure::new(format!("reading the man pages: {e}")))?;
    let mut count = 0;
    for entry in pages.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(page) = name
            .strip_suffix(".1.gz")
            .filter(|p| p.starts_with("ricochet"))
        else {
            continue;
        };
        let path = format!("/usr/share/man/man1/{name}");
        let (ok, text, warnings) = chroot.probe(&["man", "--warnings", "-l", &path])?;
        if !ok || !warnings.trim().is_empty() || !text.contains(&format!("{page}(1)")) {
            return Err(Failure::new(format!(
                "man -l {path}: exit ok {ok}, warnings: {}\n{}",
                warnings.trim(),
                text.lines().take(5).collect::<Vec<_>>().join("\n")
            )));
        }
        count += 1;
    }
    for page in package::KEY_MAN_PAGES {
        let found = chroot.stdout(&["man", "-w", page])?;
        expect_eq(
            &format!("man -w {page}"),
            found.trim(),
            &format!("/usr/share/man/man1/{page}.1.gz"),
        )?;
    }
    println!("    {count} man pages render without warnings");

    // The units: systemd's own checks (syntax, executables, users, Documentation= pages).
    let verify = [
        "systemd-analyze",
        "verify",
        "ricochet-controller.service",
        "ricochet-engine@eth0.service",
    ];
    let (ok, stdout, stderr) = chroot.probe(&verify)?;
    if !ok || !stdout.trim().is_empty() || !stderr.trim().is_empty() {
        return Err(Failure::new(format!(
            "`{}` in the root: exit ok {ok}, output:\n{}{}",
            verify.join(" "),
            stdout,
            stderr
        )));
    }
    println!("    systemd-analyze verify: no warnings");

    // Every variable the configuration names is a real flag's: a misspelt one would be
    // ignored without a word.
    environment_matches_flags(chroot)?;

    let complete = chroot.stdout(&[
        "bash",
        "-c",
        &format!(". {} && complete -p ricochet", package::BASH_COMPLETION),
    ])?;
    if !complete.contains("ricochet") {
        return Err(Failure::new(format!(
            "bash completion not registered: {complete}"
        )));
    }
    Ok(())
}

/// The RICOCHET_* variables of the environment files and units, against the `[env: ...]`
/// names in `ricochet engine --help` and `ricochet controller --help`.
fn environment_matches_flags(chroot: &Chroot) -> Result<(), Failure> {
    let engine_help = chroot.stdout(&["ricochet", "engine", "--help"])?;
    let controller_help = chroot.stdout(&["ricochet", "controller", "--help"])?;
    let sources = [
        ("/etc/ricochet/engine.env", &engine_help),
        ("/lib/systemd/system/ricochet-engine@.service", &engine_help),
        ("/etc/ricochet/controller.env", &controller_help),
        (
            "/lib/systemd/system/ricochet-controller.service",
            &controller_help,
        ),
    ];
    for (file, help) in sources {
        let text = fs::read_to_string(chroot.path(file))
            .map_err(|e| Failure::new(format!("reading {file}: {e}")))?;
        for variable in variables(&text) {
            // RICOCHET_LOG is the log filter, read before the flags.
            if variable != "RICOCHET_LOG" && !help.contains(&format!("[env: {variable}=")) {
                return Err(Failure::new(format!(
                    "{file} sets {variable}, which no flag of the command reads"
                )));
            }
        }
    }
    Ok(())
}

/// `RICOCHET_*` names assigned in a file, commented examples included.
fn variables(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let line = line.trim_start_matches(['#', ' ']);
        let line = line.strip_prefix("Environment=").unwrap_or(line);
        if let Some((name, _)) = line.split_once('=') {
            if name.starts_with("RICOCHET_")
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// Reinstall, remove (conffiles stay), install again, purge (conffiles and state go):
/// the maintainer scripts must be idempotent and leave nothing half-done.
fn maintainer_scripts(chroot: &Chroot) -> Result<(), Failure> {
    let user = chroot.stdout(&["getent", "passwd", "ricochet"])?;
    chroot.run(&["dpkg", "-i", "/tmp/ricochet.deb"])?;
    expect_eq(
        "package status after a reinstall",
        &chroot.status()?,
        "install ok installed",
    )?;
    expect_eq(
        "the user after a reinstall",
        &chroot.stdout(&["getent", "passwd", "ricochet"])?,
        &user,
    )?;

    chroot.run(&["dpkg", "--remove", package::NAME])?;
    expect_eq(
        "package status after remove",
        &chroot.status()?,
        "deinstall ok config-files",
    )?;
    if chroot.path("/usr/bin/ricochet").exists() {
        return Err(Failure::new(
            "/usr/bin/ricochet is still there after dpkg --remove",
        ));
    }
    for conffile in package::CONFFILES {
        if !chroot.path(conffile).is_file() {
            return Err(Failure::new(format!("dpkg --remove took {conffile} away")));
        }
    }
    chroot.run(&["dpkg", "-i", "/tmp/ricochet.deb"])?;
    expect_eq(
        "package status after install over config-files",
        &chroot.status()?,
        "install ok installed",
    )?;

    // State as the services would have left it.
    for dir in ["/var/lib/ricochet", "/var/lib/ricochet-engine/eth0"] {
        fs::create_dir_all(chroot.path(dir))
            .map_err(|e| Failure::new(format!("creating {dir}: {e}")))?;
    }
    fs::write(chroot.path("/var/lib/ricochet/controller.redb"), b"x")
        .map_err(|e| Failure::new(format!("writing a store: {e}")))?;
    chroot.run(&["dpkg", "--purge", package::NAME])?;
    for gone in [
        "/etc/ricochet",
        "/var/lib/ricochet",
        "/var/lib/ricochet-engine",
        "/usr/bin/ricochet",
    ] {
        if chroot.path(gone).exists() {
            return Err(Failure::new(format!(
                "{gone} is still there after dpkg --purge"
            )));
        }
    }
    let (_, status, _) = chroot.probe(&["dpkg-query", "-W", "-f=${Status}", package::NAME])?;
    if status.contains("installed") && !status.contains("not-installed") {
        return Err(Failure::new(format!("status after purge: {status}")));
    }
    println!("    reinstall, remove, install over config-files and purge: ok");
    Ok(())
}

fn expect_eq(what: &str, got: &str, want: &str) -> Result<(), Failure> {
    if got == want {
        Ok(())
    } else {
        Err(Failure::new(format!(
            "{what}: got `{got}`, expected `{want}`"
        )))
    }
}

/// Builds the cached base root unless it is there with the current recipe. It is built
/// beside its place and renamed when complete, so an interrupted build is never reused.
fn ensure_base(base: &Path) -> Result<(), Failure> {
    let recipe = base.join(RECIPE_FILE);
    if fs::read_to_string(&recipe).is_ok_and(|r| r == BASE_RECIPE) {
        println!("    cached Debian 12 root: {}", base.display());
        return Ok(());
    }
    let mirror = debian_mirror()?;
    let building = base.with_extension("building");
    remove_root(&building)?;
    if base.exists() {
        remove_root(base)?;
    }
    println!("    building a Debian 12 root with debootstrap from {mirror} (once; a few minutes)");
    let started = Instant::now();
    let mut debootstrap = Command::new("debootstrap");
    debootstrap
        .args(["--variant=minbase", "--include=systemd,man-db", SUITE])
        .arg(&building)
        .arg(&mirror);
    run(&mut debootstrap).map_err(|f| {
        f.hint(format!(
            "debootstrap needs the mirror {mirror} (from /etc/apt/sources.list.d) and about \
             400 MB under {}",
            building.display()
        ))
    })?;
    // apt's lists, so that apt-get -f can fetch the package's dependencies.
    let chroot = Chroot { root: &building };
    chroot.run(&["apt-get", "update"])?;
    fs::write(building.join(RECIPE_FILE), BASE_RECIPE)
        .map_err(|e| Failure::new(format!("writing {}: {e}", recipe.display())))?;
    fs::rename(&building, base)
        .map_err(|e| Failure::new(format!("renaming {}: {e}", building.display())))?;
    println!(
        "    debootstrap and apt-get update took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The Debian mirror apt uses on this host (deb822 `.sources` files first, then
/// sources.list), for the suite of the root.
fn debian_mirror() -> Result<String, Failure> {
    let mut texts = Vec::new();
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            if let Ok(text) = fs::read_to_string(&path) {
                texts.push((path.extension().is_some_and(|e| e == "sources"), text));
            }
        }
    }
    if let Ok(text) = fs::read_to_string("/etc/apt/sources.list") {
        texts.push((false, text));
    }
    texts
        .iter()
        .find_map(|(deb822, text)| {
            if *deb822 {
                mirror_from_deb822(text, SUITE)
            } else {
                mirror_from_list(text, SUITE)
            }
        })
        .ok_or_else(|| {
            Failure::new(format!(
                "no `deb` source for {SUITE} in /etc/apt/sources.list.d or /etc/apt/sources.list"
            ))
            .hint("add one, e.g. http://deb.debian.org/debian, as apt-get uses it")
        })
}

fn mirror_from_deb822(text: &str, suite: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(str::trim)
            })
        };
        let is_deb = field("Types")?.split_whitespace().any(|t| t == "deb");
        let has_suite = field("Suites")?.split_whitespace().any(|s| s == suite);
        (is_deb && has_suite)
            .then(|| field("URIs")?.split_whitespace().next().map(str::to_owned))?
    })
}

fn mirror_from_list(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "deb" {
            return None;
        }
        let mut uri = words.next()?;
        if uri.starts_with('[') {
            // Options: `[arch=amd64 signed-by=...]`, possibly over several words.
            while !uri.ends_with(']') {
                uri = words.next()?;
            }
            uri = words.next()?;
        }
        (words.next()? == suite).then(|| uri.to_owned())
    })
}

/// A filesystem mounted inside the root, unmounted on drop (also on failure).
struct Mount(PathBuf);

impl Mount {
    fn proc(root: &Path) -> Result<Self, Failure> {
        let target = root.join("proc");
        run(Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(&target))?;
        Ok(Self(target))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let mut umount = Command::new("umount");
        umount.arg(&self.0);
        if !umount.status().is_ok_and(|s| s.success()) {
            eprintln!("    warning: `{}` failed", display(&umount));
        }
    }
}

/// Removes a root directory, refusing while anything is mounted inside it (removing
/// through a mounted /proc or a bind mount would reach the host).
fn remove_root(root: &Path) -> Result<(), Failure> {
    if !root.exists() {
        return Ok(());
    }
    let canonical =
        fs::canonicalize(root).map_err(|e| Failure::new(format!("{}: {e}", root.display())))?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        // The fifth field is the mount point.
        if let Some(point) = line.split(' ').nth(4) {
            if Path::new(point).starts_with(&canonical) {
                let mut umount = Command::new("umount");
                umount.arg(point);
                run(&mut umount).map_err(|f| {
                    f.hint(format!(
                        "{point} is mounted inside {}: unmount it before the root is removed",
                        root.display()
                    ))
                })?;
            }
        }
    }
    fs::remove_dir_all(root).map_err(|e| Failure::new(format!("removing {}: {e}", root.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_is_read_from_both_source_formats() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm \
                      bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: \
                      http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_from_deb822(deb822, "bookworm").as_deref(),
            Some("http://deb.debian.org/debian")
        );
        assert_eq!(
            mirror_from_deb822(
                "Types: deb-src\nURIs: http://x\nSuites: bookworm\n",
                "bookworm"
            ),
            None
        );
        let list = "# c\ndeb-src http://a bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n";
        assert_eq!(
            mirror_from_list(list, "bookworm").as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(
            mirror_from_list("deb http://m bullseye main\n", "bookworm"),
            None
        );
    }

    #[test]
    fn variables_are_found_in_env_files_and_units() {
        let text =
            "# c\nRICOCHET_CONFIG=/etc/x\n#RICOCHET_FLOWS=1\nEnvironment=RICOCHET_PIN_DIR=/p\n\
                    # the unit sets RICOCHET_INTERFACE (the instance)\nOTHER=1\n";
        assert_eq!(
            variables(text),
            ["RICOCHET_CONFIG", "RICOCHET_FLOWS", "RICOCHET_PIN_DIR"]
        );
    }
}
