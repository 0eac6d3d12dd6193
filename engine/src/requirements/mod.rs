//! What each requirement adapter offers services before anything runs: the binaries it needs (and how to
//! install them), the connection details it exports (`DATABASE_URL`, `REDIS_URL`, …) and the attributes
//! `{name.attr}` references may use. (Starting and probing the servers arrives with the requirements work.)

mod error;
pub mod job_server;
pub mod pgwire;
pub mod postgres;
pub mod redis;
pub mod secrets;
mod teardown;

pub use error::RequirementError;
pub use teardown::{TeardownNote, drop_target_data, remove_all_data};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use envctl_contracts::config::{Adapter, Isolation, ProbeKind, ReadyProbe, RequirementConfig, RestartPolicy};
use envctl_contracts::ports::PortPlan;
use envctl_contracts::startup::{BinaryCheck, Launch, ServicePlan};
use envctl_contracts::state::ERROR_TAIL_LINES;

use crate::config::{Paths, command_line};

use crate::targets::Target;

/// The host every requirement listens on.
pub const HOST: &str = "127.0.0.1";
/// The Postgres role services connect as.
pub const PG_USER: &str = "postgres";
/// The password a URL shows when the cluster's own could not be kept (its secrets file could not be written).
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
    /// The server's password (redis), when it has one.
    pub password: Option<String>,
}

/// The variable a Postgres server's process carries its role's password in, for its probe (`psql` reads it too).
pub const PG_AUTH_VAR: &str = "PGPASSWORD";

/// The variable a Redis server's process carries its own password in, for its probe (`redis-cli` reads it too).
pub const REDIS_AUTH_VAR: &str = "REDISCLI_AUTH";

/// What a setup program (initdb, a seed command) wrote, as its last [`ERROR_TAIL_LINES`] lines at most, with how
/// many earlier lines were left out: its whole output never ends up in a message or `error_report.json`.
pub fn output_tail(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text.trim().lines().collect();
    let left_out = lines.len().saturating_sub(ERROR_TAIL_LINES);
    let tail = lines[left_out..].join("\n");
    if left_out == 0 { tail } else { format!("({left_out} earlier lines left out)\n{tail}") }
}

/// The database a target uses: `<project>_<target>`, lower-case, `[a-z0-9_]`, at most 63 bytes.
pub fn database_name(project: &str, target: &str) -> String {
    let raw = format!("{project}_{target}").to_ascii_lowercase();
    let cleaned: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let cleaned =
        if cleaned.starts_with(|c: char| c.is_ascii_digit()) { format!("db_{cleaned}") } else { cleaned };
    cleaned.chars().take(63).collect()
}

/// The Redis database index of a target with `slot`: 0 on its own server; on a shared server 0 for main and 1–15
/// by slot.
pub fn redis_index(isolation: Isolation, slot: u16) -> u16 {
    if isolation == Isolation::DbIndex && slot > 0 { 1 + (slot - 1) % 15 } else { 0 }
}

/// How a target reaches a requirement listening on `port` whose server has `password`.
pub fn endpoint(
    req: &RequirementConfig,
    project: &str,
    target: &Target,
    port: u16,
    password: Option<&str>,
) -> Endpoint {
    match req.adapter {
        Adapter::Postgres => {
            let db = database_name(project, &target.name);
            let password = password.unwrap_or(PG_PASSWORD);
            Endpoint {
                port,
                url: format!("postgresql://{PG_USER}:{password}@{HOST}:{port}/{db}"),
                database: Some(db),
                password: Some(password.to_owned()),
            }
        }
        Adapter::Redis => {
            let index = redis_index(req.isolation, target.slot);
            let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
            Endpoint {
                port,
                url: format!("redis://{auth}{HOST}:{port}/{index}"),
                database: Some(index.to_string()),
                password: password.map(str::to_owned),
            }
        }
        Adapter::Command => {
            Endpoint { port, url: format!("http://{HOST}:{port}"), database: None, password: None }
        }
    }
}

/// The password a `scheme://user:password@host…` URL carries, when it has one.
pub fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    userinfo.split_once(':').map(|(_, p)| p.to_owned()).filter(|p| !p.is_empty())
}

/// Whether the servers of this adapter get a generated password.
pub fn has_password(adapter: Adapter) -> bool {
    matches!(adapter, Adapter::Postgres | Adapter::Redis)
}

