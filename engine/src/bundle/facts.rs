//! `facts.json`: what `/proc`, the ledger and the machine say now — the process tree of what envctl started, who
//! holds and listens on every planned or leased port, the versions of the servers' binaries, and system facts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::bundle::{BundleFacts, Listener, PortFact, ProcessFact, SystemFacts};
use envctl_contracts::ports::{PortLease, PortsManifest};
use envctl_contracts::state::RunState;

use crate::state::redact::Redactor;
use crate::supervisor::proc_info;

/// What the facts are gathered from.
#[derive(Debug)]
pub struct FactSources<'a> {
    /// The run's state, when one was saved.
    pub run_state: Option<&'a RunState>,
    /// Its ports.
    pub ports: Option<&'a PortsManifest>,
    /// This repository's leases.
    pub leases: Vec<PortLease>,
    /// `PATH`, to find the binaries.
    pub path_var: Option<&'a str>,
    /// The scope directory (its file system's free space is reported).
    pub scope_dir: &'a Path,
}

/// Gathers the facts; argv is redacted with `redactor`.
pub fn gather(sources: &FactSources<'_>, redactor: &mut Redactor) -> BundleFacts {
    const NAMES: [&str; 3] = ["git", "postgres", "redis-server"];
    let versions = std::thread::scope(|s| {
        let handles: Vec<_> =
            NAMES.iter().map(|name| s.spawn(move || version(name, sources.path_var))).collect();
        NAMES
            .iter()
            .zip(handles)
            .map(|(name, h)| ((*name).to_owned(), h.join().ok().flatten()))
            .collect::<BTreeMap<_, _>>()
    });
    let processes = processes(sources.run_state, sources.scope_dir, redactor);
    let ours: BTreeSet<u32> = processes.iter().filter(|p| p.alive).map(|p| p.pid).collect();
    let ports = ports(sources, &ours, redactor);
    BundleFacts {
        schema_version: SCHEMA_VERSION,
        processes,
        ports,
        versions,
        system: system(sources.scope_dir),
    }
}

/// `<binary> --version`'s first line, when the binary is found.
fn version(name: &str, path_var: Option<&str>) -> Option<String> {
    let binary = crate::requirements::find_binary(name, path_var)?;
    let output = std::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout).lines().next().map(str::to_owned)
}

/// The host, every recorded process and each one's living descendants.
fn processes(
    run_state: Option<&RunState>,
    scope_dir: &std::path::Path,
    redactor: &mut Redactor,
) -> Vec<ProcessFact> {
    let mut out: Vec<ProcessFact> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut recorded: Vec<(String, u32, u64)> = Vec::new();
    if let Some(host) = run_state.and_then(|s| s.host) {
        recorded.push(("host".to_owned(), host.pid, host.start_time));
    }
    for record in run_state.map(|s| s.services.as_slice()).unwrap_or_default() {
        if let (Some(pid), Some(started)) = (record.pid, record.pid_start_time) {
            recorded.push((format!("{}/{}", record.target, record.service), pid, started));
        }
    }
    // The job runtime's managed Redis, which belongs to the repository rather than to a run.
    if let Some(server) = crate::requirements::job_server::read_record(scope_dir)
        && let (Some(pid), Some(started)) = (server.pid, server.pid_start_time)
    {
        recorded.push((crate::requirements::job_server::ROLE.to_owned(), pid, started));
    }
    for (owner, pid, started) in recorded {
        let alive = proc_info::is_same_process(pid, started);
        let members = if alive && owner != "host" { proc_info::tree(pid) } else { vec![(pid, started)] };
        for (member, member_started) in members {
            if !seen.insert(member) {
                continue;
            }
            let running = member != pid || alive;
            out.push(process_fact(&owner, member, Some(member_started), running, redactor));
        }
    }
    out
}

fn process_fact(
    owner: &str,
    pid: u32,
    started: Option<u64>,
    alive: bool,
    redactor: &mut Redactor,
) -> ProcessFact {
    let (state, rss_bytes) = if alive { status(pid) } else { (None, None) };
    let argv = if alive { argv(pid, redactor) } else { Vec::new() };
    ProcessFact {
        owner: owner.to_owned(),
        pid,
        ppid: if alive { proc_info::stat(pid).map(|s| s.ppid) } else { None },
        start_time: started,
        alive,
        state,
        rss_bytes,
        argv,
    }
}

