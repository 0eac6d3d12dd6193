//! The `state_truth` gate: the saved state against reality — each recorded process alive with the same start
//! time and listening where it should (from `/proc`), the host alive and answering its socket, stale leases and
//! sockets, and artifacts that cannot be read (named with their path). envctl keeps no pid files: the host's lock
//! is an `flock`, released by the kernel when its holder dies.

use envctl_contracts::state::ServiceRecord;

use super::{Check, Ctx, listing};
use crate::supervisor::proc_info;
use crate::supervisor::truth::Truth;

/// The recorded processes of the selected targets with their truth now, or the skip when there are none.
fn records<'a>(ctx: &'a Ctx<'_>) -> Result<Vec<(&'a ServiceRecord, Truth)>, Check> {
    let state = ctx.run_state().map_err(|e| Check::skip(format!("the saved state cannot be read ({e})")))?;
    if state.is_none() {
        return Err(Check::skip("nothing has been started"));
    }
    Ok(ctx.recorded())
}

fn label(r: &ServiceRecord) -> String {
    format!("{}/{}", r.target, r.service)
}

/// Each recorded process is the one running under its pid (same start time).
pub fn processes(ctx: &Ctx<'_>) -> Check {
    let records = match records(ctx) {
        Ok(records) => records,
        Err(skip) => return skip,
    };
    let gone: Vec<&ServiceRecord> =
        records.iter().filter(|(_, t)| *t == Truth::Gone).map(|(r, _)| *r).collect();
    let live = records.iter().filter(|(_, t)| matches!(t, Truth::Running | Truth::NotListening)).count();
    if gone.is_empty() {
        return Check::pass(format!("{live} recorded process(es) run with their recorded start time"));
    }
    let names: Vec<String> =
        gone.iter().map(|r| format!("{} (pid {})", label(r), r.pid.unwrap_or_default())).collect();
    let mut found = Check::fail(
        format!("recorded but gone: {}", listing(&names)),
        "`envctl resume` starts what is gone again; `envctl logs --service NAME` shows why it ended",
    );
    for r in gone {
        found = found.with(label(r), format!("pid {} is gone", r.pid.unwrap_or_default()));
    }
    found
}

/// Each ready process with a port has its process tree listening there.
pub fn listeners(ctx: &Ctx<'_>) -> Check {
    let records = match records(ctx) {
        Ok(records) => records,
        Err(skip) => return skip,
    };
    let deaf: Vec<&ServiceRecord> =
        records.iter().filter(|(_, t)| *t == Truth::NotListening).map(|(r, _)| *r).collect();
    if deaf.is_empty() {
        let ports = records.iter().filter(|(r, t)| *t == Truth::Running && r.port.is_some()).count();
        return Check::pass(format!("{ports} port(s) listened on by their own process tree"));
    }
    let names: Vec<String> =
        deaf.iter().map(|r| format!("{} (port {})", label(r), r.port.unwrap_or_default())).collect();
    let mut found = Check::fail(
        format!("running but not listening on its port: {}", listing(&names)),
        "`envctl logs --service NAME` shows what it does; `envctl restart --service NAME` restarts it",
    );
    for r in deaf {
        found = found.with(
            label(r),
            format!("pid {} does not listen on {}", r.pid.unwrap_or_default(), r.port.unwrap_or_default()),
        );
    }
    found
}

