//! [`RequirementError`]: why a requirement's server, data or database could not be made ready.

use std::path::PathBuf;

/// A requirement could not be prepared, reached or changed. Each names the server, port, path or database.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequirementError {
    /// A binary it needs is not installed.
    #[error("{binary} is not installed\nhint: install it with `apt-get install {package}`")]
    Missing {
        /// The binary.
        binary: String,
        /// The Debian package that has it.
        package: String,
    },
    /// envctl runs as root and there is nobody to run Postgres as.
    #[error(
        "envctl runs as root and Postgres refuses to; no `postgres` or `nobody` user exists to run it as\nhint: create one (`useradd --system postgres`) or run envctl as an ordinary user"
    )]
    NoUnprivilegedUser,
    /// A file operation on its data failed.
    #[error("cannot {what} {}: {detail}", path.display())]
    Io {
        /// What was being done (`create`, `copy the template cluster to`, …).
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The system's reason.
        detail: String,
    },
    /// A setup program (`initdb`) failed.
    #[error("{} failed for {}: {detail}", program.display(), dir.display())]
    Setup {
        /// The program.
        program: PathBuf,
        /// The directory it worked on.
        dir: PathBuf,
        /// Its output.
        detail: String,
    },
    /// The server did not answer or refused a command.
    #[error("{server} on 127.0.0.1:{port}: {detail}")]
    Server {
        /// `postgres` or `redis`.
        server: &'static str,
        /// Its port.
        port: u16,
        /// What it said.
        detail: String,
    },
    /// A seed failed.
    #[error("seed `{seed}` of database {database}: {detail}")]
    Seed {
        /// The seed file or command.
        seed: String,
        /// The database.
        database: String,
        /// What went wrong.
        detail: String,
    },
    /// A seed ran past its `seed_timeout` and was stopped.
    #[error(
        "seed of {database} timed out after {secs} s and was stopped (raise `requirements.{requirement}.seed_timeout` if it needs longer)"
    )]
    SeedTimedOut {
        /// The database.
        database: String,
        /// The requirement whose seed it is.
        requirement: String,
        /// The limit.
        secs: u64,
    },
    /// Copying a database with `pg_dump`/`pg_restore` failed.
    #[error("cannot copy database {from} into {to}: {step} failed: {detail}")]
    Copy {
        /// The source database.
        from: String,
        /// The new database (dropped again).
        to: String,
        /// `pg_dump` or `pg_restore`.
        step: &'static str,
        /// The last lines it wrote.
        detail: String,
    },
}

impl RequirementError {
    /// An I/O failure on `path`.
    pub fn io(what: &'static str, path: &std::path::Path, source: &std::io::Error) -> Self {
        Self::Io { what, path: path.to_path_buf(), detail: source.to_string() }
    }

    /// A Postgres server's answer on `port`.
    pub fn postgres(port: u16, detail: impl std::fmt::Display) -> Self {
        Self::Server { server: "postgres", port, detail: detail.to_string() }
    }

    /// A Redis server's answer on `port`.
    pub fn redis(port: u16, detail: impl std::fmt::Display) -> Self {
        Self::Server { server: "redis", port, detail: detail.to_string() }
    }
}
