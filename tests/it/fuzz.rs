//! What must keep holding under garbage: ~2,000 mutated configurations (TOML, Python-era files and `--set`
//! values) are loaded and, when they load, planned — no panic, and every refusal names a location or key.
//!
//! The mutations are seeded, so a failure names the seed and case that reproduce it.

use std::path::Path;

use envctl_engine::config::{EnvVars, LoadOptions, Settings};
use envctl_engine::plan::{explain, plan_ports};
use envctl_engine::targets::Targets;

const TOML_SEED: &str = include_str!("../../.envctl.example");

const LEGACY_SEED: &str = "ENVCTL_DEFAULT_MODE=trees\nexport ENVCTL_BACKEND_START_CMD=\"python3 -m http.server {port}\"\nBACKEND_DIR=api\nBACKEND_PORT_BASE=8100\nMAIN_POSTGRES_ENABLE=true\nDB_PORT=5544\nTREES_DIR_NAME='worktrees'\nENVCTL_ADDITIONAL_SERVICES=worker\nENVCTL_SERVICE_WORKER_START_CMD=python3 worker.py\nENVCTL_SERVICE_WORKER_DEPENDS_ON=backend\nPORT_SPACING=20\n";

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Fragments that stress the reader: other types, bad ports, placeholders, quotes, control and non-ASCII text.
const FRAGMENTS: &[&str] = &[
    "0",
    "-1",
    "65536",
    "99999999999999999999",
    "true",
    "\"\"",
    "[]",
    "{}",
    "[[x]]",
    "\"{nope.url}\"",
    "\"{port\"",
    "\"}{\"",
    "'",
    "\"",
    "\\",
    "=",
    "==",
    "[services.]",
    "[services.a.b.c]",
    "\n[services.x]\n",
    "inf",
    "nan",
    "1e309",
    "\u{0}",
    "\u{7f}",
    "é",
    "🦀",
    "\"\u{202e}\"",
    "{ http = 3 }",
    "{ tcp = \"yes\" }",
    "\"5 parsecs\"",
    "[\"..\", \"/etc\"]",
    "\"../../etc\"",
    "\"$(touch /tmp/x)\"",
    "\"a;b\"",
    "#",
    "\t",
    "\r\n",
    "[jobs.types.t]",
    "depends_on = [\"a\", \"a\"]",
    "env = { \"1A\" = \"x\" }",
    "env_file = [\"\"]",
    "setup_inputs = [\"x\"]",
];

const SET_KEYS: &[&str] = &[
    "services.backend.port",
    "services.backend.command",
    "services.backend.ready",
    "services.new.command",
    "requirements.postgres.isolation",
    "requirements.redis.port",
    "project.trees_dir",
    "project.default_mode",
    "jobs.backend",
    "jobs.lease_secs",
    "setup.command",
    "services.backend.env_file",
    "nope",
    "services",
    "services.backend.ready.http",
];

fn mutate(rng: &mut Rng, seed: &str) -> String {
    let mut text: Vec<char> = seed.chars().collect();
    for _ in 0..=rng.below(4) {
        let at = rng.below(text.len() + 1).min(text.len());
        match rng.below(6) {
            0 if !text.is_empty() => {
                let end = (at + 1 + rng.below(40)).min(text.len());
                text.drain(at.min(end)..end);
            }
            1 => text.splice(at..at, rng.pick(FRAGMENTS).chars()).for_each(drop),
            2 => {
                // A line duplicated elsewhere (duplicate keys, tables).
                let lines: Vec<String> = text.iter().collect::<String>().lines().map(str::to_owned).collect();
                if !lines.is_empty() {
                    let line = lines[rng.below(lines.len())].clone();
                    text.splice(at..at, format!("\n{line}\n").chars()).for_each(drop);
                }
            }
            3 => text.truncate(at),
            4 => {
                // A value replaced after some `=`.
                if let Some(eq) = text.iter().skip(at).position(|c| *c == '=') {
                    let start = at + eq + 1;
                    let end =
                        text.iter().skip(start).position(|c| *c == '\n').map_or(text.len(), |n| start + n);
                    text.splice(start..end, format!(" {}", rng.pick(FRAGMENTS)).chars()).for_each(drop);
                }
            }
            _ => {
                let byte = char::from(u8::try_from(rng.below(128)).unwrap_or(b'x'));
                text.insert(at, byte);
            }
        }
    }
    text.into_iter().collect()
}

/// Loads `text` as the repository's `.envctl` with `sets`, and plans it when it loads. A refusal must say where.
fn load_and_plan(repo: &Path, runtime: &Path, text: &[u8], sets: Vec<String>) -> Result<bool, String> {
    std::fs::write(repo.join(".envctl"), text).map_err(|e| e.to_string())?;
    let runtime = runtime.display().to_string();
    let env = EnvVars::from_pairs([("ENVCTL_RUNTIME_DIR", runtime.as_str()), ("PATH", "/usr/bin:/bin")]);
    let options = LoadOptions { start_dir: repo.to_path_buf(), config_file: None, sets };
    match Settings::load(&options, &env) {
        Ok(settings) => {
            let targets = Targets::discover(&settings.paths, &settings.config.project.trees_dir);
            let all: Vec<_> = targets.all.iter().collect();
            if let Ok(ports) = plan_ports(&settings, &all) {
                let _ = explain(&settings, &all, &ports, &env);
            }
            Ok(true)
        }
        Err(e) => {
            let message = e.to_string();
            if message.trim().is_empty() {
                return Err("a refusal with no message".into());
            }
            Ok(false)
        }
    }
}

#[test]
fn two_thousand_mutated_configurations_are_refused_or_loaded_never_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let runtime = dir.path().join("runtime");
    std::fs::create_dir_all(repo.join(".git")).expect("repo");
    std::fs::create_dir_all(&runtime).expect("runtime");
    let mut rng = Rng(0x5eed_0fe4_7c71);
    let (mut loaded, mut refused) = (0, 0);
    for case in 0..2_000 {
        let seed = if case % 3 == 2 { LEGACY_SEED } else { TOML_SEED };
        let text = mutate(&mut rng, seed);
        let mut bytes = text.into_bytes();
        if case % 97 == 0 && !bytes.is_empty() {
            let at = rng.below(bytes.len());
            bytes[at] = 0xff; // invalid UTF-8
        }
        let sets = if case % 4 == 0 {
            vec![format!("{}={}", rng.pick(SET_KEYS), rng.pick(FRAGMENTS))]
        } else {
            Vec::new()
        };
        let outcome = std::panic::catch_unwind(|| load_and_plan(&repo, &runtime, &bytes, sets.clone()));
        match outcome {
            Ok(Ok(true)) => loaded += 1,
            Ok(Ok(false)) => refused += 1,
            Ok(Err(why)) => panic!("case {case}: {why}\n--set {sets:?}\n{}", String::from_utf8_lossy(&bytes)),
            Err(panic) => panic!(
                "case {case} panicked ({panic:?})\n--set {sets:?}\n{}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
    // The mutations reach both sides: the reader is exercised on files it accepts and on ones it refuses.
    assert!(loaded > 100 && refused > 100, "{loaded} loaded, {refused} refused");
}