/// `endpoint` pointing at another database of the same server (a Postgres requirement's throwaway copy).
pub fn with_database(req: &RequirementConfig, endpoint: Endpoint, database: &str) -> Endpoint {
    match req.adapter {
        Adapter::Postgres => Endpoint {
            url: format!(
                "postgresql://{PG_USER}:{}@{HOST}:{}/{database}",
                endpoint.password.as_deref().unwrap_or(PG_PASSWORD),
                endpoint.port
            ),
            database: Some(database.to_owned()),
            port: endpoint.port,
            password: endpoint.password,
        },
        Adapter::Redis | Adapter::Command => endpoint,
    }
}

/// `{name.attr}` for a requirement.
pub fn attribute(req: &RequirementConfig, endpoint: &Endpoint, attr: &str) -> Option<String> {
    match (attr, req.adapter) {
        ("url", _) => Some(endpoint.url.clone()),
        ("port", _) => Some(endpoint.port.to_string()),
        ("host", _) => Some(HOST.to_owned()),
        ("user", Adapter::Postgres) => Some(PG_USER.to_owned()),
        ("password", Adapter::Postgres | Adapter::Redis) => endpoint.password.clone(),
        ("database" | "db", Adapter::Postgres | Adapter::Redis) => endpoint.database.clone(),
        _ => None,
    }
}

/// The variable a service's or requirement's own process gets its named port `name` in: `PORT_<NAME>`.
pub fn port_var(name: &str) -> String {
    format!("PORT_{}", name.to_ascii_uppercase())
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
            env.insert("DB_PASSWORD".into(), endpoint.password.clone().unwrap_or_else(|| PG_PASSWORD.into()));
            env.insert("DB_NAME".into(), endpoint.database.clone().unwrap_or_default());
            // libpq's own variables, so `psql`, `pg_dump` and drivers that read them reach the same database.
            env.insert("PGHOST".into(), HOST.into());
            env.insert("PGPORT".into(), endpoint.port.to_string());
            env.insert("PGUSER".into(), PG_USER.into());
            env.insert("PGDATABASE".into(), endpoint.database.clone().unwrap_or_default());
            if let Some(password) = &endpoint.password {
                env.insert(PG_AUTH_VAR.into(), password.clone());
            }
        }
        Adapter::Redis => {
            env.insert("REDIS_URL".into(), endpoint.url.clone());
            env.insert("REDIS_PORT".into(), endpoint.port.to_string());
            if let Some(password) = &endpoint.password {
                env.insert("REDIS_PASSWORD".into(), password.clone());
            }
        }
        Adapter::Command => {}
    }
    env
}

/// The data directory of a requirement's server owned by target `owner`.
pub fn data_dir(
    paths: &Paths,
    req: &RequirementConfig,
    name: &str,
    owner: &str,
) -> Result<PathBuf, RequirementError> {
    Ok(match req.adapter {
        Adapter::Postgres => postgres::data_root(paths, postgres::run_as()?.as_ref()).join(owner),
        Adapter::Redis => paths.scope_dir.join("data").join("redis").join(owner),
        Adapter::Command => paths.scope_dir.join("data").join(name).join(owner),
    })
}

/// Every directory requirement data of this repository lives in (for `stop-all --remove-data`).
pub fn data_roots(paths: &Paths) -> Vec<PathBuf> {
    let mut roots = vec![paths.scope_dir.join("data")];
    if let Ok(Some(user)) = postgres::run_as() {
        roots.push(postgres::data_root(paths, Some(&user)));
    }
    roots
}

/// The process that runs a requirement's server.
#[derive(Debug)]
pub struct ProcessInput<'a> {
    /// Requirement name.
    pub name: &'a str,
    /// Its configuration.
    pub req: &'a RequirementConfig,
    /// Where it keeps data.
    pub data_dir: &'a Path,
    /// Its port.
    pub port: PortPlan,
    /// Its named ports, by name.
    pub ports: &'a BTreeMap<String, PortPlan>,
    /// The binaries it needs (found or not).
    pub binaries: &'a [BinaryCheck],
    /// How the owning target reaches it.
    pub url: &'a str,
    /// For `command`: the command line and environment with placeholders filled in, and the directory to run in.
    pub command: Option<(String, BTreeMap<String, String>, PathBuf)>,
    /// The server's password, when its adapter has one.
    pub password: Option<&'a str>,
}

