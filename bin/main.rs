//! The envctl binary: parse, build the runtime, run the command, turn the outcome into an exit code.

use std::process::ExitCode;

use envctl_engine::{completion_env, parse, run_cli};

fn main() -> ExitCode {
    one_malloc_arena();
    // A Tab in a shell set up by `envctl completions`: print the candidates and exit.
    completion_env().complete();
    let cli = match parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err((err, code)) => {
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    ExitCode::from(run_cli(&cli))
}

/// glibc gives each thread that allocates an arena of its own (up to eight per core), and each arena keeps a few
/// hundred KiB that the other threads never reuse: four of them were 1 MiB of an idle worker's 2.3 MiB of heap.
/// envctl's threads (the blocking pool beside one async thread) allocate little and seldom at the same moment, so
/// they share the main arena.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn one_malloc_arena() {
    // SAFETY: `mallopt` sets a tunable of the allocator; called first thing in `main`, before any other thread
    // exists or anything else calls into malloc's settings.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}
