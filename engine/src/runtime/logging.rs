//! Diagnostic logging, set up once: `tracing` to stderr at the level `ENVCTL_LOG` names (or `-v`), with the
//! structured fields the engine attaches (`run_id`, `target`, `service`). The host's stderr is its `host.log`.

pub use tracing_subscriber::filter::LevelFilter;

use crate::config::EnvVars;

/// The level for this process: `ENVCTL_LOG` when set and valid, else from `-v` (`default` when none).
pub fn level(env: &EnvVars, verbose: u8, default: LevelFilter) -> LevelFilter {
    if let Some(level) = env.get("ENVCTL_LOG").and_then(|v| v.trim().parse::<LevelFilter>().ok()) {
        return level;
    }
    match verbose {
        0 => default,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// What changes the level of the installed subscriber: a host forked from a command logs at the host's level.
static LEVEL: std::sync::OnceLock<
    tracing_subscriber::reload::Handle<LevelFilter, tracing_subscriber::Registry>,
> = std::sync::OnceLock::new();

/// Logs at `level` from now on: installs the subscriber on the first call, sets the installed one's level on a
/// later one (a host forked from a command logs at the host's level, not the command's).
pub fn init(level: LevelFilter) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    if let Some(handle) = LEVEL.get() {
        let _ = handle.reload(level);
        return;
    }
    let (filter, handle) = tracing_subscriber::reload::Layer::new(level);
    let format =
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).with_ansi(false);
    if tracing_subscriber::registry().with(filter).with(format).try_init().is_ok() {
        let _ = LEVEL.set(handle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envctl_log_wins_over_verbosity_and_bad_values_fall_back() {
        let env = EnvVars::from_pairs([("ENVCTL_LOG", "debug")]);
        assert_eq!(level(&env, 0, LevelFilter::WARN), LevelFilter::DEBUG);
        let bad = EnvVars::from_pairs([("ENVCTL_LOG", "loud")]);
        assert_eq!(level(&bad, 1, LevelFilter::WARN), LevelFilter::INFO);
        assert_eq!(level(&EnvVars::default(), 0, LevelFilter::INFO), LevelFilter::INFO);
    }
}
