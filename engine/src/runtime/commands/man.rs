//! `envctl man [--out DIR]`: man pages generated from the command tree (clap_mangen): `envctl.1` and one
//! `envctl-<command>.1` per command (`envctl-jobs-list.1` for a nested one). `docs/man/` holds them, kept fresh by a
//! test.

use std::path::{Path, PathBuf};

use crate::runtime::{EngineError, EngineRuntime, Outcome, cli};

// Arguments of `man`.
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// `docs/man/` holds exactly the pages the command tree makes. Run with `ENVCTL_BLESS_MAN=1` to rewrite them.
    #[test]
    #[allow(clippy::disallowed_methods)]
    fn checked_in_man_pages_are_fresh() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/man");
        let bless = std::env::var_os("ENVCTL_BLESS_MAN").is_some();
        let pages = super::pages().expect("render");
        let mut stale = Vec::new();
        if bless {
            std::fs::create_dir_all(&dir).expect("mkdir");
        }
        for (file, text) in &pages {
            let path = dir.join(file);
            if std::fs::read(&path).ok().as_ref() != Some(text) {
                if bless {
                    std::fs::write(&path, text).expect("write page");
                } else {
                    stale.push(file.clone());
                }
            }
        }
        let made: BTreeSet<&str> = pages.iter().map(|(f, _)| f.as_str()).collect();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !made.contains(name.as_str()) {
                if bless {
                    std::fs::remove_file(entry.path()).expect("remove page");
                } else {
                    stale.push(format!("{name} (no such command)"));
                }
            }
        }
        assert!(
            stale.is_empty(),
            "stale man pages in docs/man (rerun with ENVCTL_BLESS_MAN=1 and commit): {stale:?}"
        );
    }
}
