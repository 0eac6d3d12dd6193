//! Test suites and migrations as jobs (`envctl test`, `envctl migrate`): one `test.run` or `migrate.run` job per
//! (target, service) with that command, run by a worker inside the calling process, each result reported as it
//! arrives. Test results are kept in `test_results.json` with the failing tests' names when the runner printed
//! them (pytest, cargo test, go test, jest, vitest), so `envctl test --failed` reruns only those.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::config::Priority;
use envctl_contracts::jobs::{Job, JobStatus, SuiteResult, TestResults};
use tokio_util::sync::CancellationToken;

use super::handlers::HandlerContext;
use super::worker::{WorkerOptions, run};
use super::{JobStore, NewJob, StoreError};
use crate::config::Settings;
use crate::targets::Target;

/// What a suite runs: a service's `test` or its `migrate` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuiteKind {
    /// `test` → `test.run` jobs.
    Test,
    /// `migrate` → `migrate.run` jobs.
    Migrate,
}

impl SuiteKind {
    /// The job type.
    pub fn job_type(self) -> &'static str {
        match self {
            Self::Test => "test.run",
            Self::Migrate => "migrate.run",
        }
    }

    /// The service key that holds the command.
    pub fn key(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Migrate => "migrate",
        }
    }
}

/// One suite: a target's service, and (for a rerun) only these of its tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite {
    /// Target.
    pub target: String,
    /// Service.
    pub service: String,
    /// Only these tests (empty: all).
    pub only: Vec<String>,
}

/// Every suite of `targets`: each enabled service with the `kind` command that runs there (only `services` when
/// some are named).
pub fn suites_of(
    settings: &Settings,
    targets: &[&Target],
    kind: SuiteKind,
    services: &[String],
) -> Vec<Suite> {
    targets
        .iter()
        .flat_map(|t| {
            settings
                .config
                .services
                .iter()
                .filter(|(name, _)| services.is_empty() || services.contains(name))
                .filter(move |(_, s)| {
                    let command = match kind {
                        SuiteKind::Test => &s.test,
                        SuiteKind::Migrate => &s.migrate,
                    };
                    s.enabled && command.is_some() && t.in_scope(s.targets)
                })
                .map(|(name, _)| Suite { target: t.name.clone(), service: name.clone(), only: Vec::new() })
        })
        .collect()
}

/// The suites that failed in `last`, each narrowed to its failing tests when their names are known.
pub fn failed_in(last: &TestResults) -> Vec<Suite> {
    last.suites
        .iter()
        .filter(|s| !s.passed)
        .map(|s| Suite { target: s.target.clone(), service: s.service.clone(), only: s.failed_tests.clone() })
        .collect()
}

/// How a run of suites goes.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Suites at once.
    pub parallel: usize,
    /// The worker's lease.
    pub lease: Duration,
}

/// How a run of suites ended.
#[derive(Debug, Clone)]
pub struct SuiteRun {
    /// Each suite's result, in the order given.
    pub results: TestResults,
    /// Whether Ctrl-C cut it short.
    pub interrupted: bool,
}

/// The names of failing tests in a runner's output, in order, once each: pytest's `FAILED path::name`, cargo
/// test's `test name ... FAILED`, go test's `--- FAIL: Name`, jest's `✕ name` and vitest's `× name`.
pub fn failed_tests(lines: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in lines {
        let line = line.trim();
        let name = if let Some(rest) = line.strip_prefix("FAILED ") {
            // pytest: `FAILED tests/test_api.py::test_login - AssertionError: …`
            rest.split(" - ").next().filter(|n| n.contains("::")).map(str::trim)
        } else if let Some(rest) = line.strip_prefix("test ").and_then(|r| r.strip_suffix(" ... FAILED")) {
            Some(rest.trim())
        } else if let Some(rest) = line.strip_prefix("--- FAIL: ") {
            rest.split(" (").next().map(str::trim)
        } else {
            line.strip_prefix("✕ ")
                .or_else(|| line.strip_prefix("× "))
                .map(|rest| rest.rsplit_once(" (").map_or(rest, |(name, _)| name).trim())
        };
        if let Some(name) = name.filter(|n| !n.is_empty())
            && !names.iter().any(|n| n == name)
        {
            names.push(name.to_owned());
        }
    }
    names
}

