//! `envctl debug-pack`, `debug-report` and `debug-last`: one redacted bundle of everything needed to triage an
//! incident, the probable causes read back from one, and the newest one's path and top finding.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

use envctl_contracts::bundle::DebugReport;

use crate::bundle::{self, PackOptions, Packed, Sources};
use crate::runtime::{EngineError, EngineRuntime, Outcome};

// Arguments of `debug-pack`.
#[derive(Debug, clap::Args)]
pub struct DebugPackArgs {
    /// The run to describe (default: the latest; `show-state` shows its id, `runs/` holds the others).
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
    /// Write the bundle here: a file, or a directory to put it in (default: the scope directory's `debug/`).
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Take at most this many bytes from the end of each log.
    #[arg(long, value_name = "N", default_value_t = bundle::DEFAULT_LOG_BYTES)]
    pub log_bytes: u64,
    /// Take at most this many job records (newest first), with their logs.
    #[arg(long, value_name = "N", default_value_t = bundle::DEFAULT_JOBS)]
    pub jobs: usize,
    /// Only events and jobs this recent (`30m`, `2h`).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
}

// Arguments of `debug-report`.
#[derive(Debug, clap::Args)]
pub struct DebugReportArgs {
    /// A bundle `debug-pack` wrote (default: make one of the live scope now).
    #[arg(value_name = "BUNDLE", conflicts_with = "latest")]
    pub bundle: Option<PathBuf>,
    /// Read the newest bundle in the scope directory's `debug/`.
    #[arg(long)]
    pub latest: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

// Arguments of `debug-last`.
#[derive(Debug, clap::Args)]
pub struct DebugLastArgs {}

/// Writes a bundle and prints its path.
pub fn exec_pack(rt: &EngineRuntime, args: &DebugPackArgs) -> Result<Outcome, EngineError> {
    let since = args
        .since
        .as_deref()
        .map(|text| {
            humantime::parse_duration(text).map_err(|e| EngineError::BadFlag {
                flag: "--since",
                value: text.to_owned(),
                why: format!("is not a duration ({e})"),
                hint: "a duration such as 30s, 15m, 2h or 1d".to_owned(),
            })
        })
        .transpose()?;
    let options = PackOptions {
        run_id: args.run_id.clone(),
        output: args.output.as_ref().map(|o| rt.cwd().join(o)),
        log_bytes: args.log_bytes,
        jobs: args.jobs,
        since,
    };
    if let Ok(paths) = rt.paths() {
        crate::host::client::HostClient::settle(paths);
    }
    let packed = pack(rt, &options)?;
    rt.printer().data(&format!("{}\n", packed.path.display()));
    rt.printer().note(&summary(&packed));
    Ok(Outcome::Success)
}

/// Reads a bundle (or makes one of the live scope) and prints the probable causes.
pub fn exec_report(rt: &EngineRuntime, args: &DebugReportArgs) -> Result<Outcome, EngineError> {
    let path = match (&args.bundle, args.latest) {
        (Some(path), _) => rt.cwd().join(path),
        (None, true) => bundle::latest(&rt.paths()?.scope_dir)?,
        (None, false) => {
            let options = PackOptions {
                run_id: None,
                output: None,
                log_bytes: bundle::DEFAULT_LOG_BYTES,
                jobs: bundle::DEFAULT_JOBS,
                since: None,
            };
            if let Ok(paths) = rt.paths() {
                crate::host::client::HostClient::settle(paths);
            }
            let packed = pack(rt, &options)?;
            rt.printer().note(&format!("bundle: {}", packed.path.display()));
            packed.path
        }
    };
    let evidence = bundle::read(&path)?;
    let report = bundle::diagnose(&evidence, &path.display().to_string());
    if args.json {
        rt.printer().json(&report);
    } else {
        rt.printer().data(&human(&report));
    }
    Ok(Outcome::Success)
}

/// Prints the newest bundle's path, size, age and top finding (exit 1 when there is none).
pub fn exec_last(rt: &EngineRuntime, _args: &DebugLastArgs) -> Result<Outcome, EngineError> {
    let path = bundle::latest(&rt.paths()?.scope_dir)?;
    let meta =
        std::fs::metadata(&path).map_err(|source| bundle::BundleError::Io { path: path.clone(), source })?;
    let age = meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok()).unwrap_or_default();
    let age = humantime::format_duration(std::time::Duration::from_secs(age.as_secs()));
    let top = bundle::read(&path)
        .map(|ev| bundle::diagnose(&ev, &path.display().to_string()))
        .ok()
        .and_then(|r| r.findings.into_iter().next())
        .map_or_else(|| "none: nothing looks wrong".to_owned(), |f| format!("[{}] {}", f.kind, f.title));
    rt.printer().data(&format!(
        "{}\nsize: {:.1} KiB, made {age} ago\ntop finding: {top}\n",
        path.display(),
        bytes_kib(meta.len())
    ));
    Ok(Outcome::Success)
}

