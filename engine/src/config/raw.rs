//! The file's shape: raw serde structs (every field optional, spans kept where validation needs a location) and
//! [`ROOT`], the table of known keys used to name unknown ones with a suggestion. The example config exercises
//! every key, and a test loads it, so the two cannot drift apart unnoticed.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// Known keys of a table.
#[derive(Debug)]
pub enum Shape {
    /// A table with these keys.
    Table(&'static [(&'static str, Shape)]),
    /// A table of user-named entries, each of this shape.
    MapOf(&'static Shape),
    /// A value (or a table of free-form keys, such as `env`).
    Leaf,
}

const READY: Shape = Shape::Table(&[
    ("http", Shape::Leaf),
    ("tcp", Shape::Leaf),
    ("exec", Shape::Leaf),
    ("log", Shape::Leaf),
    ("status", Shape::Leaf),
    ("timeout", Shape::Leaf),
]);

const SERVICE: Shape = Shape::Table(&[
    ("command", Shape::Leaf),
    ("cwd", Shape::Leaf),
    ("port", Shape::Leaf),
    ("ports", Shape::Leaf),
    ("ready", READY),
    ("depends_on", Shape::Leaf),
    ("env", Shape::Leaf),
    ("restart", Shape::Leaf),
    ("targets", Shape::Leaf),
    ("enabled", Shape::Leaf),
    ("test", Shape::Leaf),
    ("migrate", Shape::Leaf),
    ("stop_grace", Shape::Leaf),
    ("env_file", Shape::Leaf),
    ("setup", Shape::Leaf),
    ("setup_inputs", Shape::Leaf),
    ("setup_timeout", Shape::Leaf),
    ("test_timeout", Shape::Leaf),
    ("migrate_timeout", Shape::Leaf),
    ("test_database", Shape::Leaf),
]);

const REQUIREMENT: Shape = Shape::Table(&[
    ("adapter", Shape::Leaf),
    ("isolation", Shape::Leaf),
    ("port", Shape::Leaf),
    ("ports", Shape::Leaf),
    ("command", Shape::Leaf),
    ("ready", READY),
    ("env", Shape::Leaf),
    ("targets", Shape::Leaf),
    ("enabled", Shape::Leaf),
    ("seed", Shape::Leaf),
    ("seed_timeout", Shape::Leaf),
]);

const JOB_TYPE: Shape = Shape::Table(&[
    ("command", Shape::Leaf),
    ("max_attempts", Shape::Leaf),
    ("timeout", Shape::Leaf),
    ("priority", Shape::Leaf),
]);

/// Every key `.envctl` may contain.
pub const ROOT: Shape = Shape::Table(&[
    (
        "project",
        Shape::Table(&[
            ("name", Shape::Leaf),
            ("default_mode", Shape::Leaf),
            ("trees_dir", Shape::Leaf),
            ("env_file", Shape::Leaf),
        ]),
    ),
    ("setup", Shape::Table(&[("command", Shape::Leaf), ("inputs", Shape::Leaf), ("timeout", Shape::Leaf)])),
    ("services", Shape::MapOf(&SERVICE)),
    ("requirements", Shape::MapOf(&REQUIREMENT)),
    (
        "jobs",
        Shape::Table(&[
            ("backend", Shape::Leaf),
            ("redis_url", Shape::Leaf),
            ("redis_prefix", Shape::Leaf),
            ("lease_secs", Shape::Leaf),
            ("bind", Shape::Leaf),
            ("port", Shape::Leaf),
            ("types", Shape::MapOf(&JOB_TYPE)),
        ]),
    ),
]);

/// A duration: whole seconds, or text such as `"500ms"`, `"30s"`, `"2m"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawDuration {
    /// Seconds.
    Seconds(i64),
    /// humantime text.
    Text(String),
}

/// `[project]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProject {
    pub name: Option<Spanned<String>>,
    pub default_mode: Option<Spanned<String>>,
    pub trees_dir: Option<Spanned<String>>,
    pub env_file: Option<Vec<Spanned<String>>>,
}

/// `[setup]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSetup {
    pub command: Option<Spanned<String>>,
    pub inputs: Option<Vec<Spanned<String>>>,
    pub timeout: Option<Spanned<RawDuration>>,
}

/// `ready = { … }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReady {
    pub http: Option<Spanned<String>>,
    pub tcp: Option<Spanned<bool>>,
    pub exec: Option<Spanned<String>>,
    pub log: Option<Spanned<String>>,
    pub status: Option<Spanned<i64>>,
    pub timeout: Option<Spanned<RawDuration>>,
}

/// `ports = { smtp = 1025, web = 1080 }`: named base ports.
pub type RawPorts = BTreeMap<Spanned<String>, Spanned<i64>>;

