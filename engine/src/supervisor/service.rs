//! The service task: one tokio task owns one supervised process for its whole life, reached through a
//! [`ServiceHandle`] that sends it control messages and watches its [`ServiceRecord`].
//!
//! How it works: the task spawns the process (or adopts a survivor of an earlier host, identified by pid and
//! start time), probes readiness with backoff until the probe's timeout while watching for an early exit, and
//! then supervises: when the process exits, the restart policy decides between restarting it (with exponential
//! backoff, at most [`MAX_RESTARTS`](super::restart::MAX_RESTARTS) times in a row) and recording the exit. A
//! `Stop` message signals the process group and its descendants, waits the grace period, kills what is left and
//! acknowledges. Every process of the service that is handed to the host (when it is PID 1 of a container) is
//! waited for: after each exit, at each stop and every few seconds while it runs ([`reap`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envctl_contracts::config::{ProbeKind, RestartPolicy};
use envctl_contracts::startup::{Launch, ServicePlan};
use envctl_contracts::state::{ProbeRecord, ServiceRecord, ServiceStatus};
use nix::sys::signal::Signal;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::probe::{Probe, next_pause};
use super::restart::RestartLimits;
use super::{logs, proc_info, reap, signal, spawn};
use crate::state::now_rfc3339;

/// A service with no probe and no port counts as ready once it has been running this long: through a shell, long
/// enough to catch a command the shell cannot find or that fails at once.
const SETTLE: Duration = Duration::from_millis(5);
/// The same for a program exec'd directly: that it exists was checked before it was spawned and the spawn reports
/// a failed exec, so only a program that fails at once is left to catch.
const SETTLE_DIRECT: Duration = Duration::from_millis(1);
/// Probe records kept per service.
const PROBE_HISTORY: usize = 20;

/// Everything needed to run one service.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Service or requirement.
    pub kind: envctl_contracts::state::ProcessKind,
    /// Target.
    pub target: String,
    /// What to run.
    pub plan: ServicePlan,
    /// The inherited environment.
    pub base_env: BTreeMap<String, String>,
    /// Log file.
    pub log_path: PathBuf,
    /// SIGTERM → SIGKILL grace.
    pub stop_grace: Duration,
}

/// Messages to a service task.
#[derive(Debug)]
pub enum Control {
    /// Stop the process (immediately SIGKILL when `force`), then end the task.
    Stop {
        /// Skip the grace period.
        force: bool,
        /// Acknowledged once nothing of the service runs.
        done: oneshot::Sender<()>,
    },
}

/// A lifecycle event of one service (`service.starting`, `service.ready`, `service.failed`, …).
#[derive(Debug, Clone)]
pub struct ServiceEvent {
    /// Target.
    pub target: String,
    /// Service.
    pub service: String,
    /// Dotted event name.
    pub event: String,
    /// Detail.
    pub detail: serde_json::Value,
}

/// Where a service task reports: a nudge on every change (to write state) and an event on every status change.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// Notified on every change.
    pub changed: Arc<Notify>,
    /// Receives an event on every status change.
    pub events: mpsc::UnboundedSender<ServiceEvent>,
}

/// A cheap handle to a running service task.
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    tx: mpsc::Sender<Control>,
    record: watch::Receiver<ServiceRecord>,
    /// The spec it runs.
    pub spec: Arc<ServiceSpec>,
}

impl ServiceHandle {
    /// The current record.
    pub fn record(&self) -> ServiceRecord {
        self.record.borrow().clone()
    }

    /// A receiver that sees every change of the record.
    pub fn watch(&self) -> watch::Receiver<ServiceRecord> {
        self.record.clone()
    }

    /// Stops the service and waits until nothing of it runs.
    pub async fn stop(&self, force: bool) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Control::Stop { force, done }).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Starts a task for `spec` on `tracker`: a fresh process, or `adopt` = (pid, start time) of a survivor.
pub fn launch(
    spec: ServiceSpec,
    adopt: Option<(u32, u64)>,
    reporter: Reporter,
    tracker: &tokio_util::task::TaskTracker,
) -> ServiceHandle {
    launch_with(spec, adopt, reporter, tracker, RestartLimits::default())
}

