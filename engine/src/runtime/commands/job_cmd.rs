//! `envctl job input | output | context | condition | var … | progress | log`: the runtime API's client for a
//! job's script in any language. It reads `ENVCTL_RUNTIME_URL`, `ENVCTL_EXECUTION_ID` and
//! `ENVCTL_EXECUTION_TOKEN` and nothing else (no configuration is loaded, so a call costs a process start and one
//! loopback request). Exit 0 done, 1 error, 3 not found (`var get`, `var exists`, `var delete` of a missing one).

use envctl_contracts::runtime_api::VariableValue;

use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::runtime_api::client::{Client, ClientError};
use crate::runtime_api::{EXECUTION_ID_VAR, EXECUTION_TOKEN_VAR, URL_VAR};

/// `envctl job …`.
#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum JobCommand {
    /// Print the job's input (JSON; `null` when it has none).
    Input,
    /// Record the job's output (JSON) on its record; the jobs after it read it in their context.
    Output {
        /// The output, as JSON.
        json: String,
    },
    /// Print the job's context: job, target, attempt, repository, worker, the parents' outputs (JSON).
    Context,
    /// Say whether the jobs after this one may run.
    Condition {
        /// `true` or `false`.
        #[arg(value_parser = ["true", "false"])]
        value: String,
    },
    /// Read and change variables kept across runs.
    #[command(subcommand)]
    Var(VarCommand),
    /// Report progress (`jobs show` shows it while the job runs).
    Progress {
        /// 0–100.
        percent: f64,
        /// The current step.
        step: Option<String>,
        /// Free text.
        #[arg(long)]
        detail: Option<String>,
    },
    /// Add a line to the job's log.
    Log {
        /// The line.
        #[arg(required = true, num_args = 1..)]
        message: Vec<String>,
    },
}

/// `envctl job var …`.
#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum VarCommand {
    /// Print a variable's value (exit 3 when it does not exist).
    Get(VarKey),
    /// Set a variable.
    Set {
        #[command(flatten)]
        key: VarKey,
        /// Its value.
        value: String,
    },
    /// Add to a variable atomically (1 by default) and print the new value.
    Incr {
        #[command(flatten)]
        key: VarKey,
        /// How much to add.
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        by: i64,
    },
    /// Exit 0 when a variable exists, 3 when not.
    Exists(VarKey),
    /// Delete a variable (exit 3 when it did not exist).
    Delete(VarKey),
}

// A variable's name, and the target it belongs to.
#[derive(Debug, clap::Args)]
pub struct VarKey {
    /// Its name.
    pub key: String,
    /// A variable of this target instead of the repository's.
    #[arg(long)]
    pub target: Option<String>,
}

fn need<'a>(rt: &'a EngineRuntime, name: &'static str) -> Result<&'a str, EngineError> {
    rt.env().get(name).ok_or_else(|| EngineError::Failed(ClientError::NotInJob(name).to_string()))
}

/// `%`-encodes a path segment or query value.
fn encode(text: &str) -> String {
    use std::fmt::Write as _;
    text.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

fn var_path(execution: &str, key: &VarKey, op: &str) -> String {
    let query = key.target.as_deref().map(|t| format!("?target={}", encode(t))).unwrap_or_default();
    format!("/executions/{}/variables/{}{op}{query}", encode(execution), encode(&key.key))
}

/// Runs a `job` subcommand.
pub fn exec(rt: &EngineRuntime, command: &JobCommand) -> Result<Outcome, EngineError> {
    let client = Client::new(need(rt, URL_VAR)?, need(rt, EXECUTION_TOKEN_VAR)?)
        .map_err(|e| EngineError::Failed(e.to_string()))?;
    let execution = need(rt, EXECUTION_ID_VAR)?;
    let printer = rt.printer();
    let at = |path: &str| format!("/executions/{}{path}", encode(execution));
    let result = match command {
        JobCommand::Input => client.call("GET", &at("/input"), None).map(|body| printer.data(&body)),
        JobCommand::Context => client.call("GET", &at("/context"), None).map(|body| printer.data(&body)),
        JobCommand::Output { json } => {
            serde_json::from_str::<serde_json::Value>(json).map_err(|e| {
                EngineError::Failed(format!(
                    "the output is not JSON: {e}\nhint: quote it, e.g. envctl job output '{{\"done\": true}}'"
                ))
            })?;
            client.call("POST", &at("/output"), Some(json)).map(drop)
        }
        JobCommand::Condition { value } => {
            let body = serde_json::json!({ "condition": value == "true" }).to_string();
            client.call("POST", &at("/condition"), Some(&body)).map(drop)
        }
        JobCommand::Progress { percent, step, detail } => {
            let body = serde_json::json!({ "percent": percent, "step": step, "detail": detail }).to_string();
            client.call("POST", &at("/progress"), Some(&body)).map(drop)
        }
        JobCommand::Log { message } => {
            let body = serde_json::json!({ "message": message.join(" ") }).to_string();
            client.call("POST", &at("/logs"), Some(&body)).map(drop)
        }
        JobCommand::Var(var) => match var {
            VarCommand::Get(key) => client.call("GET", &var_path(execution, key, ""), None).map(|body| {
                let value = serde_json::from_str::<VariableValue>(&body).map_or(body, |v| v.value);
                printer.data(&value);
            }),
            VarCommand::Exists(key) => client.call("GET", &var_path(execution, key, ""), None).map(drop),
            VarCommand::Set { key, value } => {
                let body = serde_json::json!({ "value": value }).to_string();
                client.call("PUT", &var_path(execution, key, ""), Some(&body)).map(drop)
            }
            VarCommand::Incr { key, by } => {
                let body = serde_json::json!({ "by": by }).to_string();
                client.call("POST", &var_path(execution, key, "/incr"), Some(&body)).map(|body| {
                    let value = serde_json::from_str::<VariableValue>(&body).map_or(body, |v| v.value);
                    printer.data(&value);
                })
            }
            VarCommand::Delete(key) => client.call("DELETE", &var_path(execution, key, ""), None).map(drop),
        },
    };
    match result {
        Ok(()) => Ok(Outcome::Success),
        Err(e) if e.is_not_found() => {
            if !matches!(command, JobCommand::Var(VarCommand::Exists(_))) {
                printer.error(&e.to_string());
            }
            Ok(Outcome::NotFound)
        }
        Err(e) => Err(EngineError::Failed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn names_are_percent_encoded() {
        assert_eq!(encode("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(encode("plain-name_1.x"), "plain-name_1.x");
    }
}