/// The state letter and resident memory of `pid` from `/proc/<pid>/status`.
fn status(pid: u32) -> (Option<String>, Option<u64>) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return (None, None) };
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned());
    let state = field("State:").and_then(|s| s.split_whitespace().next().map(str::to_owned));
    let rss = field("VmRSS:")
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .map(|kib| kib * 1024);
    (state, rss)
}

/// The command line of `pid`, redacted.
fn argv(pid: u32, redactor: &mut Redactor) -> Vec<String> {
    let Ok(bytes) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return Vec::new() };
    let mut args = serde_json::Value::Array(
        bytes
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| serde_json::Value::String(String::from_utf8_lossy(a).into_owned()))
            .collect(),
    );
    redactor.json(&mut args);
    serde_json::from_value(args).unwrap_or_default()
}

/// Every planned port of the run and every lease of the repository, with who listens on it.
fn ports(sources: &FactSources<'_>, ours: &BTreeSet<u32>, redactor: &mut Redactor) -> Vec<PortFact> {
    let mut wanted: BTreeMap<u16, (String, String)> = BTreeMap::new();
    for target in sources.ports.iter().flat_map(|m| &m.targets) {
        for (service, plan) in &target.ports {
            wanted.insert(plan.final_port, (target.target.clone(), service.clone()));
        }
    }
    for lease in &sources.leases {
        wanted.entry(lease.port).or_insert_with(|| (lease.owner.target.clone(), lease.owner.service.clone()));
    }
    if wanted.is_empty() {
        return Vec::new();
    }
    let ports: BTreeSet<u16> = wanted.keys().copied().collect();
    let listening = listeners(&ports);
    let host = sources.run_state.and_then(|s| s.host).map(|h| h.pid);
    wanted
        .into_iter()
        .map(|(port, (target, service))| {
            let lease = sources.leases.iter().find(|l| l.port == port);
            PortFact {
                port,
                target,
                service,
                lease_pid: lease.map(|l| l.pid),
                lease_alive: lease.map(|l| proc_info::is_same_process(l.pid, l.pid_start_time)),
                listeners: listening
                    .get(&port)
                    .into_iter()
                    .flatten()
                    .map(|pid| Listener {
                        pid: *pid,
                        argv: argv(*pid, redactor),
                        ours: ours.contains(pid) || Some(*pid) == host,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The pids listening on each of `ports` (one pass over `/proc`; processes of other users are not seen).
fn listeners(ports: &BTreeSet<u16>) -> BTreeMap<u16, Vec<u32>> {
    let inodes: BTreeMap<u64, u16> =
        proc_info::listening_inodes().into_iter().filter(|(_, port)| ports.contains(port)).collect();
    let mut out: BTreeMap<u16, Vec<u32>> = BTreeMap::new();
    if inodes.is_empty() {
        return out;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return out };
    for pid in entries.filter_map(Result::ok).filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()) {
        for port in proc_info::listening_ports_in(&[pid], &inodes) {
            out.entry(port).or_default().push(pid);
        }
    }
    out
}

/// OS, kernel, CPUs, memory and the scope directory's file system.
fn system(scope_dir: &Path) -> SystemFacts {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let disks = sysinfo::Disks::new_with_refreshed_list();
    let disk = disks
        .list()
        .iter()
        .filter(|d| scope_dir.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len());
    SystemFacts {
        os: sysinfo::System::long_os_version(),
        kernel: sysinfo::System::kernel_version(),
        cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        physical_cores: sysinfo::System::physical_core_count(),
        memory_total_bytes: sys.total_memory(),
        memory_available_bytes: sys.available_memory(),
        disk_mount: disk.map(|d| d.mount_point().display().to_string()),
        disk_total_bytes: disk.map(sysinfo::Disk::total_space),
        disk_available_bytes: disk.map(sysinfo::Disk::available_space),
    }
}