/// Quotes `word` for `sh`.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The `test` command narrowed to `names`, when its runner is recognised: pytest node ids as arguments,
/// `cargo test -- --exact a b`, `go test -run '^(A|B)$'`, `jest`/`vitest -t 'a|b'`. `None`: run it whole.
pub fn narrow(command: &str, names: &[String]) -> Option<String> {
    if names.is_empty() {
        return None;
    }
    let words: Vec<&str> = command.split_whitespace().collect();
    let has = |w: &str| words.iter().any(|x| x.ends_with(w));
    let quoted = || names.iter().map(|n| quote(n)).collect::<Vec<_>>().join(" ");
    let pattern = |escape: fn(&str) -> String| names.iter().map(|n| escape(n)).collect::<Vec<_>>().join("|");
    let regex_escape = |n: &str| {
        n.chars().fold(String::new(), |mut out, c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                out.push('\\');
            }
            out.push(c);
            out
        })
    };
    if has("pytest") {
        Some(format!("{command} {}", quoted()))
    } else if words.windows(2).any(|w| w[0].ends_with("cargo") && w[1] == "test") {
        let sep = if words.contains(&"--") { "" } else { " --" };
        Some(format!("{command}{sep} --exact {}", quoted()))
    } else if words.windows(2).any(|w| w[0].ends_with("go") && w[1] == "test") {
        Some(format!("{command} -run {}", quote(&format!("^({})$", pattern(regex_escape)))))
    } else if has("jest") || has("vitest") {
        Some(format!("{command} -t {}", quote(&pattern(regex_escape))))
    } else {
        None
    }
}

fn result_of(suite: &Suite, job: &Job, failed: Vec<String>) -> SuiteResult {
    let passed = job.status == JobStatus::Succeeded;
    let duration_secs = match (
        job.started_at.as_deref().map(humantime::parse_rfc3339),
        job.finished_at.as_deref().map(humantime::parse_rfc3339),
    ) {
        (Some(Ok(a)), Some(Ok(b))) => b.duration_since(a).ok().map(|d| d.as_secs_f64()),
        _ => None,
    };
    SuiteResult {
        target: suite.target.clone(),
        service: suite.service.clone(),
        job: job.id.clone(),
        passed,
        duration_secs,
        error: (!passed).then(|| job.error.clone().unwrap_or_else(|| job.status.as_str().into())),
        failed_tests: if passed { Vec::new() } else { failed },
    }
}

/// The failing tests a failed job's log names.
fn failed_of(store: &dyn JobStore, job: &Job) -> Vec<String> {
    if job.status == JobStatus::Succeeded {
        return Vec::new();
    }
    let lines: Vec<String> = store.logs(&job.id, 0).unwrap_or_default().into_iter().map(|l| l.line).collect();
    failed_tests(&lines)
}

