//! Layers of configuration text (the file, `ENVCTL_*` overrides, `--set` flags) parsed with spans and merged into
//! one tree, plus the [`SourceMap`] that turns any span of that tree back into "file:line:col", "env VAR" or
//! "--set". Each layer's spans are shifted past the previous layers', so one span identifies its origin.

use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::Problem;

/// Where a layer of configuration text came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A TOML `.envctl`.
    File(PathBuf),
    /// TOML generated from a legacy KEY=VALUE file; `lines[i]` is the legacy line and key behind generated line
    /// `i + 1` (0 when the line is boilerplate).
    Legacy { path: PathBuf, lines: Vec<(usize, String)> },
    /// An `ENVCTL_*` variable.
    Env(&'static str),
    /// A `--set KEY=VALUE` flag.
    Cli(String),
}

/// One layer: its origin and its text.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Where it came from.
    pub origin: Origin,
    /// TOML text.
    pub text: String,
}

/// Maps spans of the merged tree back to their layers.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    segments: Vec<(usize, Layer)>,
    /// For each segment, the byte offset at which each of its lines starts (so locating a span is a binary
    /// search, not a scan from the top: a config of thousands of keys is located in linear time overall).
    line_starts: Vec<Vec<usize>>,
}

impl SourceMap {
    /// Human location of a span: `path:line:col`, `legacy path:line (KEY)`, `env VAR` or `--set ARG`.
    pub fn locate(&self, span: &Range<usize>) -> String {
        let Some((start, layer)) = self.segments.iter().rev().find(|(start, _)| *start <= span.start) else {
            return "<config>".to_owned();
        };
        let offset = (span.start - start).min(layer.text.len());
        let index = self.segments.iter().rposition(|(s, _)| *s <= span.start).unwrap_or_default();
        let line = self.line_of(index, offset);
        let line_start = self.line_starts[index].get(line - 1).copied().unwrap_or_default();
        let col = layer.text.get(line_start..offset).map_or(0, |s| s.chars().count()) + 1;
        match &layer.origin {
            Origin::File(path) => format!("{}:{line}:{col}", path.display()),
            Origin::Legacy { path, lines } => match lines.get(line - 1) {
                Some((legacy_line, key)) if *legacy_line > 0 => {
                    format!("{}:{legacy_line} ({key})", path.display())
                }
                _ => path.display().to_string(),
            },
            Origin::Env(var) => format!("env {var}"),
            Origin::Cli(arg) => format!("--set {arg}"),
        }
    }

    /// The 1-based line of byte `offset` in layer `index`.
    fn line_of(&self, index: usize, offset: usize) -> usize {
        self.line_starts[index].partition_point(|s| *s <= offset).max(1)
    }

    /// Short provenance label for `show-config`: `file:path:line`, `legacy:path:line (KEY)`, `env:VAR`, `cli:--set`.
    /// Called for every key of the file, so a file's label is made in one step, without the column.
    pub fn source_label(&self, span: &Range<usize>) -> String {
        let Some(index) = self.segments.iter().rposition(|(start, _)| *start <= span.start) else {
            return "default".to_owned();
        };
        let (start, layer) = &self.segments[index];
        match &layer.origin {
            Origin::File(path) => {
                let line = self.line_of(index, (span.start - start).min(layer.text.len()));
                format!("file:{}:{line}", path.display())
            }
            Origin::Legacy { .. } => format!("legacy:{}", self.locate(span)),
            Origin::Env(var) => format!("env:{var}"),
            Origin::Cli(_) => "cli:--set".to_owned(),
        }
    }
}

/// Parses every layer and merges them, later layers winning key by key. Syntax errors in any layer are all
/// returned, located, in layer and file order.
pub fn parse_and_merge(layers: &[Layer]) -> (Spanned<DeTable<'_>>, SourceMap, Vec<Problem>) {
    let mut map = SourceMap::default();
    let mut merged: Option<Spanned<DeTable<'_>>> = None;
    let mut problems = Vec::new();
    let mut offset = 0;
    for layer in layers {
        map.line_starts
            .push(std::iter::once(0).chain(layer.text.match_indices('\n').map(|(at, _)| at + 1)).collect());
        map.segments.push((offset, layer.clone()));
        let (table, errors) = DeTable::parse_recoverable(&layer.text);
        for err in errors {
            let span = err.span().unwrap_or(0..0);
            let span = span.start + offset..span.end + offset;
            let problem = Problem {
                location: map.locate(&span),
                key: None,
                message: format!("invalid TOML: {}", err.message().trim()),
            };
            problems.push((span.start, problem));
        }
        let table = shift_table(table, offset);
        match &mut merged {
            None => merged = Some(table),
            Some(base) => merge(base.get_mut(), table.into_inner()),
        }
        offset += layer.text.len() + 1;
    }
    problems.sort_by_key(|(at, _)| *at);
    let problems = problems.into_iter().map(|(_, p)| p).collect();
    (merged.unwrap_or_else(|| Spanned::new(0..0, DeTable::default())), map, problems)
}

