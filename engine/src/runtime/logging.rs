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

/// Installs the subscriber (once per process; later calls do nothing).
pub fn init(level: LevelFilter) {
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .try_init();
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
