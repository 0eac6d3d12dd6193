//! The live dashboard: a thread follows the host's `watch` connection, and the keys act through envctl's own
//! commands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use envctl_contracts::control::HostView;
use envctl_contracts::state::ServiceRecord;

use crate::config::Paths;
use crate::host::client::HostClient;
use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::ui::dashboard::Actions;

/// Draws the dashboard until the user quits.
pub fn run(
    rt: &EngineRuntime,
    paths: &Paths,
    view: HostView,
    title: String,
    requirements: BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Outcome, EngineError> {
    use std::sync::Arc;

    use crate::ui::dashboard::tui::{self, Update};

    let (tx, rx) = std::sync::mpsc::channel();
    let _ = tx.send(Update::View(Box::new(view)));
    let feed = tx.clone();
    let watched = paths.clone();
    // Follows the host; when none answers (or it exits), tries again once a second until one does.
    std::thread::spawn(move || {
        loop {
            if let Some(client) = HostClient::connect(&watched) {
                // Ok: the dashboard quit. An error: the host went away.
                if client.watch(|v| feed.send(Update::View(Box::new(v))).is_ok()).is_ok() {
                    return;
                }
                let gone = "the host stopped answering: the last view stays until one runs again (envctl start, resume)";
                if feed.send(Update::Gone(gone.to_owned())).is_err() {
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    });
    let actions: Arc<dyn Actions> = Arc::new(CliActions::new(paths.current_root.clone(), rt));
    let options = tui::Options { title, requirements, color: rt.color() };
    tui::run(&options, &tx, &rx, &actions)
        .map_err(|e| EngineError::Failed(format!("the dashboard could not draw: {e}")))?;
    Ok(Outcome::Success)
}

/// Carries out the dashboard's keys by running this envctl's own commands (`restart`, `stop`, `start`, `test`,
/// `doctor`) in the repository, exactly as the user would.
#[derive(Debug)]
struct CliActions {
    exe: PathBuf,
    repo: PathBuf,
    config: Option<PathBuf>,
    sets: Vec<String>,
}

impl CliActions {
    fn new(repo: PathBuf, rt: &EngineRuntime) -> Self {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("envctl"));
        Self { exe, repo, config: rt.config_file().map(Path::to_path_buf), sets: rt.sets().to_vec() }
    }

    /// Runs `envctl <args>` for `target`/`service`; `done` is the message on success, the command's last error
    /// line the one on failure.
    fn run(&self, args: &[&str], target: Option<&str>, service: Option<&str>) -> Result<String, String> {
        let mut command = std::process::Command::new(&self.exe);
        command.arg("-C").arg(&self.repo).args(args).stdin(std::process::Stdio::null());
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        for set in &self.sets {
            command.arg("--set").arg(set);
        }
        match target {
            Some("main") => {
                command.arg("--main");
            }
            Some(tree) => {
                command.args(["--tree", tree]);
            }
            None => {}
        }
        if let Some(service) = service {
            command.args(["--service", service]);
        }
        let out = command.output().map_err(|e| format!("{}: {e}", self.exe.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let last =
                stderr.lines().rev().find(|l| l.starts_with("error:")).or_else(|| stderr.lines().next_back());
            Err(last.unwrap_or("failed").trim_start_matches("error: ").to_owned())
        }
    }
}

impl Actions for CliActions {
    fn stop(&self, target: &str, service: &str) -> Result<String, String> {
        self.run(&["stop", "-q"], Some(target), Some(service)).map(|_| format!("stopped {target}/{service}"))
    }

    fn start(&self, target: &str, service: &str) -> Result<String, String> {
        self.run(&["start", "-q"], Some(target), Some(service)).map(|_| format!("started {target}/{service}"))
    }

    fn restart(&self, target: &str, service: &str) -> Result<String, String> {
        self.run(&["restart", "-q"], Some(target), Some(service))
            .map(|_| format!("restarted {target}/{service}"))
    }

    fn test(&self, target: &str, service: &str) -> Result<String, String> {
        self.run(&["test", "-q"], Some(target), Some(service))
            .map(|out| format!("tests of {target}/{service}: {}", out.lines().last().unwrap_or("done")))
    }

    fn doctor(&self) -> Result<Vec<String>, String> {
        let mut command = std::process::Command::new(&self.exe);
        command.arg("-C").arg(&self.repo).args(["doctor", "--json"]).stdin(std::process::Stdio::null());
        let out = command.output().map_err(|e| format!("{}: {e}", self.exe.display()))?;
        let report: envctl_contracts::doctor::ReadinessReport =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("unreadable doctor report: {e}"))?;
        let mut lines = vec![format!("verdict: {}", report.verdict)];
        lines.extend(report.gates.iter().map(|g| {
            let outcome = serde_json::to_value(g.outcome).ok().and_then(|v| v.as_str().map(str::to_owned));
            format!("{:<14} {}", g.name, outcome.unwrap_or_default())
        }));
        Ok(lines)
    }

    fn log_tail(&self, record: &ServiceRecord, n: usize) -> Vec<String> {
        record.log_path.as_deref().map(|p| crate::supervisor::logs::tail(Path::new(p), n)).unwrap_or_default()
    }
}
