//! `envctl show-config [--json]`: the effective configuration and the source of every value.

use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::ui::Table;

// Arguments of `show-config`.
#[derive(Debug, clap::Args)]
pub struct ShowConfigArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Prints the effective configuration.
pub fn exec(rt: &EngineRuntime, args: &ShowConfigArgs) -> Result<Outcome, EngineError> {
    let report = rt.settings()?.report_view();
    if args.json {
        rt.printer().json(&report);
        // The process ends next: freeing a report of many services one allocation at a time costs more than
        // building it did, and the operating system takes the memory back at once.
        std::mem::forget(report);
        return Ok(Outcome::Success);
    }
    let file = report.config_file.as_deref().unwrap_or("(none: defaults only)");
    let format = format!("{:?}", report.format).to_lowercase();
    let mut out = format!("repository: {}\nconfig file: {file} ({format})\n\n", report.repo_root);
    let mut table = Table::new(&["KEY", "VALUE", "SOURCE"]);
    let _ = report.values.try_for_each(|key, value, source| {
        table.row(vec![key.to_owned(), value.to_string(), source.to_owned()]);
        Ok::<(), std::convert::Infallible>(())
    });
    out.push_str(&table.render());
    rt.printer().data(&out);
    Ok(Outcome::Success)
}
