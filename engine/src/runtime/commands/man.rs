//! `envctl man [--out DIR]`: man pages generated from the command tree (clap_mangen): `envctl.1` and one
//! `envctl-<command>.1` per command (`envctl-jobs-list.1` for a nested one). `docs/man/` holds them, kept fresh by a
//! test.

use std::path::{Path, PathBuf};

use crate::runtime::{EngineError, EngineRuntime, Outcome, cli};

/// Arguments of `man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Directory to write the pages into (created when missing).
    #[arg(long, value_name = "DIR", default_value = "man")]
    pub out: PathBuf,
}

/// Every page as `(file name, roff text)`.
pub fn pages() -> Result<Vec<(String, Vec<u8>)>, std::io::Error> {
    let mut root = cli::command_tree().disable_help_subcommand(true);
    root.build();
    let mut out = Vec::new();
    collect(&root, &mut out)?;
    Ok(out)
}

fn collect(command: &clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), std::io::Error> {
    let page = clap_mangen::Man::new(command.clone());
    let mut buf = Vec::new();
    page.render(&mut buf)?;
    out.push((page.get_filename(), buf));
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, out)?;
    }
    Ok(())
}

/// Writes the pages.
pub fn exec(rt: &EngineRuntime, args: &ManArgs) -> Result<Outcome, EngineError> {
    let dir = if args.out.is_absolute() { args.out.clone() } else { rt.cwd().join(&args.out) };
    let fail = |path: &Path, e: std::io::Error| EngineError::Failed(format!("{}: {e}", path.display()));
    std::fs::create_dir_all(&dir).map_err(|e| fail(&dir, e))?;
    let pages = pages().map_err(|e| fail(&dir, e))?;
    for (file, text) in &pages {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|e| fail(&path, e))?;
    }
    rt.printer().note(&format!("wrote {} man pages to {}", pages.len(), dir.display()));
    Ok(Outcome::Success)
}
