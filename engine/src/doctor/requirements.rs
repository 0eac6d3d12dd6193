//! The `requirements` gate: each running requirement server of the selected targets answers a real query
//! (Postgres `SELECT 1`, Redis `PING`), with its latency.

use std::time::Instant;

use envctl_contracts::config::Adapter;
use envctl_contracts::state::{ProcessKind, ServiceRecord, ServiceStatus};

use super::{Check, Ctx, listing, unconfigured};
use crate::supervisor::probe::Probe;

/// The requirement servers the selected targets use: their own, and shared ones they are recorded as using.
fn servers<'a>(ctx: &'a Ctx<'_>) -> Vec<&'a ServiceRecord> {
    let Ok(Some(state)) = ctx.run_state() else { return Vec::new() };
    let names = ctx.target_names();
    let used: Vec<&String> = names.iter().filter_map(|n| state.requirement_users.get(*n)).flatten().collect();
    state
        .services
        .iter()
        .filter(|r| r.kind == ProcessKind::Requirement)
        .filter(|r| {
            names.contains(&r.target.as_str()) || used.contains(&&format!("{}/{}", r.target, r.service))
        })
        .collect()
}

/// Every running requirement answers its probe.
pub fn probes(ctx: &Ctx<'_>) -> Check {
    if let Some(skip) = unconfigured(ctx) {
        return skip;
    }
    let Ok(settings) = &ctx.settings else { return Check::skip("the configuration does not load") };
    if settings.config.requirements.values().all(|r| !r.enabled) {
        return Check::skip("no requirement is enabled");
    }
    let servers = servers(ctx);
    let running: Vec<&&ServiceRecord> = servers.iter().filter(|r| r.status == ServiceStatus::Ready).collect();
    if running.is_empty() {
        return Check::skip("no requirement server runs (`envctl start` starts them)");
    }
    let mut failed = Vec::new();
    let mut evidence = Vec::new();
    for record in running {
        let label = format!("{}/{}", record.target, record.service);
        let adapter = settings.config.requirements.get(&record.service).map(|r| r.adapter);
        let password = crate::requirements::secrets::password(
            &settings.paths.scope_dir,
            &record.target,
            &record.service,
        )
        .ok();
        let Some(probe) = probe_of(adapter, record.port, password) else { continue };
        let started = Instant::now();
        let attempt = ctx.tokio.block_on(probe.attempt());
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        evidence.push((
            label.clone(),
            format!("{} in {ms:.1} ms: {}", if attempt.ok { "answered" } else { "failed" }, attempt.detail),
        ));
        if !attempt.ok {
            failed.push(format!("{label} on port {} ({})", record.port.unwrap_or_default(), attempt.detail));
        }
    }
    let mut found = if failed.is_empty() {
        Check::pass(format!("{} server(s) answer", evidence.len()))
    } else {
        Check::fail(
            format!("not answering: {}", listing(&failed)),
            "`envctl logs --service NAME` shows the server's log; `envctl restart` starts it again",
        )
    };
    for (label, line) in evidence {
        found = found.with(label, line);
    }
    found
}

/// The query that proves a server of `adapter` on `port` works (`None`: a command server, checked by its own
/// readiness probe).
fn probe_of(adapter: Option<Adapter>, port: Option<u16>, password: Option<String>) -> Option<Probe> {
    let port = port?;
    match adapter? {
        Adapter::Postgres => Some(Probe::Postgres {
            port,
            user: crate::requirements::PG_USER.into(),
            database: "postgres".into(),
            password,
        }),
        Adapter::Redis => Some(Probe::Redis { port, password }),
        Adapter::Command => Some(Probe::Tcp(port)),
    }
}

/// The job runtime's managed Redis server (`[jobs] backend = "redis"` with no URL): it answers `PING` with its
/// password when it runs; when it does not, the `job_runtime` gate's first check starts it (as any job command
/// would), so only a missing `redis-server` fails here.
pub fn job_server(ctx: &Ctx<'_>) -> Check {
    use envctl_contracts::jobs::JobServerStatus;
    if let Some(skip) = unconfigured(ctx) {
        return skip;
    }
    let Ok(settings) = &ctx.settings else { return Check::skip("the configuration does not load") };
    let Some(server) = crate::plan::job_server(settings, ctx.path_var.as_deref()) else {
        return Check::skip("the job store is not the managed job server");
    };
    let Some(binary) = server.binary.clone() else {
        return Check::fail(
            "redis-server is not on PATH, and the job runtime's server needs it ([jobs] backend = \"redis\" with no URL)",
            "apt-get install redis-server, or set [jobs].redis_url to a server you run",
        );
    };
    let mut check = match (server.status, server.pid) {
        (JobServerStatus::Running, Some(pid)) => {
            let password = crate::requirements::job_server::password(&settings.paths.scope_dir).ok();
            let probe = Probe::Redis { port: server.port, password };
            let started = Instant::now();
            let attempt = ctx.tokio.block_on(probe.attempt());
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            if attempt.ok {
                Check::pass(format!(
                    "the job server (pid {pid}) answers on port {} ({ms:.1} ms)",
                    server.port
                ))
            } else {
                Check::fail(
                    format!(
                        "the job server (pid {pid}) on port {} does not answer: {}",
                        server.port, attempt.detail
                    ),
                    format!(
                        "its log is {}; `envctl stop-all` stops it and the next job command starts it",
                        server.log_path
                    ),
                )
            }
        }
        (JobServerStatus::Running | JobServerStatus::Stopped, _) => Check::pass(format!(
            "the job server is stopped; the next job command starts it on port {} with its queue",
            server.port
        )),
        (JobServerStatus::NotStarted, _) => Check::pass(format!(
            "the job server has not run yet; the first job command starts it on port {}",
            server.port
        )),
    };
    check = check.with("binary", binary).with("data_dir", &server.data_dir).with("port", server.port);
    check
}