#[allow(clippy::cast_precision_loss)]
fn bytes_kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

/// Gathers the sources from the composition root and writes the bundle.
fn pack(rt: &EngineRuntime, options: &PackOptions) -> Result<Packed, EngineError> {
    let paths = rt.paths()?.clone();
    let state = rt.state()?;
    let config = rt.settings().map(crate::config::Settings::report).map_err(|e| e.to_string());
    let doctor = super::doctor::fresh_report(rt)?;
    let store = match &config {
        Ok(_) => rt.job_store().map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    let repo = paths.repo_root.display().to_string();
    let leases =
        rt.ledger().map(|l| l.leases()).unwrap_or_default().into_iter().filter(|l| l.owner.repo == repo);
    let sources = Sources {
        state: &state,
        config,
        doctor,
        store,
        leases: leases.collect(),
        env: rt.env().inherited(),
        path_var: rt.env().get("PATH"),
    };
    Ok(bundle::pack(&sources, options)?)
}

/// `12 files, 31 values redacted (secret_key 20, url_userinfo 11)`.
fn summary(packed: &Packed) -> String {
    let redaction = &packed.manifest.redaction;
    let rules: Vec<String> =
        redaction.rules.iter().filter(|(_, n)| **n > 0).map(|(rule, n)| format!("{rule} {n}")).collect();
    let by_rule = if rules.is_empty() { String::new() } else { format!(" ({})", rules.join(", ")) };
    format!("{} files, {} values redacted{by_rule}", packed.manifest.files.len() + 1, redaction.total)
}

/// The report for a person: the findings with their evidence and fix, the end of the timeline, the slowest
/// phases.
fn human(report: &DebugReport) -> String {
    const SHOWN: usize = 30;
    let mut out = format!("bundle: {}\n", report.bundle);
    if let Some(run) = &report.run_id {
        let _ = writeln!(out, "run: {run}");
    }
    out.push('\n');
    if report.findings.is_empty() {
        out.push_str("no probable cause found: nothing looks wrong\n");
    } else {
        out.push_str("probable causes, most likely first:\n");
    }
    for (i, f) in report.findings.iter().enumerate() {
        let _ = writeln!(out, "{}. [{}] {}", i + 1, f.kind, f.title);
        for line in &f.evidence {
            let _ = writeln!(out, "     {line}");
        }
        let _ = writeln!(out, "   fix: {}", f.fix);
    }
    if !report.timeline.is_empty() {
        let skipped = report.timeline.len().saturating_sub(SHOWN);
        let _ = writeln!(
            out,
            "\ntimeline{}:",
            if skipped > 0 { format!(" (last {SHOWN})") } else { String::new() }
        );
        for e in &report.timeline[skipped..] {
            let _ = writeln!(out, "  {}  {:<24} {}", e.at, e.subject, e.event);
        }
    }
    if !report.slowest.is_empty() {
        out.push_str("\nslowest phases:\n");
        for p in &report.slowest {
            let _ = writeln!(out, "  {:<24} {:>8.0} ms", p.name, p.ms);
        }
    }
    out
}
