//! Live progress on stderr while a command waits (`start`, `resume`, `restart`, `test`, `migrate`,
//! `worker --drain`).
//!
//! On a terminal: one line per target/service with a spinner, its phase and the time it has taken, each replaced
//! by its result when it ends (indicatif). Anywhere else: one plain line per event, nothing redrawn. Colour only
//! when allowed (`--no-color`, `NO_COLOR`), and nothing at all with `--quiet`.

use std::collections::HashMap;
use std::time::Duration;

use envctl_contracts::control::Progress;
use envctl_contracts::state::ServiceStatus;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Printer, Verbosity};

/// Where progress goes: bars on a terminal, lines otherwise.
#[derive(Debug)]
pub struct LiveProgress {
    printer: Printer,
    bars: Option<Bars>,
}

struct Bars {
    multi: MultiProgress,
    lines: HashMap<String, ProgressBar>,
    running: ProgressStyle,
    done: ProgressStyle,
}

impl std::fmt::Debug for Bars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bars").field("lines", &self.lines.len()).finish_non_exhaustive()
    }
}

impl LiveProgress {
    /// Progress for `printer`: bars when `terminal` (stderr is one) and not quiet, coloured when `color`.
    pub fn new(printer: Printer, terminal: bool, color: bool) -> Self {
        let bars = (terminal && printer.verbosity() >= Verbosity::Normal).then(|| {
            let spinner = if color { "{spinner:.cyan}" } else { "{spinner}" };
            let running =
                ProgressStyle::with_template(&format!("  {spinner} {{prefix:<28}} {{msg}} {{elapsed:>4}}"))
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
            let done = ProgressStyle::with_template("  {prefix:<30} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                lines: HashMap::new(),
                running,
                done,
            }
        });
        Self { printer, bars }
    }

    /// Whether it draws bars.
    pub fn is_live(&self) -> bool {
        self.bars.is_some()
    }

    /// A step the host reported for a start, resume or restart.
    pub fn host_step(&mut self, p: &Progress) {
        let label = format!("{}/{}", p.target, p.service);
        if let Some(output) = &p.output {
            self.println(&format!("  {label} | {output}"));
            return;
        }
        if self.bars.is_none() {
            super::lifecycle::show_progress(self.printer, p);
            return;
        }
        let detail = if p.detail.is_empty() { String::new() } else { format!(" {}", p.detail) };
        match p.status {
            ServiceStatus::Ready => self.finish(&label, &format!("ready{detail} ({} ms)", p.elapsed_ms)),
            ServiceStatus::Failed => self.finish(&label, &format!("FAILED: {}", p.detail)),
            ServiceStatus::Stopped | ServiceStatus::Exited => {
                self.finish(&label, &format!("{:?}{detail}", p.status).to_lowercase());
            }
            ServiceStatus::Pending => self.phase(&label, "pending"),
            ServiceStatus::Starting => self.phase(&label, &format!("starting{detail}")),
            ServiceStatus::Restarting => self.phase(&label, &format!("restarting{detail}")),
        }
    }

    /// `label` is in `phase` now (a line with a spinner; on no terminal, a plain line).
    pub fn phase(&mut self, label: &str, phase: &str) {
        let Some(bars) = &mut self.bars else {
            self.printer.note(&format!("  {phase:<9} {label}"));
            return;
        };
        let line = bars.lines.entry(label.to_owned()).or_insert_with(|| {
            let bar = bars.multi.add(ProgressBar::new_spinner());
            bar.set_style(bars.running.clone());
            bar.set_prefix(label.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        line.set_message(phase.trim().to_owned());
    }

    /// `label` ended with `result` (its line replaced by it; on no terminal, a plain line).
    pub fn finish(&mut self, label: &str, result: &str) {
        let Some(bars) = &mut self.bars else {
            self.printer.note(&format!("  {result:<9} {label}"));
            return;
        };
        let bar = bars.lines.remove(label).unwrap_or_else(|| {
            let bar = bars.multi.add(ProgressBar::new_spinner());
            bar.set_prefix(label.to_owned());
            bar
        });
        bar.set_style(bars.done.clone());
        bar.finish_with_message(result.to_owned());
    }

    /// A line printed above the bars (or plainly).
    pub fn println(&self, line: &str) {
        match &self.bars {
            Some(bars) => {
                if self.printer.verbosity() >= Verbosity::Normal {
                    let _ = bars.multi.println(line);
                }
            }
            None => self.printer.note(line),
        }
    }

    /// Clears what still spins (a command that ended before every line did).
    pub fn clear(&mut self) {
        if let Some(bars) = &mut self.bars {
            for (_, bar) in bars.lines.drain() {
                bar.finish_and_clear();
            }
        }
    }
}

impl Drop for LiveProgress {
    fn drop(&mut self) {
        self.clear();
    }
}
