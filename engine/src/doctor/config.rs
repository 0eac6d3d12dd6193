//! The `config` gate: the file parses and validates, and every legacy key was mapped.

use super::{Check, Ctx};
use envctl_contracts::config::ConfigFormat;

/// `.envctl` exists, parses and validates (every problem with its file:line).
pub fn config_file(ctx: &Ctx<'_>) -> Check {
    let settings = match &ctx.settings {
        Ok(settings) => settings,
        Err(error) => {
            let first =
                error.lines().find(|l| !l.trim().is_empty() && !l.contains("problems:")).unwrap_or(error);
            let problems: Vec<&str> = error.lines().filter(|l| !l.starts_with("hint:")).collect();
            return Check::fail(format!("the configuration does not load: {}", first.trim()), hint_of(error))
                .with("problems", problems.join("\n"));
        }
    };
    let Some(file) = &settings.paths.config_file else {
        return Check::fail(
            format!("no .envctl in {}", settings.paths.repo_root.display()),
            "`envctl config init` writes one for this repository",
        )
        .with("repo", settings.paths.repo_root.display());
    };
    let format = match settings.format {
        ConfigFormat::Legacy => "legacy KEY=VALUE",
        _ => "TOML",
    };
    Check::pass(format!(
        "{} loads ({format}; {} service(s), {} requirement(s))",
        file.display(),
        settings.config.services.len(),
        settings.config.requirements.len()
    ))
    .with("path", file.display())
}

/// A legacy file's keys that were not mapped to TOML (each named with its line).
pub fn legacy_keys(ctx: &Ctx<'_>) -> Check {
    let Ok(settings) = &ctx.settings else { return Check::skip("the configuration does not load") };
    if settings.paths.config_file.is_none() {
        return Check::skip("no configuration file");
    }
    if settings.warnings.is_empty() {
        return Check::pass("every key is understood");
    }
    let mut check = Check::warn(
        format!("{} key(s) were not mapped: {}", settings.warnings.len(), settings.warnings[0]),
        "`envctl config migrate` rewrites the file as TOML; remove or rename what it cannot map",
    );
    for (i, warning) in settings.warnings.iter().enumerate() {
        check = check.with(format!("warning {}", i + 1), warning);
    }
    check
}

/// The `hint:` line of an error's text, or a general one.
fn hint_of(error: &str) -> String {
    error
        .lines()
        .find_map(|l| l.strip_prefix("hint: "))
        .unwrap_or("fix the configuration, then check it with `envctl show-config`")
        .to_owned()
}
