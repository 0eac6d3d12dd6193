//! [`SupervisorError`]: why a service could not be launched or probed.

/// A supervised process could not be started or its readiness probe could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The probe needs a port and the service has none.
    #[error(
        "this probe needs the service to have a port\nhint: give the service a `port`, or use an `exec` or `log` probe"
    )]
    ProbeNeedsPort,
    /// A `log` probe's pattern does not compile.
    #[error("bad log pattern `{pattern}`: {detail}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// Why.
        detail: String,
    },
    /// The program is not on the service's `PATH`.
    #[error("`{program}`: command not found (looked in PATH={path})")]
    NotFound {
        /// The program (`argv[0]`).
        program: String,
        /// The `PATH` searched.
        path: String,
    },
    /// The process could not be spawned.
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        /// The program (`argv[0]`).
        program: String,
        /// The system's reason.
        source: std::io::Error,
    },
}