/// The recorded host runs and answers its control socket.
pub fn host(ctx: &Ctx<'_>) -> Check {
    let Some(paths) = ctx.paths else { return Check::skip("no repository found") };
    let state = match ctx.run_state() {
        Ok(state) => state,
        Err(e) => return Check::skip(format!("the saved state cannot be read ({e})")),
    };
    let Some(host) = state.and_then(|s| s.host) else {
        return Check::pass("no host recorded (nothing runs)");
    };
    let socket = paths.control_socket();
    let evidence = |c: Check| c.with("pid", host.pid).with("socket", socket.display());
    if !proc_info::is_same_process(host.pid, host.start_time) {
        let runs = records(ctx).is_ok_and(|r| r.iter().any(|(_, t)| *t == Truth::Running));
        if runs {
            return evidence(Check::warn(
                format!("the host (pid {}) is gone; what it started runs unsupervised", host.pid),
                "`envctl resume` starts a host that adopts what runs",
            ));
        }
        return evidence(Check::pass(format!(
            "the recorded host (pid {}) has exited with its services",
            host.pid
        )));
    }
    if crate::host::client::HostClient::connect(paths).is_none() {
        return evidence(Check::fail(
            format!("the host (pid {}) runs but does not answer on {}", host.pid, socket.display()),
            format!(
                "see {}; `envctl stop-all` and `envctl start` replace it",
                crate::host::client::host_log(paths).display()
            ),
        ));
    }
    evidence(Check::pass(format!("the host (pid {}) answers on its socket", host.pid)))
}

/// This repository's leases whose holder (pid and start time) is gone, while its host runs (with nothing
/// running, a target's leases are kept on purpose: its ports stay the same next start).
pub fn stale_leases(ctx: &Ctx<'_>) -> Check {
    let (Some(ledger), Some(paths)) = (&ctx.ledger, ctx.paths) else {
        return Check::skip("no repository found");
    };
    let stale = super::fix::stale_leases(ledger, paths);
    if stale.is_empty() {
        return Check::pass("no stale lease of this repository");
    }
    let ports: Vec<String> = stale
        .iter()
        .map(|l| format!("{} ({}/{}, pid {})", l.port, l.owner.target, l.owner.service, l.pid))
        .collect();
    if !ctx.host_alive() {
        return Check::pass(format!(
            "{} lease(s) kept for stopped targets so their ports stay the same",
            stale.len()
        ));
    }
    let mut found = Check::warn(
        format!("leases held by gone processes: {}", listing(&ports)),
        "`envctl doctor --fix` releases them",
    );
    for lease in &stale {
        found = found.with(
            format!("port {}", lease.port),
            format!("{}/{} pid {} gone", lease.owner.target, lease.owner.service, lease.pid),
        );
    }
    found
}

/// A control socket nothing answers on (its host is gone).
pub fn stale_sockets(ctx: &Ctx<'_>) -> Check {
    let Some(paths) = ctx.paths else { return Check::skip("no repository found") };
    match super::fix::stale_socket(paths) {
        Some(socket) => Check::warn(
            format!("{} exists but no host answers on it", socket.display()),
            "`envctl doctor --fix` removes it (the next `envctl start` would replace it too)",
        )
        .with("path", socket.display()),
        None => Check::pass("no stale control socket"),
    }
}

/// The latest artifacts can be read (a torn or corrupt one is named with its path), and no writer left a
/// temporary file behind.
pub fn artifacts(ctx: &Ctx<'_>) -> Check {
    let Some(state) = &ctx.state else { return Check::skip("no repository found") };
    let mut errors = Vec::new();
    if let Err(e) = ctx.run_state() {
        errors.push(e.to_owned());
    }
    let reads = [
        state.runtime_map().err(),
        state.ports_manifest().err(),
        state.error_report().err(),
        state.test_results().err(),
    ];
    errors.extend(reads.into_iter().flatten().map(|e| e.to_string()));
    if !errors.is_empty() {
        let first = errors[0].lines().next().unwrap_or_default().to_owned();
        let mut found = Check::fail(
            first,
            "move the file aside (or run `envctl stop-all`); envctl rewrites it on the next start",
        );
        for (i, e) in errors.iter().enumerate() {
            found = found.with(format!("corrupt {}", i + 1), e.lines().next().unwrap_or_default());
        }
        return found;
    }
    let temps = crate::state::leftover_temps(state.scope_dir());
    if !temps.is_empty() {
        let names: Vec<String> = temps.iter().map(|p| p.display().to_string()).collect();
        return Check::warn(
            format!("temporary files of killed writers: {}", listing(&names)),
            "remove them (they are never read)",
        );
    }
    Check::pass("every artifact reads back")
}