/// [`launch`] with restart limits of its own (tests restart a service hundreds of times without waiting).
fn launch_with(
    spec: ServiceSpec,
    adopt: Option<(u32, u64)>,
    reporter: Reporter,
    tracker: &tokio_util::task::TaskTracker,
    limits: RestartLimits,
) -> ServiceHandle {
    let (tx, rx) = mpsc::channel(4);
    let record = ServiceRecord {
        port: spec.plan.port.map(|p| p.assigned),
        ports: spec.plan.ports.iter().map(|(name, p)| (name.clone(), p.assigned)).collect(),
        url: spec.plan.url.clone(),
        log_path: Some(spec.log_path.display().to_string()),
        spec: Some(std::sync::Arc::new(spec.plan.clone())),
        ..ServiceRecord::new(spec.kind, &spec.target, &spec.plan.name, ServiceStatus::Pending)
    };
    let (publish, watch) = watch::channel(record);
    let spec = Arc::new(spec);
    let task = Task { spec: Arc::clone(&spec), publish, reporter, rx, limits };
    tracker.spawn(task.run(adopt));
    ServiceHandle { tx, record: watch, spec }
}

/// The process the task owns.
enum Proc {
    /// Spawned by this host: exit is observed by waiting on it.
    Child(tokio::process::Child),
    /// A survivor of an earlier host: exit is observed by polling `/proc`.
    Adopted,
}

/// How a run of the process ended.
enum Ended {
    /// It exited (code, or none for a signal).
    Exited(Option<i32>),
    /// A stop was requested and carried out.
    Stopped,
}

struct Task {
    spec: Arc<ServiceSpec>,
    publish: watch::Sender<ServiceRecord>,
    reporter: Reporter,
    rx: mpsc::Receiver<Control>,
    limits: RestartLimits,
}

impl Task {
    fn update(&self, f: impl FnOnce(&mut ServiceRecord)) {
        let before = self.publish.borrow().status;
        self.publish.send_modify(f);
        let record = self.publish.borrow().clone();
        if record.status != before {
            let event = ServiceEvent {
                target: record.target,
                service: record.service,
                event: format!("service.{}", format!("{:?}", record.status).to_lowercase()),
                detail: serde_json::json!({"pid": record.pid, "port": record.port, "restarts": record.restarts, "failure": record.failure}),
            };
            let _ = self.reporter.events.send(event);
        }
        self.reporter.changed.notify_one();
    }

    fn probe(&self) -> Result<Option<Probe>, super::SupervisorError> {
        let plan = &self.spec.plan;
        let port = plan.port.map(|p| p.assigned);
        let kind = match (&plan.ready, port) {
            (Some(ready), _) => ready.probe.clone(),
            (None, Some(_)) => ProbeKind::Tcp,
            (None, None) => return Ok(None),
        };
        let env = self.spec.base_env.iter().chain(&plan.env).map(|(k, v)| (k.clone(), v.clone())).collect();
        Probe::new(&kind, port, std::path::Path::new(&plan.cwd), env, &self.spec.log_path).map(Some)
    }

    fn timeout(&self) -> Duration {
        self.spec.plan.ready.as_ref().map_or(Duration::from_secs(30), |r| Duration::from_millis(r.timeout_ms))
    }

