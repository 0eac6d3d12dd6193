//! `envctl vars list | get | set | delete`: the variables jobs keep across runs, in the repository's job store.

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::jobs::VariableList;

use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::ui::Table;

/// `envctl vars …`.
#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum VarsCommand {
    /// List the variables (the repository's, then each target's).
    List(ListArgs),
    /// Print a variable's value (exit 3 when it does not exist).
    Get(KeyArgs),
    /// Set a variable.
    Set(SetArgs),
    /// Delete a variable (exit 3 when it did not exist).
    Delete(KeyArgs),
}

// Arguments of `vars list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this target's.
    #[arg(long)]
    pub target: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

// A variable's name and target.
#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    /// Its name.
    pub key: String,
    /// A variable of this target instead of the repository's.
    #[arg(long)]
    pub target: Option<String>,
}

// Arguments of `vars set`.
#[derive(Debug, clap::Args)]
pub struct SetArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// Its value.
    pub value: String,
}

fn checked(key: &KeyArgs) -> Result<(), EngineError> {
    if key.key.is_empty() || key.key.contains('\t') {
        return Err(EngineError::Failed(format!("variable name `{}`: not empty, no tab", key.key)));
    }
    if let Some(target) = &key.target {
        crate::targets::validate_name(target)?;
    }
    Ok(())
}

/// Runs a `vars` subcommand.
pub fn exec(rt: &EngineRuntime, command: &VarsCommand) -> Result<Outcome, EngineError> {
    let store = rt.job_store()?;
    let printer = rt.printer();
    match command {
        VarsCommand::List(ListArgs { target, json }) => {
            let variables: Vec<_> =
                store.var_list()?.into_iter().filter(|v| target.is_none() || v.target == *target).collect();
            if *json {
                printer.json(&VariableList { schema_version: SCHEMA_VERSION, variables });
            } else {
                let mut table = Table::new(&["TARGET", "KEY", "VALUE"]);
                for v in variables {
                    table.row(vec![v.target.unwrap_or_else(|| "-".into()), v.key, v.value]);
                }
                printer.data(&table.render());
            }
            Ok(Outcome::Success)
        }
        VarsCommand::Get(key) => {
            checked(key)?;
            if let Some(value) = store.var_get(key.target.as_deref(), &key.key)? {
                printer.data(&value);
                Ok(Outcome::Success)
            } else {
                printer.error(&format!("no variable `{}`\nhint: `envctl vars list` shows them", key.key));
                Ok(Outcome::NotFound)
            }
        }
        VarsCommand::Set(SetArgs { key, value }) => {
            checked(key)?;
            store.var_set(key.target.as_deref(), &key.key, value)?;
            Ok(Outcome::Success)
        }
        VarsCommand::Delete(key) => {
            checked(key)?;
            if store.var_delete(key.target.as_deref(), &key.key)? {
                Ok(Outcome::Success)
            } else {
                printer.error(&format!("no variable `{}`\nhint: `envctl vars list` shows them", key.key));
                Ok(Outcome::NotFound)
            }
        }
    }
}
