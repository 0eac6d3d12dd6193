//! What each requirement adapter offers services before anything runs: the binaries it needs (and how to
//! install them), the connection details it exports (`DATABASE_URL`, `REDIS_URL`, …) and the attributes
//! `{name.attr}` references may use. (Starting and probing the servers arrives with the requirements work.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use envctl_contracts::config::{Adapter, Isolation, RequirementConfig};
use envctl_contracts::startup::BinaryCheck;

use crate::targets::Target;

/// The host every requirement listens on.
pub const HOST: &str = "127.0.0.1";
/// The Postgres role services connect as.
pub const PG_USER: &str = "postgres";
/// Its password (local development clusters only; never reachable off the loopback interface).
pub const PG_PASSWORD: &str = "postgres";

/// Connection details of one requirement as one target sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Port.
    pub port: u16,
    /// URL.
    pub url: String,
    /// Database name (postgres) or index (redis), when there is one.
    pub database: Option<String>,
}

/// The database a target uses: `<project>_<target>`, lower-case, `[a-z0-9_]`, at most 63 bytes.
pub fn database_name(project: &str, target: &str) -> String {
    let raw = format!("{project}_{target}").to_ascii_lowercase();
    let cleaned: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let cleaned =
        if cleaned.starts_with(|c: char| c.is_ascii_digit()) { format!("db_{cleaned}") } else { cleaned };
    cleaned.chars().take(63).collect()
}

/// The Redis database index of a target: 0 on its own server; on a shared server 0 for main and 1–15 by slot.
pub fn redis_index(isolation: Isolation, target: &Target) -> u16 {
    if isolation == Isolation::DbIndex && target.slot > 0 { 1 + (target.slot - 1) % 15 } else { 0 }
}

/// How a target reaches a requirement listening on `port`.
pub fn endpoint(req: &RequirementConfig, project: &str, target: &Target, port: u16) -> Endpoint {
    match req.adapter {
        Adapter::Postgres => {
            let db = database_name(project, &target.name);
            Endpoint {
                port,
                url: format!("postgresql://{PG_USER}:{PG_PASSWORD}@{HOST}:{port}/{db}"),
                database: Some(db),
            }
        }
        Adapter::Redis => {
            let index = redis_index(req.isolation, target);
            Endpoint {
                port,
                url: format!("redis://{HOST}:{port}/{index}"),
                database: Some(index.to_string()),
            }
        }
        Adapter::Command => Endpoint { port, url: format!("http://{HOST}:{port}"), database: None },
    }
}

/// `{name.attr}` for a requirement.
pub fn attribute(req: &RequirementConfig, endpoint: &Endpoint, attr: &str) -> Option<String> {
    match (attr, req.adapter) {
        ("url", _) => Some(endpoint.url.clone()),
        ("port", _) => Some(endpoint.port.to_string()),
        ("host", _) => Some(HOST.to_owned()),
        ("user", Adapter::Postgres) => Some(PG_USER.to_owned()),
        ("password", Adapter::Postgres) => Some(PG_PASSWORD.to_owned()),
        ("database" | "db", Adapter::Postgres | Adapter::Redis) => endpoint.database.clone(),
        _ => None,
    }
}

/// The variables a requirement exports to the services that depend on it (before its own `env`).
pub fn exports(req: &RequirementConfig, endpoint: &Endpoint) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    match req.adapter {
        Adapter::Postgres => {
            env.insert("DATABASE_URL".into(), endpoint.url.clone());
            env.insert("DB_HOST".into(), HOST.into());
            env.insert("DB_PORT".into(), endpoint.port.to_string());
            env.insert("DB_USER".into(), PG_USER.into());
            env.insert("DB_PASSWORD".into(), PG_PASSWORD.into());
            env.insert("DB_NAME".into(), endpoint.database.clone().unwrap_or_default());
        }
        Adapter::Redis => {
            env.insert("REDIS_URL".into(), endpoint.url.clone());
            env.insert("REDIS_PORT".into(), endpoint.port.to_string());
        }
        Adapter::Command => {}
    }
    env
}

/// Looks a program up on `path_var`, then in Debian's PostgreSQL directories.
pub fn find_binary(name: &str, path_var: Option<&str>) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        path_var.unwrap_or_default().split(':').filter(|d| !d.is_empty()).map(PathBuf::from).collect();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> =
            entries.filter_map(Result::ok).map(|e| e.path().join("bin")).collect();
        versions.sort();
        dirs.extend(versions.into_iter().rev());
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The binaries an adapter needs, each with where it was found or how to install it.
pub fn binaries(req: &RequirementConfig, path_var: Option<&str>) -> Vec<BinaryCheck> {
    let (names, hint): (&[&str], &str) = match req.adapter {
        Adapter::Postgres => (&["initdb", "pg_ctl", "postgres"], "apt-get install postgresql"),
        Adapter::Redis => (&["redis-server"], "apt-get install redis-server"),
        Adapter::Command => (&[], ""),
    };
    names
        .iter()
        .map(|name| {
            let path = find_binary(name, path_var);
            BinaryCheck {
                name: (*name).to_owned(),
                install_hint: path.is_none().then(|| hint.to_owned()),
                path: path.map(|p| p.display().to_string()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_safe_identifiers() {
        assert_eq!(database_name("My Shop", "feat-1"), "my_shop_feat_1");
        assert_eq!(database_name("1x", "main"), "db_1x_main");
        assert!(database_name(&"p".repeat(80), "main").len() <= 63);
    }
}