/// `[services.<name>]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub command: Option<Spanned<String>>,
    pub cwd: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub ports: Option<RawPorts>,
    pub ready: Option<Spanned<RawReady>>,
    pub depends_on: Option<Vec<Spanned<String>>>,
    pub env: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub restart: Option<Spanned<String>>,
    pub targets: Option<Spanned<String>>,
    pub enabled: Option<bool>,
    pub test: Option<Spanned<String>>,
    pub migrate: Option<Spanned<String>>,
    pub stop_grace: Option<Spanned<RawDuration>>,
    pub env_file: Option<Vec<Spanned<String>>>,
    pub setup: Option<Spanned<String>>,
    pub setup_inputs: Option<Vec<Spanned<String>>>,
    pub setup_timeout: Option<Spanned<RawDuration>>,
    pub test_timeout: Option<Spanned<RawDuration>>,
    pub migrate_timeout: Option<Spanned<RawDuration>>,
    pub test_database: Option<Spanned<String>>,
}

/// `[requirements.<name>]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequirement {
    pub adapter: Option<Spanned<String>>,
    pub isolation: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub ports: Option<RawPorts>,
    pub command: Option<Spanned<String>>,
    pub ready: Option<Spanned<RawReady>>,
    pub env: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub targets: Option<Spanned<String>>,
    pub enabled: Option<bool>,
    pub seed: Option<Spanned<String>>,
    pub seed_timeout: Option<Spanned<RawDuration>>,
}

/// `[jobs.types.<name>]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJobType {
    pub command: Option<Spanned<String>>,
    pub max_attempts: Option<Spanned<i64>>,
    pub timeout: Option<Spanned<RawDuration>>,
    pub priority: Option<Spanned<String>>,
}

/// `[jobs]` without `types` (each type is read on its own, so one bad type does not hide another).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJobs {
    pub backend: Option<Spanned<String>>,
    pub redis_url: Option<Spanned<String>>,
    pub redis_prefix: Option<Spanned<String>>,
    pub lease_secs: Option<Spanned<i64>>,
    pub bind: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
}

/// The whole file, section by section. Entries keep their name's span; an entry's body is `None` when it was
/// not a table (already reported), so the name still counts as defined.
#[derive(Debug, Default)]
pub struct RawConfig {
    pub project: RawProject,
    pub setup: Option<Spanned<RawSetup>>,
    pub services: Vec<(Spanned<String>, Option<RawService>)>,
    pub requirements: Vec<(Spanned<String>, Option<RawRequirement>)>,
    pub jobs: RawJobs,
    pub job_types: Vec<(Spanned<String>, Option<RawJobType>)>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use toml::de::{DeTable, DeValue};

    use super::{ROOT, Shape};

    /// Dotted keys (entry names replaced by `*`) present in `table`.
    fn present(table: &DeTable<'_>, shape: &Shape, prefix: &str, out: &mut BTreeSet<String>) {
        for (key, value) in table {
            let (path, inner) = match shape {
                Shape::MapOf(entry) => (format!("{prefix}*"), Some(*entry)),
                Shape::Table(known) => {
                    let found = known.iter().find(|(n, _)| *n == key.get_ref().as_ref());
                    (format!("{prefix}{}", key.get_ref()), found.map(|(_, s)| s))
                }
                Shape::Leaf => continue,
            };
            out.insert(path.clone());
            if let (Some(inner), DeValue::Table(t)) = (inner, value.get_ref()) {
                present(t, inner, &format!("{path}."), out);
            }
        }
    }

    fn known(shape: &Shape, prefix: &str, out: &mut BTreeSet<String>) {
        match shape {
            Shape::Leaf => {}
            Shape::MapOf(entry) => {
                out.insert(format!("{prefix}*"));
                known(entry, &format!("{prefix}*."), out);
            }
            Shape::Table(keys) => {
                for (name, inner) in *keys {
                    out.insert(format!("{prefix}{name}"));
                    known(inner, &format!("{prefix}{name}."), out);
                }
            }
        }
    }

    /// The annotated example uses every key the schema knows, so loading it (an integration test does) proves
    /// the schema and the raw structs agree.
    #[test]
    fn example_config_uses_every_key() {
        let text = include_str!("../../../.envctl.example");
        let table = DeTable::parse(text).expect("example parses");
        let mut used = BTreeSet::new();
        present(table.get_ref(), &ROOT, "", &mut used);
        let mut all = BTreeSet::new();
        known(&ROOT, "", &mut all);
        // `ready` has one shape wherever it appears: count its keys once.
        let fold = |set: BTreeSet<String>| -> BTreeSet<String> {
            set.into_iter()
                .map(|k| k.split_once(".ready.").map_or(k.clone(), |(_, rest)| format!("ready.{rest}")))
                .collect()
        };
        let (used, all) = (fold(used), fold(all));
        let missing: Vec<_> = all.difference(&used).collect();
        assert!(missing.is_empty(), ".envctl.example does not use: {missing:?}");
    }
}