    async fn run(mut self, adopt: Option<(u32, u64)>) {
        let mut restarts = 0u32;
        let mut adopted = adopt;
        loop {
            let (pid, started, mut proc) = match adopted.take() {
                Some((pid, started)) => (pid, started, Proc::Adopted),
                None => match self.spawn().await {
                    Some(found) => found,
                    None => return self.idle().await,
                },
            };
            let began = Instant::now();
            let ended = if matches!(proc, Proc::Adopted) {
                self.update(|r| {
                    r.pid = Some(pid);
                    r.pid_start_time = Some(started);
                    r.status = ServiceStatus::Ready;
                });
                self.supervise(pid, started, &mut proc).await
            } else {
                match self.become_ready(pid, started, &mut proc).await {
                    Ok(()) => self.supervise(pid, started, &mut proc).await,
                    Err(ended) => ended,
                }
            };
            let code = match ended {
                Ended::Stopped => return,
                Ended::Exited(code) => code,
            };
            signal::reap_leftovers(pid, self.spec.stop_grace).await;
            if began.elapsed() >= self.limits.stable_after {
                restarts = 0;
            }
            let failed = code != Some(0);
            let describe = describe_exit(code, &self.spec.log_path).await;
            let policy = self.spec.plan.restart;
            let wants_restart =
                policy == RestartPolicy::Always || (policy == RestartPolicy::OnFailure && failed);
            let was_ready = self.publish.borrow().status == ServiceStatus::Ready;
            let max_restarts = self.limits.max_restarts;
            if !wants_restart || restarts >= max_restarts || !was_ready {
                let gave_up = wants_restart && restarts >= max_restarts;
                self.update(|r| {
                    r.pid = None;
                    r.exit_code = code;
                    if r.status != ServiceStatus::Failed {
                        r.status =
                            if failed || gave_up { ServiceStatus::Failed } else { ServiceStatus::Exited };
                        if failed {
                            r.failure = Some(if gave_up {
                                format!("{describe}; gave up after {restarts} restarts")
                            } else {
                                describe.clone()
                            });
                        }
                    }
                });
                return self.idle().await;
            }
            restarts += 1;
            tracing::warn!(target = %self.spec.target, service = %self.spec.plan.name, restarts, exit = ?code, "restarting");
            let pause = self.limits.pause(restarts);
            self.update(|r| {
                r.pid = None;
                r.exit_code = code;
                r.status = ServiceStatus::Restarting;
                r.restarts += 1;
                r.failure = Some(format!("{describe}; restarting in {} ms", pause.as_millis()));
            });
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                msg = self.rx.recv() => {
                    if let Some(Control::Stop { done, .. }) = msg {
                        self.update(|r| r.status = ServiceStatus::Stopped);
                        let _ = done.send(());
                    }
                    return;
                }
            }
        }
    }

    /// Spawns the process on a blocking thread (fork and exec take a millisecond; services of one layer spawn
    /// side by side).
    async fn spawn(&self) -> Option<(u32, u64, Proc)> {
        let spec = Arc::clone(&self.spec);
        let spawned = tokio::task::spawn_blocking(move || {
            let plan = &spec.plan;
            spawn::spawn(&spawn::SpawnSpec {
                argv: &plan.argv,
                cwd: std::path::Path::new(&plan.cwd),
                base_env: &spec.base_env,
                env: &plan.env,
                log_path: &spec.log_path,
                user: plan.user.as_deref(),
            })
        })
        .await
        .unwrap_or_else(|e| {
            let program = self.spec.plan.argv.first().cloned().unwrap_or_default();
            Err(super::SupervisorError::Spawn { program, source: std::io::Error::other(e) })
        });
        let child = match spawned {
            Ok(child) => child,
            Err(why) => {
                tracing::warn!(target = %self.spec.target, service = %self.spec.plan.name, reason = %why, "service failed");
                self.update(|r| {
                    r.status = ServiceStatus::Failed;
                    r.failure = Some(why.to_string());
                });
                return None;
            }
        };
        let pid = child.id().unwrap_or_default();
        let started = proc_info::start_time(pid).unwrap_or_default();
        self.update(|r| {
            r.pid = Some(pid);
            r.pid_start_time = Some(started);
            r.status = ServiceStatus::Starting;
            r.started_at = Some(now_rfc3339());
            r.ready_at = None;
            r.exit_code = None;
        });
        Some((pid, started, Proc::Child(child)))
    }

    /// Probes until ready; an exit, a timeout or a stop ends the attempt.
    async fn become_ready(&mut self, pid: u32, started: u64, proc: &mut Proc) -> Result<(), Ended> {
        let probe = match self.probe() {
            Ok(probe) => probe,
            Err(why) => {
                self.fail(why.to_string());
                return Err(self.stop_process(pid, started, proc, true).await);
            }
        };
        let settle = if self.spec.plan.launch == Launch::Direct { SETTLE_DIRECT } else { SETTLE };
        let deadline = Instant::now() + if probe.is_some() { self.timeout() } else { settle };
        let mut pause = Duration::ZERO;
        loop {
            tokio::select! {
                biased;
                msg = self.rx.recv() => {
                    let force = matches!(msg, Some(Control::Stop { force: true, .. }));
                    let ended = self.stop_process(pid, started, proc, force).await;
                    if let Some(Control::Stop { done, .. }) = msg { let _ = done.send(()); }
                    return Err(ended);
                }
                code = wait_exit(proc, pid, started) => {
                    let describe = describe_exit(code, &self.spec.log_path).await;
                    let why = format!("{describe} before it was ready");
                    tracing::warn!(target = %self.spec.target, service = %self.spec.plan.name, reason = %why, "service failed");
                    // One change with the whole truth: whoever sees it failed also sees the process gone.
                    self.update(|r| {
                        r.status = ServiceStatus::Failed;
                        r.failure = Some(why);
                        r.pid = None;
                        r.exit_code = code;
                    });
                    return Err(Ended::Exited(code));
                }
                () = pause_for(pause, probe.is_none()) => {
                    let Some(probe) = &probe else {
                        if Instant::now() >= deadline { self.ready(); return Ok(()); }
                        pause = deadline.saturating_duration_since(Instant::now());
                        continue;
                    };
                    let attempt = probe.attempt().await;
                    let ok = attempt.ok;
                    self.update(|r| {
                        r.probes.push(ProbeRecord { at: now_rfc3339(), ok, detail: attempt.detail.clone() });
                        let excess = r.probes.len().saturating_sub(PROBE_HISTORY);
                        r.probes.drain(..excess);
                    });
                    if ok {
                        self.ready();
                        return Ok(());
                    }
                    if Instant::now() >= deadline {
                        self.fail(format!("not ready after {} ms: {}", self.timeout().as_millis(), attempt.detail));
                        return Err(self.stop_process(pid, started, proc, false).await);
                    }
                    pause = next_pause(pause);
                }
            }
        }
    }

    /// Runs until the process exits or a stop arrives; now and then rotates the log and waits for the strays of the
    /// process's group (orphans of a running service, when this host is PID 1).
    async fn supervise(&mut self, pid: u32, started: u64, proc: &mut Proc) -> Ended {
        let mut chores = tokio::time::interval(Duration::from_secs(5));
        chores.tick().await;
        loop {
            tokio::select! {
                msg = self.rx.recv() => {
                    let force = matches!(msg, Some(Control::Stop { force: true, .. }));
                    let ended = self.stop_process(pid, started, proc, force).await;
                    if let Some(Control::Stop { done, .. }) = msg { let _ = done.send(()); }
                    return ended;
                }
                code = wait_exit(proc, pid, started) => return Ended::Exited(code),
                _ = chores.tick() => self.chores(pid).await,
            }
        }
    }

    /// Rotates the log once it is large and waits for the strays of the process's group. The checks (one `stat`,
    /// one `prctl`) run here; the work (a copy, a `/proc` read) goes to the blocking pool only when there is some,
    /// so a thousand idle services do not keep a blocking thread each awake.
    async fn chores(&self, pid: u32) {
        let large = std::fs::metadata(&self.spec.log_path).is_ok_and(|m| m.len() > logs::ROTATE_BYTES);
        let orphans = reap::receives_orphans();
        if large || orphans {
            let log = self.spec.log_path.clone();
            signal::scan(move || {
                if large {
                    let _ = logs::rotate_if_large(&log, logs::ROTATE_BYTES);
                }
                if orphans {
                    reap::strays(pid);
                }
            })
            .await;
        }
    }

    fn ready(&self) {
        self.update(|r| {
            r.status = ServiceStatus::Ready;
            r.ready_at = Some(now_rfc3339());
            r.failure = None;
        });
    }

    fn fail(&self, why: String) {
        tracing::warn!(target = %self.spec.target, service = %self.spec.plan.name, reason = %why, "service failed");
        self.update(|r| {
            r.status = ServiceStatus::Failed;
            r.failure = Some(why);
        });
    }

    /// SIGTERM to the group and descendants → grace → SIGKILL → reaped; then the same for what is left of the group
    /// (an orphan of it that ignored the signal), and its strays waited for.
    async fn stop_process(&self, pid: u32, started: u64, proc: &mut Proc, force: bool) -> Ended {
        let members = signal::scan(move || proc_info::tree(pid)).await;
        let grace = if force { Duration::ZERO } else { self.spec.stop_grace };
        let polite = if self.spec.plan.stop_signal == "INT" { Signal::SIGINT } else { Signal::SIGTERM };
        signal::signal_all(pid, started, &members, if force { Signal::SIGKILL } else { polite });
        if !wait_ended(proc, pid, started, &members, grace).await {
            signal::signal_all(pid, started, &members, Signal::SIGKILL);
            wait_ended(proc, pid, started, &members, Duration::from_secs(2)).await;
        }
        if let Proc::Child(child) = proc {
            let _ = child.wait().await;
        } else {
            reap::adopted(pid, started);
        }
        // What is left of the group (an orphan that ignored the signal) is killed in one call, without a /proc
        // scan: the group id cannot name anyone else's while the group still has members. Its strays are then
        // waited for when orphans come to this process at all.
        signal::kill_rest_of_group(pid);
        signal::scan(move || reap::strays(pid)).await;
        self.update(|r| {
            if r.status != ServiceStatus::Failed {
                r.status = ServiceStatus::Stopped;
            }
            r.pid = None;
        });
        Ended::Stopped
    }

    /// After the process is gone for good: wait for the stop that removes the task.
    async fn idle(mut self) {
        if let Some(Control::Stop { done, .. }) = self.rx.recv().await {
            self.update(|r| {
                if r.status == ServiceStatus::Exited {
                    r.status = ServiceStatus::Stopped;
                }
            });
            let _ = done.send(());
        }
    }
}

