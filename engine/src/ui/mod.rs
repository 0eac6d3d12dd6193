//! Output: [`Printer`] (stdout carries data — tables or `--json` — and stderr carries messages for people) and
//! a plain-text [`Table`]. The only module that writes to the terminal.

#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod dashboard;
pub mod lifecycle;
pub mod progress;

/// `text` without ANSI escape sequences (colours, cursor moves, titles): CSI `ESC [ … final`, OSC `ESC ] … BEL`
/// or `ESC \\`, and two-byte escapes.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            // Character set designations take one more byte (`ESC ( B`).
            Some('(' | ')' | '*' | '+') => {
                chars.next();
            }
            _ => {}
        }
    }
    out
}

use std::io::{IsTerminal as _, Write as _};

use serde::Serialize;

/// How chatty messages on stderr are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Verbosity {
    /// Errors only.
    Quiet,
    /// Errors, warnings and notes.
    #[default]
    Normal,
    /// Everything.
    Verbose,
}

/// Writes data to stdout and messages to stderr.
#[derive(Debug, Clone, Copy, Default)]
pub struct Printer {
    verbosity: Verbosity,
    no_color: bool,
}

impl Printer {
    /// A printer at `verbosity`.
    pub fn new(verbosity: Verbosity) -> Self {
        Self { verbosity, no_color: false }
    }

    /// The same printer, with colour allowed or not (`--no-color`).
    #[must_use]
    pub fn with_color(self, color: bool) -> Self {
        Self { no_color: !color, ..self }
    }

    /// Whether `--no-color` left colour allowed (NO_COLOR is the runtime's to add).
    pub fn color(&self) -> bool {
        !self.no_color
    }

    /// How chatty it is.
    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    /// Data for stdout (a table, a listing).
    pub fn data(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = out.write_all(b"\n");
        }
    }

    /// A value as JSON on stdout: indented for a person at a terminal, on one line for a program reading a pipe
    /// or a file (a third of the bytes of a report of many services, and quicker to write and to parse).
    pub fn json<T: Serialize>(&self, value: &T) {
        let stdout = std::io::stdout().lock();
        let pretty = stdout.is_terminal();
        // Streamed through one buffer rather than built as a string first: a report of many services is
        // hundreds of kilobytes.
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout);
        let written = if pretty {
            serde_json::to_writer_pretty(&mut out, value)
        } else {
            serde_json::to_writer(&mut out, value)
        };
        match written {
            Ok(()) => {
                let _ = out.write_all(b"\n");
                let _ = out.flush();
            }
            Err(err) if err.is_io() => {}
            Err(err) => {
                drop(out);
                self.error(&format!("cannot render JSON: {err}"));
            }
        }
    }

    /// A note for people (suppressed by `--quiet`).
    pub fn note(&self, text: &str) {
        if self.verbosity >= Verbosity::Normal {
            eprintln!("{text}");
        }
    }

    /// A warning (suppressed by `--quiet`).
    pub fn warn(&self, text: &str) {
        if self.verbosity >= Verbosity::Normal {
            eprintln!("warning: {text}");
        }
    }

    /// Detail shown with `--verbose`.
    pub fn debug(&self, text: &str) {
        if self.verbosity >= Verbosity::Verbose {
            eprintln!("{text}");
        }
    }

    /// An error (always shown).
    pub fn error(&self, text: &str) {
        eprintln!("error: {text}");
    }

    /// Asks `question` on the terminal and reads the answer: `Some(true)` for y/yes, `Some(false)` for anything
    /// else, `None` when stdin is no terminal (nobody to ask).
    pub fn confirm(&self, question: &str) -> Option<bool> {
        use std::io::{BufRead as _, IsTerminal as _, Write as _};
        if !std::io::stdin().is_terminal() {
            return None;
        }
        eprint!("{question} [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).ok()?;
        Some(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
    }
}

/// A left-aligned text table.
#[derive(Debug, Clone)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self { rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()] }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, columns two spaces apart, no trailing spaces.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if c + 1 < row.len() {
                    line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn strip_ansi_removes_colours_cursor_moves_and_titles_only() {
        let coloured = "\u{1b}[1;31merror\u{1b}[0m: \u{1b}]0;title\u{7}done \u{1b}[2K\u{1b}(Bplain";
        assert_eq!(super::strip_ansi(coloured), "error: done plain");
        assert_eq!(super::strip_ansi("no escapes [here]"), "no escapes [here]");
    }

    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut table = Table::new(&["A", "LONGER"]);
        table.row(vec!["wide-cell".into(), "x".into()]);
        assert_eq!(table.render(), "A          LONGER\nwide-cell  x\n");
    }
}
