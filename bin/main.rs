//! The envctl binary: parse, build the runtime, run the command, turn the outcome into an exit code.

#![allow(clippy::print_stderr)]

use std::process::ExitCode;

use envctl_engine::{EngineRuntime, completion_env, exit_code, parse};

fn main() -> ExitCode {
    // A Tab in a shell set up by `envctl completions`: print the candidates and exit.
    completion_env().complete();
    let cli = match parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err((err, code)) => {
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    let runtime = EngineRuntime::from_process(&cli);
    let result = runtime.run(&cli.command);
    if let Err(err) = &result {
        eprintln!("error: {err}");
    }
    ExitCode::from(exit_code(&result))
}