/// How a process ended, in words: its exit code, or the signal; for a shell's 127 the program it could not find.
async fn describe_exit(code: Option<i32>, log: &std::path::Path) -> String {
    match code {
        None => "was killed by a signal".to_owned(),
        Some(127) => {
            let log = log.to_path_buf();
            let tail = signal::scan(move || logs::tail(&log, 5)).await;
            match tail.iter().rev().find_map(|line| missing_program(line)) {
                Some(program) => format!("`{program}`: command not found (exit code 127)"),
                None => "exited with code 127 (a command was not found)".to_owned(),
            }
        }
        Some(c) => format!("exited with code {c}"),
    }
}

/// The program a shell says it could not find: `sh: 1: foo: not found` (dash), `bash: line 1: foo: command not
/// found`, `sh: foo: command not found`.
fn missing_program(line: &str) -> Option<String> {
    let rest = line.strip_suffix(": not found").or_else(|| line.strip_suffix(": command not found"))?;
    let program = rest.rsplit(": ").next()?.trim();
    (!program.is_empty() && !program.contains(' ')).then(|| program.to_owned())
}

/// Waits up to `limit` until the process and `members` (its descendants when it was signalled) are gone. A child
/// of this host is awaited through its exit notification, not polled; only what is left after it (a descendant
/// in another group, an adopted survivor) is polled in `/proc`.
async fn wait_ended(
    proc: &mut Proc,
    pid: u32,
    started: u64,
    members: &[(u32, u64)],
    limit: Duration,
) -> bool {
    let Proc::Child(child) = proc else { return signal::wait_gone(pid, started, members, limit).await };
    let deadline = Instant::now() + limit;
    if tokio::time::timeout(limit, child.wait()).await.is_err() {
        return false;
    }
    let rest: Vec<(u32, u64)> = members.iter().copied().filter(|(p, _)| *p != pid).collect();
    rest.is_empty()
        || signal::wait_gone(pid, started, &rest, deadline.saturating_duration_since(Instant::now())).await
}

