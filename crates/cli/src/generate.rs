//! `ricochet generate`: man pages and shell completions from the command line's own
//! definitions, so that they never disagree with `--help` (the package builds them with
//! this command; ripgrep's `--generate` does the same).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use clap_complete::Shell;

#[derive(Subcommand, Debug)]
pub enum GenerateCommand {
    /// Write a man page per command (ricochet.1, ricochet-engine.1, ...) into a directory.
    Man {
        /// The directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the completion script of a shell on standard output.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
}

/// The shells clap_complete supports, as a value of our own (its `Shell` parses
/// case-insensitively and names no values in `--help`).
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

impl From<CompletionShell> for Shell {
    fn from(shell: CompletionShell) -> Self {
        match shell {
            CompletionShell::Bash => Shell::Bash,
            CompletionShell::Zsh => Shell::Zsh,
            CompletionShell::Fish => Shell::Fish,
            CompletionShell::Elvish => Shell::Elvish,
            CompletionShell::Powershell => Shell::PowerShell,
        }
    }
}

/// `command` is the whole CLI (`Cli::command()`), `ricochet` at its root.
pub fn run(generate: GenerateCommand, mut command: clap::Command) -> anyhow::Result<ExitCode> {
    match generate {
        GenerateCommand::Man { out } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            clap_mangen::generate_to(command, &out)
                .with_context(|| format!("writing man pages into {}", out.display()))?;
            // Say what was written: a page missing from a package must be visible here.
            let mut pages: Vec<String> = std::fs::read_dir(&out)?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name.ends_with(".1"))
                .collect();
            pages.sort();
            println!(
                "{} man pages in {}: {}",
                pages.len(),
                out.display(),
                pages.join(" ")
            );
        }
        GenerateCommand::Completion { shell } => {
            let name = command.get_name().to_owned();
            clap_complete::generate(
                Shell::from(shell),
                &mut command,
                name,
                &mut std::io::stdout(),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
