//! How a command that finds no host starts one, detached: its stdin a pipe the command holds (its claim), its stdout
//! a pipe that carries the one readiness line, its stderr appended to the host log.
//!
//! The claim lets a command that ends before it sent its request (killed, or interrupted) leave nothing behind: the
//! host reads end of file on its stdin when the command is gone, and exits then if nothing was given it to run
//! ([`Claim`]).
//!
//! A command that runs on one thread forks, and the child becomes the host as `envctl host -C <repo>` would. That
//! skips a program start: the kernel's exec, the dynamic loader's relocations, glibc's CPU-feature probe (CPUID
//! traps to the hypervisor on virtual machines) and clap — about 1.5 ms of a cold `start` on this kind of machine,
//! where the whole host is ready 2 ms after a spawn. The child keeps nothing of the command but its memory, which
//! it never reads: it builds its runtime afresh from the environment, titles itself `envctl host -C <repo>` (what
//! `ps` and a debug bundle show), and exits without returning into the command. A command with more than one
//! thread, or that has built its async runtime, spawns `<exe> host -C <repo>` instead: a fork keeps only the
//! thread that called it, and a runtime's process-wide parts would outlive the descriptors they hold. Either way
//! the host's first act is [`close_inherited`].

use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::unistd::Pid;

/// A host just started: the pipe its readiness line comes on, the command's claim on it, and the process to wait
/// for when it exits without saying it serves.
#[derive(Debug)]
pub struct Started {
    /// The read end of the host's stdout.
    pub ready: File,
    /// The write end of the host's stdin: while it is open, the host waits for this command's request.
    pub claim: OwnedFd,
    /// The host's process.
    pub process: Process,
}

/// How the host's process was made.
#[derive(Debug)]
pub enum Process {
    /// Forked from this command.
    Forked(Pid),
    /// Spawned as `<exe> host -C <repo>`.
    Spawned(std::process::Child),
}

impl Process {
    /// Waits for the host to exit; how it ended, for the error that says it did not start.
    pub fn wait(self) -> std::io::Result<String> {
        match self {
            Process::Spawned(mut child) => child.wait().map(|status| status.to_string()),
            Process::Forked(pid) => match nix::sys::wait::waitpid(pid, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => Ok(format!("exit status: {code}")),
                Ok(nix::sys::wait::WaitStatus::Signaled(_, signal, _)) => Ok(format!("signal: {signal}")),
                Ok(other) => Ok(format!("{other:?}")),
                Err(e) => Err(e.into()),
            },
        }
    }
}

/// Starts the host of `repo` with its stderr appended to `log_path`: forked when this process can be ([`forkable`]:
/// the child runs `host` with `repo` and exits with what it returns), otherwise `<exe> host -C <repo>` spawned.
pub fn start(exe: &Path, repo: &Path, log_path: &Path, host: fn(&Path) -> u8) -> std::io::Result<Started> {
    if let Some(dir) = log_path.parent() {
        crate::state::create_private_dir_all(dir)?;
    }
    let log = crate::state::open_private_append(log_path)?;
    if forkable() {
        return fork(repo, &log, host);
    }
    let mut child = std::process::Command::new(exe)
        .args(["host".as_ref(), "-C".as_ref(), repo.as_os_str()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()?;
    let no_pipe = || std::io::Error::other("no pipe to the host");
    let stdout = child.stdout.take().ok_or_else(no_pipe)?;
    let claim = child.stdin.take().ok_or_else(no_pipe)?;
    Ok(Started {
        ready: File::from(OwnedFd::from(stdout)),
        claim: OwnedFd::from(claim),
        process: Process::Spawned(child),
    })
}

/// Whether a fork of this process can become the host: it runs on one thread (a fork copies only the calling
/// one) and has built no async runtime (whose process-wide parts, such as the signal pipe, hold descriptors the
/// host closes first thing and would then build its own runtime on).
fn forkable() -> bool {
    !ASYNC_RUNTIME_BUILT.load(Ordering::Relaxed)
        && std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1)
}

static ASYNC_RUNTIME_BUILT: AtomicBool = AtomicBool::new(false);

/// Notes that this process builds an async runtime: a host it starts from now on is spawned, not forked.
pub fn building_async_runtime() {
    ASYNC_RUNTIME_BUILT.store(true, Ordering::Relaxed);
}

#[allow(unsafe_code)]
fn fork(repo: &Path, log: &File, host: fn(&Path) -> u8) -> std::io::Result<Started> {
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from);
    let (ready, ready_write) = pipe()?;
    let (claim_read, claim) = pipe()?;
    // What the command has buffered must not be written a second time by the child.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: this process has one thread (checked just above, and nothing here starts one), so the child is a
    // whole copy of it: no lock is held by a thread that does not exist in the child.
    match unsafe { nix::unistd::fork() }.map_err(std::io::Error::from)? {
        nix::unistd::ForkResult::Parent { child } => {
            Ok(Started { ready: File::from(ready), claim, process: Process::Forked(child) })
        }
        nix::unistd::ForkResult::Child => {
            drop(ready);
            drop(claim);
            let code = become_host(repo, &claim_read, &ready_write, log, host);
            let _ = std::io::stdout().flush();
            #[allow(clippy::exit)] // the child must never return into the command it was forked from
            std::process::exit(i32::from(code))
        }
    }
}