/// Waits for the process to exit: by reaping a child, or by polling `/proc` for an adopted survivor (and reaping
/// it when it was handed to this process).
async fn wait_exit(proc: &mut Proc, pid: u32, started: u64) -> Option<i32> {
    match proc {
        Proc::Child(child) => child.wait().await.ok().and_then(|s| s.code()),
        Proc::Adopted => {
            while proc_info::is_same_process(pid, started) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            reap::adopted(pid, started);
            None
        }
    }
}

/// Sleeps for `pause`; to the microsecond when `precise` (a settle: tokio's timer counts whole milliseconds and
/// ends a 1 ms sleep after 1 to 2 ms, which was a third of a one-service `start`), on a timer descriptor of its
/// own. Where one cannot be made, tokio's timer.
async fn pause_for(pause: Duration, precise: bool) {
    if pause.is_zero() {
        return;
    }
    if precise && let Some(timer) = precise_timer(pause) {
        // Readable once it has expired; an error leaves only the coarse timer to wait on.
        if timer.readable().await.is_ok() {
            return;
        }
    }
    tokio::time::sleep(pause).await;
}

/// A one-shot monotonic timer descriptor expiring after `pause`, registered with the runtime.
#[allow(unsafe_code)]
fn precise_timer(pause: Duration) -> Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
    let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
    let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, flags).ok()?;
    timer.set(Expiration::OneShot(TimeSpec::from_duration(pause)), TimerSetTimeFlags::empty()).ok()?;
    let fd = std::os::fd::OwnedFd::from(timer);
    // SAFETY: the `AsyncFd` owns the descriptor: it stays open, and the same, until the `AsyncFd` is dropped.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
}

