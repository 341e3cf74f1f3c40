//! The Ricochet demo: the seed's topology with a real load balancer (placeholder).
//!
//! Started by `cargo xtask demo`, which builds the `ricochet` binary and passes its path.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: ricochet-demo --ricochet PATH";

/// Parses `--ricochet PATH` (or `--ricochet=PATH`).
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<PathBuf, String> {
    let mut ricochet = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--ricochet" {
            let path = args.next().ok_or("--ricochet needs a PATH")?;
            ricochet = Some(PathBuf::from(path));
        } else if let Some(path) = arg.strip_prefix("--ricochet=") {
            ricochet = Some(PathBuf::from(path));
        } else if arg == "-h" || arg == "--help" {
            return Err(USAGE.to_owned());
        } else {
            return Err(format!("unexpected argument `{arg}`\n{USAGE}"));
        }
    }
    ricochet.ok_or_else(|| format!("missing --ricochet PATH\n{USAGE}"))
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)) {
        Ok(ricochet) => {
            eprintln!(
                "ricochet-demo: demo not implemented yet (ricochet binary: {})",
                ricochet.display()
            );
            ExitCode::FAILURE
        }
        Err(message) => {
            eprintln!("ricochet-demo: {message}");
            ExitCode::from(2)
        }
    }
}
