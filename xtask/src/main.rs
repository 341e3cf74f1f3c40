//! Ricochet's developer tasks, run as `cargo xtask <command>`.
//!
//! This crate depends on the standard library only, so that it compiles on a bare machine with
//! nothing but stable Rust and can then install the eBPF toolchain that the rest of the workspace
//! needs (`cargo xtask setup`).

mod cmd;
mod install_test;
mod package;
mod setup;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use cmd::{cargo, is_root, run, Failure};

const USAGE: &str = "\
Usage: cargo xtask <command> [-- <arguments>]

Commands:
  setup   Install everything the project needs (Debian packages, rust-src on the nightly,
          bpf-linker 0.13.0 built against LLVM 22). Idempotent: an installed machine takes seconds.
  test    setup, then cargo fmt --check, cargo clippy -D warnings (on the host, and on the BPF
          target for the eBPF crate) and cargo test --workspace, privileged tests included (needs root). Arguments after `--` go to `cargo test`, e.g.
          `cargo xtask test -- -p ricochet-testbed -- --nocapture`.
  demo    setup, build the `ricochet` binary, then run the demo in network namespaces (needs
          root). Arguments after `--` go to the demo.
  bench   setup, build in release mode, then run every benchmark and write a Markdown report with
          PNG plots and raw data to target/bench/<date-time>/ (needs root; about 20 minutes).
          Arguments after `--` go to ricochet-bench, e.g. `cargo xtask bench -- --quick` or
          `cargo xtask bench -- --out /tmp/report per-packet maglev`.
          `cargo xtask bench --katran-object PATH [-- ...]` also measures Katran's XDP balancer
          (a balancer.bpf.o you built from Katran's sources) beside Ricochet, per packet.
  package setup, then build the Debian package target/package/ricochet_<version>_<arch>.deb
          (release binary with its eBPF objects, systemd units, /etc/ricochet conffiles, man
          pages and completions generated from the CLI) and run lintian on it.
  package-test
          package, then install it in a clean Debian 12 root (debootstrap, cached under
          target/package-test) and check it (needs root). Part of `test` when `test` is given
          no arguments.
  help    Print this message.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "setup" => no_arguments("setup", rest).and_then(|()| setup::setup()),
        "test" => passthrough("test", rest).and_then(test),
        "demo" => passthrough("demo", rest).and_then(demo),
        "package" => no_arguments("package", rest).and_then(|()| package().map(drop)),
        "package-test" => no_arguments("package-test", rest).and_then(|()| package_test()),
        "bench" => {
            bench_arguments(rest).and_then(|(katran, extra)| bench(katran.as_deref(), extra))
        }
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(Failure::new(format!(
            "unknown command `{other}`\n\n{USAGE}"
        ))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("\nerror: {failure}");
            ExitCode::FAILURE
        }
    }
}

/// Rejects arguments for a command that takes none.
fn no_arguments(command: &str, rest: &[String]) -> Result<(), Failure> {
    match rest.first() {
        None => Ok(()),
        Some(arg) => Err(Failure::new(format!(
            "`cargo xtask {command}` takes no arguments (got `{arg}`)"
        ))),
    }
}

/// Returns the arguments after `--`, rejecting anything before it.
fn passthrough<'a>(command: &str, rest: &'a [String]) -> Result<&'a [String], Failure> {
    match rest.split_first() {
        None => Ok(&[]),
        Some((first, extra)) if first == "--" => Ok(extra),
        Some((first, _)) => Err(Failure::new(format!(
            "unexpected argument `{first}` for `cargo xtask {command}`: put its arguments \
             after `--`, e.g. `cargo xtask {command} -- ...`"
        ))),
    }
}

/// `cargo xtask bench`'s own option, `--katran-object PATH` (or `--katran-object=PATH`),
/// then the arguments after `--`. The object must exist: checked before the long build.
fn bench_arguments(rest: &[String]) -> Result<(Option<String>, &[String]), Failure> {
    let (katran, rest) = match rest.split_first() {
        Some((first, tail)) if first == "--katran-object" => match tail.split_first() {
            Some((path, tail)) if path != "--" => (Some(path.clone()), tail),
            _ => {
                return Err(Failure::new(
                    "`--katran-object` needs a path: `cargo xtask bench --katran-object \
                     PATH [-- ...]`",
                ))
            }
        },
        Some((first, tail)) if first.starts_with("--katran-object=") => {
            (Some(first["--katran-object=".len()..].to_owned()), tail)
        }
        _ => (None, rest),
    };
    let extra = passthrough("bench", rest)?;
    if let Some(path) = &katran {
        if gives_option(extra, "--katran-object", None) {
            return Err(Failure::new(
                "`--katran-object` given twice (before and after `--`): give it once",
            ));
        }
        if !Path::new(path).is_file() {
            return Err(Failure::new(format!(
                "--katran-object {path}: no such file (build Katran's balancer.bpf.o first; \
                 docs/benchmarks/ gives the command)"
            )));
        }
    }
    Ok((katran, extra))
}