#[cfg(test)]
mod tests {
    use envctl_contracts::state::ProcessKind;

    use super::*;

    fn spec(dir: &std::path::Path, command: &str, restart: RestartPolicy) -> ServiceSpec {
        ServiceSpec {
            kind: ProcessKind::Service,
            target: "main".into(),
            plan: ServicePlan {
                restart,
                stop_grace_secs: 1,
                launch: Launch::Shell,
                ..ServicePlan::new(
                    "svc",
                    &dir.display().to_string(),
                    vec!["/bin/sh".into(), "-c".into(), command.into()],
                )
            },
            base_env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
            log_path: dir.join("svc.log"),
            stop_grace: Duration::from_secs(1),
        }
    }

    fn reporter() -> Reporter {
        Reporter { changed: Arc::new(Notify::new()), events: mpsc::unbounded_channel().0 }
    }

    /// Waits (at most 10 s) until the record satisfies `done`; returns it.
    async fn until(handle: &ServiceHandle, done: impl Fn(&ServiceRecord) -> bool) -> ServiceRecord {
        let mut watch = handle.watch();
        let wait = async {
            loop {
                let record = watch.borrow_and_update().clone();
                if done(&record) {
                    return record;
                }
                if watch.changed().await.is_err() {
                    return watch.borrow().clone();
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait).await.expect("the record got there in time")
    }

    #[test]
    fn the_missing_program_is_read_from_each_shells_words() {
        assert_eq!(missing_program("sh: 1: nosuchbinary: not found").as_deref(), Some("nosuchbinary"));
        assert_eq!(
            missing_program("bash: line 1: nosuchbinary: command not found").as_deref(),
            Some("nosuchbinary")
        );
        assert_eq!(missing_program("sh: nosuchbinary: command not found").as_deref(), Some("nosuchbinary"));
        assert_eq!(missing_program("all tests passed"), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_precise_pause_lasts_at_least_its_duration_on_a_timer_descriptor() {
        let pause = Duration::from_micros(1_500);
        assert!(precise_timer(pause).is_some(), "a timer descriptor can be made here");
        for precise in [true, false] {
            let began = Instant::now();
            pause_for(pause, precise).await;
            assert!(began.elapsed() >= pause, "precise={precise}: ended after {:?}", began.elapsed());
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_missing_program_is_named_as_not_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tracker = tokio_util::task::TaskTracker::new();
        let handle = launch(
            spec(dir.path(), "nosuchbinary-envctl --flag", RestartPolicy::No),
            None,
            reporter(),
            &tracker,
        );
        let failed = until(&handle, |r| r.status == ServiceStatus::Failed && r.pid.is_none()).await;
        let failure = failed.failure.unwrap_or_default();
        assert!(failure.starts_with("`nosuchbinary-envctl`: command not found (exit code 127)"), "{failure}");
    }

    /// Which of `pids` are children of this process that exited and were never waited for.
    fn unreaped(pids: &[u32]) -> Vec<u32> {
        let me = std::process::id();
        pids.iter().copied().filter(|pid| proc_info::zombie(*pid).is_some_and(|s| s.ppid == me)).collect()
    }

    /// The pids a command appended to `file`, one a line.
    fn pids_in(file: &std::path::Path) -> Vec<u32> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Makes this process the subreaper of its descendants while it lives, as envctl's host is when it runs as
    /// PID 1 of a container: a process whose parent dies becomes this process's child.
    struct Subreaper;

    impl Subreaper {
        fn new() -> Self {
            nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
            Self
        }
    }

    impl Drop for Subreaper {
        fn drop(&mut self) {
            let _ = nix::sys::prctl::set_child_subreaper(false);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn five_hundred_restarts_of_a_crashing_service_leave_no_zombie() {
        const RESTARTS: u32 = 500;
        let _subreaper = Subreaper::new();
        let dir = tempfile::tempdir().expect("temp dir");
        // The service leaves a shell behind (started by a subshell that exits at once, so it is handed to this
        // process), blocks on a FIFO until its probe opens it and exits at once: it is ready (the probe passed)
        // before it crashes, every time, without a timing race.
        nix::unistd::mkfifo(&dir.path().join("go"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let command = "echo $$ >> services; (sh -c 'exit 0' & echo $! >> strays); read x < go; exit 1";
        let mut spec = spec(dir.path(), command, RestartPolicy::Always);
        spec.plan.ready = Some(envctl_contracts::config::ReadyProbe {
            probe: ProbeKind::Exec { command: "echo $$ >> probes; : > go".into() },
            timeout_ms: 10_000,
        });
        let limits = RestartLimits {
            max_restarts: u32::MAX,
            first_pause: Duration::ZERO,
            max_pause: Duration::ZERO,
            stable_after: Duration::MAX,
        };
        let tracker = tokio_util::task::TaskTracker::new();
        let handle = launch_with(spec, None, reporter(), &tracker, limits);
        let mut watch = handle.watch();
        let restarted = tokio::time::timeout(Duration::from_secs(60), async {
            while watch.borrow_and_update().restarts < RESTARTS {
                watch.changed().await.expect("the task runs");
            }
        })
        .await;
        let record = handle.record();
        handle.stop(true).await;
        assert!(restarted.is_ok(), "{RESTARTS} restarts within 60 s: {record:?}");
        let spawned: Vec<u32> =
            ["services", "probes", "strays"].iter().flat_map(|f| pids_in(&dir.path().join(f))).collect();
        assert!(spawned.len() >= 3 * RESTARTS as usize, "{} processes recorded", spawned.len());
        // A child that just exited is a zombie until its waiter runs; one that nobody waits for stays one.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut zombies = unreaped(&spawned);
        while !zombies.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            zombies = unreaped(&spawned);
        }
        let some = &zombies[..zombies.len().min(5)];
        assert_eq!(zombies.len(), 0, "unreaped children after {RESTARTS} restarts, among them {some:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_process_that_runs_becomes_ready_and_a_stop_leaves_nothing_running() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tracker = tokio_util::task::TaskTracker::new();
        let handle =
            launch(spec(dir.path(), "exec sleep 1000", RestartPolicy::No), None, reporter(), &tracker);
        let ready = until(&handle, |r| r.status == ServiceStatus::Ready).await;
        let (pid, started) = (ready.pid.expect("pid"), ready.pid_start_time.expect("start time"));
        assert!(proc_info::is_same_process(pid, started));
        handle.stop(false).await;
        assert_eq!(handle.record().status, ServiceStatus::Stopped);
        assert!(!proc_info::is_same_process(pid, started), "the process is gone after the stop");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_exit_before_ready_fails_with_its_code_and_is_not_restarted_under_no() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tracker = tokio_util::task::TaskTracker::new();
        let handle = launch(spec(dir.path(), "exit 3", RestartPolicy::No), None, reporter(), &tracker);
        // The final record: failed, and the process's exit recorded.
        let failed = until(&handle, |r| r.status == ServiceStatus::Failed && r.pid.is_none()).await;
        assert_eq!(failed.exit_code, Some(3), "{failed:?}");
        assert!(failed.failure.as_deref().is_some_and(|f| f.contains('3')), "{failed:?}");
        assert_eq!(failed.restarts, 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn on_failure_restarts_a_crashing_ready_service_and_counts_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let marker = dir.path().join("ran-once");
        let command = format!(
            "if [ -e {m} ]; then exec sleep 1000; else touch {m}; sleep 0.2; exit 1; fi",
            m = marker.display()
        );
        let tracker = tokio_util::task::TaskTracker::new();
        let handle = launch(spec(dir.path(), &command, RestartPolicy::OnFailure), None, reporter(), &tracker);
        let restarted = until(&handle, |r| r.restarts >= 1 && r.status == ServiceStatus::Ready).await;
        assert_eq!(restarted.restarts, 1, "{restarted:?}");
        handle.stop(true).await;
    }
}