fn shift_span(span: Range<usize>, by: usize) -> Range<usize> {
    span.start + by..span.end + by
}

fn shift_table(table: Spanned<DeTable<'_>>, by: usize) -> Spanned<DeTable<'_>> {
    let span = shift_span(table.span(), by);
    Spanned::new(span, shift_entries(table.into_inner(), by))
}

fn shift_entries(table: DeTable<'_>, by: usize) -> DeTable<'_> {
    let mut out = DeTable::default();
    for (key, value) in table {
        let key = Spanned::new(shift_span(key.span(), by), key.into_inner());
        out.insert(key, shift_value(value, by));
    }
    out
}

fn shift_value(value: Spanned<DeValue<'_>>, by: usize) -> Spanned<DeValue<'_>> {
    let span = shift_span(value.span(), by);
    let inner = match value.into_inner() {
        DeValue::Table(table) => DeValue::Table(shift_entries(table, by)),
        DeValue::Array(items) => {
            let mut out = toml::de::DeArray::new();
            for item in items {
                out.push(shift_value(item, by));
            }
            DeValue::Array(out)
        }
        other => other,
    };
    Spanned::new(span, inner)
}

/// Deep merge: tables merge key by key, anything else in `overlay` replaces what `base` had.
fn merge<'a>(base: &mut DeTable<'a>, overlay: DeTable<'a>) {
    for (key, value) in overlay {
        let (span, inner) = (value.span(), value.into_inner());
        match (base.get_mut(&key).map(Spanned::get_mut), inner) {
            (Some(DeValue::Table(existing)), DeValue::Table(incoming)) => merge(existing, incoming),
            (_, inner) => {
                base.remove(&key);
                base.insert(key, Spanned::new(span, inner));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(origin: Origin, text: &str) -> Layer {
        Layer { origin, text: text.to_owned() }
    }

    #[test]
    fn later_layers_win_and_spans_name_their_origin() {
        let layers = [
            layer(Origin::File("/r/.envctl".into()), "[project]\nname = \"a\"\ndefault_mode = \"main\"\n"),
            layer(Origin::Env("ENVCTL_DEFAULT_MODE"), "project.default_mode = \"trees\""),
        ];
        let (tree, map, problems) = parse_and_merge(&layers);
        assert!(problems.is_empty(), "{problems:?}");
        let project = tree.get_ref().get("project").expect("project").get_ref().as_table().expect("table");
        let name = project.get("name").expect("name");
        let mode = project.get("default_mode").expect("mode");
        assert_eq!(mode.get_ref().as_str(), Some("trees"));
        assert_eq!(map.locate(&name.span()), "/r/.envctl:2:8");
        assert_eq!(map.locate(&mode.span()), "env ENVCTL_DEFAULT_MODE");
        assert_eq!(map.source_label(&name.span()), "file:/r/.envctl:2");
    }

    #[test]
    fn syntax_errors_in_every_layer_are_reported() {
        let layers = [
            layer(Origin::File("/r/.envctl".into()), "[project\n"),
            layer(Origin::Cli("x==1".into()), "x == 1"),
        ];
        let (_, _, problems) = parse_and_merge(&layers);
        assert!(problems.iter().any(|p| p.location.starts_with("/r/.envctl:1:")), "{problems:?}");
        assert!(problems.iter().any(|p| p.location == "--set x==1"), "{problems:?}");
    }

    #[test]
    fn syntax_errors_come_in_file_order() {
        let text = "[a]\nx = \"open\ny = 1\n\n[b]\nz = = 5\n";
        let layers = [layer(Origin::File("/r/.envctl".into()), text)];
        let (_, _, problems) = parse_and_merge(&layers);
        let lines: Vec<&str> = problems.iter().filter_map(|p| p.location.split(':').nth(1)).collect();
        assert!(lines.len() >= 2, "{problems:?}");
        assert!(
            lines.windows(2).all(|w| w[0].parse::<u32>().ok() <= w[1].parse::<u32>().ok()),
            "{problems:?}"
        );
    }
}