/// The workspace root: this crate lives in `<root>/xtask`.
fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in a subdirectory of the workspace")
}

/// Prints a step header, runs the step and prints its elapsed time.
fn step(
    index: usize,
    total: usize,
    title: &str,
    body: impl FnOnce() -> Result<(), Failure>,
) -> Result<(), Failure> {
    println!("\n==> [{index}/{total}] {title}");
    let start = Instant::now();
    let result = body();
    let elapsed = start.elapsed().as_secs_f64();
    match &result {
        Ok(()) => println!("==> [{index}/{total}] {title}: ok ({elapsed:.1} s)"),
        Err(_) => println!("==> [{index}/{total}] {title}: FAILED ({elapsed:.1} s)"),
    }
    result
}

fn require_root(what: &str) -> Result<(), Failure> {
    if is_root() {
        Ok(())
    } else {
        Err(Failure::new(format!(
            "{what} needs root: it creates network namespaces, veth pairs and XDP programs.\n\
             Run it as root (CI does), e.g. `sudo -E cargo xtask ...` or from a root shell."
        )))
    }
}

fn test(extra: &[String]) -> Result<(), Failure> {
    require_root("`cargo xtask test` (the privileged end-to-end tests)")?;
    let root = workspace_root();
    let start = Instant::now();
    const TOTAL: usize = 6;

    step(1, TOTAL, "setup", setup::setup)?;
    step(2, TOTAL, "cargo fmt --all --check", || {
        run(cargo(root).args(["fmt", "--all", "--check"]))
            .map_err(|f| f.hint("run `cargo fmt --all` to format the code, then look at the diff"))
    })?;
    step(
        3,
        TOTAL,
        "cargo clippy --workspace --all-targets -- -D warnings",
        || {
            run(cargo(root).args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        },
    )?;
    let bpf_target_dir = target_dir(root)?.join("bpf-clippy");
    let mut bpf_clippy = bpf_clippy_command(root, &bpf_target_dir);
    step(
        4,
        TOTAL,
        "cargo +nightly clippy -p ricochet-ebpf --target bpfel-unknown-none -- -D warnings",
        || run(&mut bpf_clippy),
    )?;

    // `--workspace` conflicts with an explicit package selection passed through.
    let selects_package = extra
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--package" || a.starts_with("--package=") || a.starts_with("-p"));
    let mut args = vec!["test".to_owned()];
    if !selects_package {
        args.push("--workspace".to_owned());
    }
    args.extend(extra.iter().cloned());
    step(5, TOTAL, &format!("cargo {}", args.join(" ")), || {
        run(cargo(root).args(&args))
    })?;
    if extra.is_empty() {
        step(
            6,
            TOTAL,
            "package: build the .deb, lintian, install it in a Debian 12 root",
            || package_checks(root),
        )?;
    } else {
        // Said, not silent: a narrowed run leaves the package out.
        println!(
            "\n==> [6/{TOTAL}] package: skipped because arguments were given; run \
             `cargo xtask package-test`"
        );
    }

    println!(
        "\nAll checks passed in {:.1} s.",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Clippy on the eBPF crate as the kernel build compiles it (crates/bpf/build.rs through
/// aya-build): the nightly, `-Z build-std=core`, target bpfel-unknown-none, release, with
/// the `bpf_target_arch` cfg aya-build sets. The host clippy sees the library but not the
/// `cfg(target_arch = "bpf")` entry points; this sees both. Its own target directory keeps
/// the host build's cache intact.
fn bpf_clippy_command(root: &Path, target_dir: &Path) -> std::process::Command {
    let mut command = cargo(root);
    command
        .arg(format!("+{}", setup::NIGHTLY))
        .args([
            "clippy",
            "--package",
            "ricochet-ebpf",
            "-Z",
            "build-std=core",
            "--lib",
            "--bins",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "--target-dir",
        ])
        .arg(target_dir)
        .args(["--", "-D", "warnings"])
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
        );
    // As aya-build does: a RUSTC inherited from the outer cargo would pin the stable compiler.
    for key in ["RUSTC", "RUSTC_WORKSPACE_WRAPPER"] {
        command.env_remove(key);
    }
    command
}

/// `cargo xtask package`: the `.deb`, checked by lintian; returns its path.
fn package() -> Result<PathBuf, Failure> {
    let root = workspace_root();
    setup::setup()?;
    let deb = package::build(root, &target_dir(root)?)?;
    package::lintian(&deb)?;
    println!("\nPackage: {}", deb.display());
    Ok(deb)
}

fn package_test() -> Result<(), Failure> {
    require_root("`cargo xtask package-test` (debootstrap, chroot)")?;
    setup::setup()?;
    package_checks(workspace_root())
}

/// Builds the package, runs lintian, and installs it in a clean Debian 12 root.
fn package_checks(root: &Path) -> Result<(), Failure> {
    let target = target_dir(root)?;
    let start = Instant::now();
    let deb = package::build(root, &target)?;
    println!(
        "    package built in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let linted = Instant::now();
    package::lintian(&deb)?;
    println!("    lintian took {:.1} s", linted.elapsed().as_secs_f64());
    install_test::install_test(&target, &deb)
}

fn demo(extra: &[String]) -> Result<(), Failure> {
    require_root("`cargo xtask demo`")?;
    let root = workspace_root();
    const TOTAL: usize = 3;

    step(1, TOTAL, "setup", setup::setup)?;
    step(2, TOTAL, "cargo build -p ricochet", || {
        run(cargo(root).args(["build", "-p", "ricochet"])).map_err(|f| {
            f.hint("the demo needs the `ricochet` command-line binary (crates/cli, package `ricochet`)")
        })
    })?;
    let binary = target_dir(root)?.join("debug").join("ricochet");
    if !binary.is_file() {
        return Err(Failure::new(format!(
            "`cargo build -p ricochet` succeeded but {} does not exist",
            binary.display()
        )));
    }
    step(3, TOTAL, "ricochet-demo", || {
        let mut command = cargo(root);
        command
            .args([
                "run",
                "-p",
                "ricochet-testbed",
                "--bin",
                "ricochet-demo",
                "--",
            ])
            .arg("--ricochet")
            .arg(&binary)
            .args(extra);
        run(&mut command)
    })
}

fn bench(katran_object: Option<&str>, extra: &[String]) -> Result<(), Failure> {
    require_root("`cargo xtask bench`")?;
    let root = workspace_root();
    let start = Instant::now();
    const TOTAL: usize = 3;

    step(1, TOTAL, "setup", setup::setup)?;
    step(
        2,
        TOTAL,
        "cargo build --release -p ricochet -p ricochet-bench",
        || {
            run(cargo(root).args([
                "build",
                "--release",
                "-p",
                "ricochet",
                "-p",
                "ricochet-bench",
            ]))
        },
    )?;
    let target = target_dir(root)?;
    let release = target.join("release");
    let mut defaults = Vec::new();
    if !gives_option(extra, "--out", Some('o')) {
        let out = target.join("bench").join(timestamp()?);
        defaults.extend(["--out".to_owned(), out.display().to_string()]);
    }
    if !gives_option(extra, "--ricochet", None) {
        defaults.extend([
            "--ricochet".to_owned(),
            release.join("ricochet").display().to_string(),
        ]);
    }
    if let Some(path) = katran_object {
        // Absolute, so that it means the same whatever the benchmark's working directory.
        let path = std::fs::canonicalize(path)
            .map_err(|e| Failure::new(format!("--katran-object {path}: {e}")))?;
        defaults.extend(["--katran-object".to_owned(), path.display().to_string()]);
    }
    step(3, TOTAL, "ricochet-bench", || {
        run(std::process::Command::new(release.join("ricochet-bench"))
            .args(&defaults)
            .args(extra))
        .map_err(|f| f.hint("the report lists what was measured and why a section failed"))
    })?;
    println!(
        "\nBenchmarks finished in {:.0} s.",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Whether `args` give option `long` (`--out X`, `--out=X`) or its `short` form (`-o X`,
/// `-oX`, `-o=X`), so that a default is not added beside it (clap rejects the same option
/// twice).
fn gives_option(args: &[String], long: &str, short: Option<char>) -> bool {
    args.iter().take_while(|a| *a != "--").any(|a| {
        a == long
            || a.strip_prefix(long)
                .is_some_and(|rest| rest.starts_with('='))
            || short.is_some_and(|c| {
                a.strip_prefix('-')
                    .and_then(|rest| rest.strip_prefix(c))
                    .is_some()
            })
    })
}

/// `YYYY-MM-DD-HHMMSS` in UTC, for the report's directory name.
fn timestamp() -> Result<String, Failure> {
    let out = cmd::output(std::process::Command::new("date").args(["-u", "+%Y-%m-%d-%H%M%S"]))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Cargo's target directory for this workspace, as `cargo metadata` reports it (it honours
/// `CARGO_TARGET_DIR` and `build.target-dir`).
fn target_dir(root: &Path) -> Result<PathBuf, Failure> {
    let output = cmd::output(cargo(root).args(["metadata", "--format-version", "1", "--no-deps"]))?;
    let json = String::from_utf8_lossy(&output.stdout);
    cmd::json_string_field(&json, "target_directory")
        .map(PathBuf::from)
        .ok_or_else(|| Failure::new("`cargo metadata` printed no target_directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_clippy_checks_the_kernel_build_of_the_ebpf_crate() {
        let c = bpf_clippy_command(Path::new("/r"), Path::new("/t/bpf-clippy"));
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[0], "+nightly", "{args:?}");
        let joined = args.join(" ");
        for needle in [
            "clippy --package ricochet-ebpf -Z build-std=core --lib --bins --release",
            "--target bpfel-unknown-none --target-dir /t/bpf-clippy -- -D warnings",
        ] {
            assert!(joined.contains(needle), "{joined}");
        }
        let envs: Vec<_> = c.get_envs().collect();
        assert!(envs.iter().any(|(k, v)| *k == "RUSTC" && v.is_none()));
        assert!(envs.iter().any(|(k, v)| *k == "CARGO_ENCODED_RUSTFLAGS"
            && v.is_some_and(|v| v.to_string_lossy().starts_with("--cfg=bpf_target_arch=\""))));
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn bench_options_given_by_the_user_are_recognised() {
        for given in [
            &["--out", "/r"][..],
            &["--out=/r"],
            &["-o", "/r"],
            &["-o/r"],
            &["-o=/r"],
            &["--quick", "maglev", "--out", "/r"],
        ] {
            assert!(
                gives_option(&strings(given), "--out", Some('o')),
                "{given:?}"
            );
        }
        for not_given in [
            &[][..],
            &["--quick", "maglev"],
            &["--outdir"],
            &["--", "--out"],
            &["--ricochet", "/bin/ricochet"],
        ] {
            assert!(
                !gives_option(&strings(not_given), "--out", Some('o')),
                "{not_given:?}"
            );
        }
        assert!(gives_option(
            &strings(&["--ricochet=/x"]),
            "--ricochet",
            None
        ));
        assert!(!gives_option(&strings(&["-r", "/x"]), "--ricochet", None));
    }

    #[test]
    fn bench_takes_a_katran_object_before_the_separator() {
        let object = std::env::temp_dir().join(format!("xtask-katran-{}.o", std::process::id()));
        std::fs::write(&object, b"").unwrap();
        let path = object.display().to_string();
        for given in [
            strings(&["--katran-object", &path, "--", "--quick", "per-packet"]),
            strings(&[
                &format!("--katran-object={path}"),
                "--",
                "--quick",
                "per-packet",
            ]),
        ] {
            let (katran, extra) = bench_arguments(&given).unwrap();
            assert_eq!(katran.as_deref(), Some(path.as_str()));
            assert_eq!(extra, strings(&["--quick", "per-packet"]));
        }
        let only_extra = strings(&["--", "--quick"]);
        let (katran, extra) = bench_arguments(&only_extra).unwrap();
        assert!(katran.is_none());
        assert_eq!(extra, strings(&["--quick"]));
        let error = bench_arguments(&strings(&["--katran-object", "/nonexistent/k.o"]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--katran-object /nonexistent/k.o: no such file"),
            "{error}"
        );
        let error = bench_arguments(&strings(&["--katran-object", "--", "--quick"]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("needs a path"), "{error}");
        let error = bench_arguments(&strings(&[
            "--katran-object",
            &path,
            "--",
            "--katran-object",
            &path,
        ]))
        .unwrap_err()
        .to_string();
        assert!(error.contains("given twice"), "{error}");
        std::fs::remove_file(&object).unwrap();
    }

    #[test]
    fn passthrough_takes_what_follows_the_separator() {
        let rest = strings(&["--", "--quick", "maglev"]);
        assert_eq!(passthrough("bench", &rest).unwrap(), &rest[1..]);
        assert!(passthrough("bench", &[]).unwrap().is_empty());
        let error = passthrough("bench", &strings(&["--quick"]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("unexpected argument `--quick`"), "{error}");
    }
}