/// The supervised process of a requirement.
pub fn process(input: &ProcessInput<'_>) -> ServicePlan {
    let binary = |name: &str| {
        input
            .binaries
            .iter()
            .find(|b| b.name == name)
            .and_then(|b| b.path.clone())
            .unwrap_or_else(|| name.to_owned())
    };
    let port = input.port.assigned;
    let ((launch, argv), cwd, env, ready, stop_signal, user) = match input.req.adapter {
        Adapter::Postgres => {
            let postgres = PathBuf::from(binary("postgres"));
            let bin_dir = postgres.parent().map(Path::to_path_buf).unwrap_or_default();
            let ready = ReadyProbe {
                probe: ProbeKind::Postgres { user: PG_USER.into(), database: "postgres".into() },
                timeout_ms: 60_000,
            };
            let user = postgres::run_as().ok().flatten().map(|u| u.name);
            let env = input.password.map(|p| (PG_AUTH_VAR.to_owned(), p.to_owned())).into_iter().collect();
            (
                (Launch::Direct, postgres::argv(&bin_dir, input.data_dir, port)),
                input.data_dir.to_path_buf(),
                env,
                Some(ready),
                "INT",
                user,
            )
        }
        Adapter::Redis => {
            let ready = ReadyProbe { probe: ProbeKind::Redis, timeout_ms: 30_000 };
            let argv = redis::argv(Path::new(&binary("redis-server")), input.data_dir, port);
            // The password stays off argv (which every local user can read): it is in the server's config file,
            // written when its data directory is prepared, and in its environment for its probe.
            let env = input.password.map(|p| (REDIS_AUTH_VAR.to_owned(), p.to_owned())).into_iter().collect();
            ((Launch::Direct, argv), input.data_dir.to_path_buf(), env, Some(ready), "TERM", None)
        }
        Adapter::Command => {
            let (command, env, cwd) = input.command.clone().unwrap_or_default();
            let mut env = env;
            env.insert("PORT".into(), port.to_string());
            for (name, plan) in input.ports {
                env.insert(port_var(name), plan.assigned.to_string());
            }
            (command_line::launch_of(&command), cwd, env, input.req.ready.clone(), "TERM", None)
        }
    };
    ServicePlan {
        name: input.name.to_owned(),
        layer: 0,
        cwd: cwd.display().to_string(),
        argv,
        launch,
        env,
        port: Some(input.port),
        ports: input.ports.clone(),
        url: Some(input.url.to_owned()),
        ready,
        depends_on: Vec::new(),
        restart: RestartPolicy::OnFailure,
        stop_grace_secs: 10,
        stop_signal: stop_signal.to_owned(),
        user,
        env_sources: BTreeMap::new(),
    }
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
    fn a_setup_programs_output_keeps_its_last_lines_only() {
        let many: Vec<String> = (1..=120).map(|i| format!("line {i}")).collect();
        let tail = output_tail(many.join("\n").as_bytes());
        assert!(tail.starts_with("(70 earlier lines left out)\nline 71\n"), "{tail}");
        assert!(tail.ends_with("line 120") && tail.lines().count() == ERROR_TAIL_LINES + 1, "{tail}");
        assert_eq!(output_tail(b"  one\ntwo\n"), "one\ntwo");
    }

    #[test]
    fn a_url_gives_its_password_only_when_it_has_one() {
        assert_eq!(url_password("postgresql://postgres:pw@127.0.0.1:5432/db").as_deref(), Some("pw"));
        assert_eq!(url_password("redis://:pw@127.0.0.1:6379/0").as_deref(), Some("pw"));
        assert_eq!(url_password("postgresql://postgres@127.0.0.1:5432/db"), None);
        assert_eq!(url_password("postgresql://127.0.0.1:5432/db"), None);
    }

    #[test]
    fn database_names_are_safe_identifiers() {
        assert_eq!(database_name("My Shop", "feat-1"), "my_shop_feat_1");
        assert_eq!(database_name("1x", "main"), "db_1x_main");
        assert!(database_name(&"p".repeat(80), "main").len() <= 63);
    }
}