/// Enqueues `suites` as `kind` jobs and runs them with a worker of this process until each has ended (or
/// `interrupt` fires, which stops the running ones). `finished` is called once per suite as it ends.
#[allow(clippy::too_many_arguments)]
pub async fn run_suites(
    store: Arc<dyn JobStore>,
    ctx: HandlerContext,
    kind: SuiteKind,
    suites: &[Suite],
    options: &SuiteOptions,
    interrupt: impl std::future::Future<Output = ()>,
    mut finished: impl FnMut(&SuiteResult),
    mut line: impl FnMut(&Suite, &str),
) -> Result<SuiteRun, StoreError> {
    let ctx = Arc::new(ctx);
    let new: Vec<NewJob> = suites
        .iter()
        .map(|suite| NewJob {
            job_type: kind.job_type().into(),
            target: Some(suite.target.clone()),
            payload: serde_json::json!({ "service": suite.service, "target": suite.target, "only": suite.only }),
            priority: Priority::High,
            max_attempts: 1,
            delay: None,
            input: None,
            after: Vec::new(),
        })
        .collect();
    let ids = {
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || store.enqueue(&new))
            .await
            .map_err(|e| StoreError::Backend { store: "suite runner".into(), detail: e.to_string() })??
    };
    let labels: BTreeMap<&String, &Suite> = ids.iter().zip(suites).collect();
    let (shutdown, force) = (CancellationToken::new(), CancellationToken::new());
    let worker_options = WorkerOptions {
        concurrency: options.parallel.max(1),
        types: vec![kind.job_type().into()],
        drain: false,
        lease: options.lease,
    };
    let worker = tokio::spawn(run(Arc::clone(&store), ctx, worker_options, shutdown.clone(), force.clone()));
    tokio::pin!(interrupt);
    let mut done: BTreeMap<String, SuiteResult> = BTreeMap::new();
    let mut interrupted = false;
    // Each suite's output, read from its job's log (whichever worker runs it: this one or a host's).
    let mut shown: BTreeMap<String, usize> = BTreeMap::new();
    let mut show = |id: &String| {
        let skip = shown.entry(id.clone()).or_default();
        if let Ok(new) = store.logs(id, *skip) {
            *skip += new.len();
            for entry in new {
                line(labels[id], &entry.line);
            }
        }
    };
    while done.len() < ids.len() {
        for id in &ids {
            if done.contains_key(id) {
                continue;
            }
            let Ok(job) = store.get(id) else { continue };
            show(id);
            if job.status.is_final() {
                let result = result_of(labels[id], &job, failed_of(store.as_ref(), &job));
                finished(&result);
                done.insert(id.clone(), result);
            }
        }
        if done.len() == ids.len() {
            break;
        }
        tokio::select! {
            () = &mut interrupt => { force.cancel(); interrupted = true; break; }
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    shutdown.cancel();
    let _ = worker.await;
    let mut results = Vec::new();
    for id in &ids {
        let result = if let Some(result) = done.remove(id) {
            result
        } else {
            let job = store.get(id)?;
            result_of(labels[id], &job, failed_of(store.as_ref(), &job))
        };
        results.push(result);
    }
    let results = TestResults {
        schema_version: SCHEMA_VERSION,
        finished_at: crate::state::now_rfc3339(),
        suites: results,
    };
    Ok(SuiteRun { results, interrupted })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn failing_test_names_are_read_from_each_runner() {
        let pytest = "tests/test_api.py::test_ok PASSED\nFAILED tests/test_api.py::test_login - AssertionError: 401\nFAILED tests/test_db.py::test_rows[2] - x";
        assert_eq!(
            failed_tests(&lines(pytest)),
            vec!["tests/test_api.py::test_login", "tests/test_db.py::test_rows[2]"]
        );
        let cargo = "test api::ok ... ok\ntest api::login ... FAILED\nfailures:\n    api::login";
        assert_eq!(failed_tests(&lines(cargo)), vec!["api::login"]);
        let go = "=== RUN   TestLogin\n--- FAIL: TestLogin (0.00s)\n--- PASS: TestOk (0.00s)";
        assert_eq!(failed_tests(&lines(go)), vec!["TestLogin"]);
        let jest = "  ✓ works (3 ms)\n  ✕ logs in (5 ms)\n  × rejects bad input";
        assert_eq!(failed_tests(&lines(jest)), vec!["logs in", "rejects bad input"]);
        assert!(failed_tests(&lines("all good\nFAILED (errors=1)")).is_empty());
    }

    #[test]
    fn a_rerun_narrows_each_runner_to_the_failed_tests_quoted() {
        let names = vec!["tests/t.py::a b".to_owned(), "it's".to_owned()];
        assert_eq!(narrow("pytest -q", &names).as_deref(), Some(r"pytest -q 'tests/t.py::a b' 'it'\''s'"));
        assert_eq!(
            narrow("cargo test", &["api::login".to_owned()]).as_deref(),
            Some("cargo test -- --exact 'api::login'")
        );
        assert_eq!(
            narrow("go test ./...", &["TestA".to_owned(), "TestB".to_owned()]).as_deref(),
            Some("go test ./... -run '^(TestA|TestB)$'")
        );
        assert_eq!(
            narrow("npx vitest run", &["a.b".to_owned()]).as_deref(),
            Some(r"npx vitest run -t 'a\.b'")
        );
        assert_eq!(narrow("make check", &["x".to_owned()]), None, "an unknown runner runs whole");
        assert_eq!(narrow("pytest", &[]), None);
    }
}