/// In the forked child: the host's standard descriptors and its title; then the host.
#[allow(unsafe_code)]
fn become_host(repo: &Path, claim: &OwnedFd, ready: &OwnedFd, log: &File, host: fn(&Path) -> u8) -> u8 {
    for (from, to) in [(claim.as_raw_fd(), 0), (ready.as_raw_fd(), 1), (log.as_raw_fd(), 2)] {
        // SAFETY: plain system calls on descriptors this process owns; dup2 clears close-on-exec on the copy.
        if unsafe { libc::dup2(from, to) } < 0 {
            return 1;
        }
    }
    retitle(repo);
    std::panic::catch_unwind(|| host(repo)).unwrap_or(101)
}

/// Closes every descriptor above stderr: what the host's first act is, forked or spawned, so that it keeps
/// nothing of the command that started it (its files, sockets and locks, and a pipe its own caller left open).
#[allow(unsafe_code)]
pub fn close_inherited() {
    // SAFETY: a system call on descriptor numbers; nothing in the host uses a descriptor it did not open itself.
    if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } == 0 {
        return;
    }
    // Kernels before 5.9: each descriptor `/proc/self/fd` lists.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).filter(|fd| *fd > 2).collect()
        })
        .unwrap_or_default();
    for fd in fds {
        // SAFETY: as above; the listing's own descriptor is among them, already closed (EBADF).
        unsafe { libc::close(fd) };
    }
}

/// Rewrites this process's command line (what `/proc/<pid>/cmdline`, `ps` and a debug bundle show) to
/// `<argv0> host -C <repo>`, or `<argv0> host` when that does not fit where the command's own arguments were.
#[allow(unsafe_code)]
fn retitle(repo: &Path) {
    use std::os::unix::ffi::OsStrExt as _;
    let Some((start, end)) = argument_area() else { return };
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let long = [argv0.as_bytes(), b"host", b"-C", repo.as_os_str().as_bytes()];
    let title = [&long[..], &long[..2]]
        .into_iter()
        .map(|words| words.iter().flat_map(|w| w.iter().copied().chain([0])).collect::<Vec<u8>>())
        .find(|title| title.len() <= end - start);
    let Some(title) = title else { return };
    // SAFETY: [start, end) is this process's argument area, from its own `/proc/self/stat`: writable memory at the
    // top of the stack that holds the argument strings and nothing else. The title fits, the rest is zeroed, so
    // every argument pointer still finds a terminated string inside the area.
    unsafe {
        std::ptr::copy_nonoverlapping(title.as_ptr(), start as *mut u8, title.len());
        std::ptr::write_bytes((start + title.len()) as *mut u8, 0, end - start - title.len());
    }
}

/// The start and end of this process's argument strings (fields 48 and 49 of `/proc/self/stat`).
fn argument_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold anything: the state is field 3.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().skip(48 - 3);
    let arg_start = fields.next()?.parse().ok()?;
    let arg_end: usize = fields.next()?.parse().ok()?;
    (arg_start != 0 && arg_end > arg_start).then_some((arg_start, arg_end))
}

/// The host's side of the claim of the command that started it: its stdin, when that is a pipe. A host started
/// some other way (by hand, from a terminal) has none.
#[derive(Debug)]
pub struct Claim(tokio::io::unix::AsyncFd<OwnedFd>);

impl Claim {
    /// Takes the host's stdin as its claim, when it is a pipe. Must run on the host's runtime.
    #[allow(unsafe_code)]
    pub fn from_stdin() -> Option<Self> {
        use std::os::fd::AsFd as _;
        let stdin = std::io::stdin();
        let stat = nix::sys::stat::fstat(stdin.as_fd()).ok()?;
        if stat.st_mode & libc::S_IFMT != libc::S_IFIFO {
            return None;
        }
        let fd = stdin.as_fd().try_clone_to_owned().ok()?;
        // Only this host reads the pipe; the command's end is its own description, which this leaves blocking.
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).ok()?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags)).ok()?;
        // SAFETY: the `AsyncFd` owns the descriptor: it stays open, and the same, until the `AsyncFd` is dropped.
        unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .ok()
            .map(Self)
    }

    /// Waits until the command lets go of its claim: it closed its end, or it exited (killed or not). Then the
    /// host's stdin becomes `/dev/null`, so nothing the host starts later inherits the pipe.
    pub async fn released(self) {
        let mut buf = [0u8; 64];
        loop {
            let Ok(mut ready) = self.0.readable().await else { break };
            match ready.try_io(|fd| nix::unistd::read(fd.get_ref(), &mut buf).map_err(std::io::Error::from)) {
                // Bytes mean nothing; the claim lasts until end of file.
                Ok(Ok(n)) if n > 0 => {}
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(_) => break,
                Err(_would_block) => {}
            }
        }
        drop(self);
        stdin_from_null();
    }
}

/// Points the host's stdin at `/dev/null`.
#[allow(unsafe_code)]
fn stdin_from_null() {
    if let Ok(null) = File::open("/dev/null") {
        // SAFETY: a system call on a descriptor this process owns and on its own stdin, which nothing reads.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
}
