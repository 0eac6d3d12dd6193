//! From layers of text to a validated [`Config`]: parse and merge ([`super::layers`]), name unknown keys,
//! deserialize each section and entry on its own, then resolve and validate ([`super::validate`]). Every problem
//! is collected; loading fails once, with all of them.
//!
//! A reported value is taken out of the tree before anything reads it (an unknown key, a table given as a plain
//! value, a value of the wrong type), so it is reported once and the rest of its table is still read and checked.

use std::collections::BTreeMap;
use std::ops::Range;

use envctl_contracts::config::Config;
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue, ValueDeserializer};

use super::error::ConfigError;
use super::layers::{Layer, SourceMap, parse_and_merge};
use super::raw::{ROOT, RawConfig, RawSetup, Shape};
use super::validate::Checker;

/// A loaded configuration and where each value came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The resolved configuration.
    pub config: Config,
    /// Dotted file key → source label, for every key some layer set.
    pub provenance: BTreeMap<String, String>,
}

/// Loads layers (earliest first, later ones winning) into a validated configuration.
pub fn load(layers: &[Layer], repo_name: &str, hint: &str) -> Result<Loaded, ConfigError> {
    let (mut tree, map, syntax) = parse_and_merge(layers);
    if !syntax.is_empty() {
        return Err(ConfigError { problems: syntax, hint: hint.to_owned() });
    }
    let mut checker = Checker::new(&map);
    let mut reported = Vec::new();
    check_keys(tree.get_ref(), &ROOT, "", &mut checker, &mut reported);
    for path in &reported {
        remove_path(tree.get_mut(), path);
    }
    let mut provenance = BTreeMap::new();
    record_provenance(tree.get_ref(), &ROOT, "", &map, &mut provenance);
    let raw = read_sections(tree.into_inner(), &mut checker);
    let config = checker.resolve(&raw, repo_name);
    let problems = checker.finish();
    if problems.is_empty() {
        Ok(Loaded { config, provenance })
    } else {
        Err(ConfigError { problems, hint: hint.to_owned() })
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") }
}

/// Reports keys the schema does not know (with the closest known key as a suggestion) and plain values where a
/// table belongs, adding their paths to `reported` so they are taken out before deserializing. An entry of a
/// `MapOf` that is not a table stays: its name is still defined (see [`entries`]).
fn check_keys(
    table: &DeTable<'_>,
    shape: &Shape,
    prefix: &str,
    checker: &mut Checker<'_>,
    reported: &mut Vec<Vec<String>>,
) {
    let path_of = |key: &str| -> Vec<String> {
        let mut parts: Vec<String> =
            if prefix.is_empty() { Vec::new() } else { prefix.split('.').map(str::to_owned).collect() };
        parts.push(key.to_owned());
        parts
    };
    for (key, value) in table {
        let key_str: &str = key.get_ref();
        let path = join(prefix, key_str);
        match shape {
            Shape::Leaf => {}
            Shape::MapOf(entry) => match value.get_ref().as_table() {
                Some(inner) => check_keys(inner, entry, &path, checker, reported),
                None => checker.error(
                    &value.span(),
                    &path,
                    format!("must be a table, not {}", value.get_ref().type_str()),
                ),
            },
            Shape::Table(known) => match known.iter().find(|(name, _)| *name == key_str) {
                Some((_, Shape::Leaf)) => {}
                Some((_, inner_shape)) => {
                    if let Some(inner) = value.get_ref().as_table() {
                        check_keys(inner, inner_shape, &path, checker, reported);
                    } else {
                        checker.error(
                            &value.span(),
                            &path,
                            format!("must be a table, not {}", value.get_ref().type_str()),
                        );
                        reported.push(path_of(key_str));
                    }
                }
                None => {
                    let names: Vec<&str> = known.iter().map(|(name, _)| *name).collect();
                    let message = match super::suggest(key_str, &names) {
                        Some(close) => format!("unknown key; did you mean `{close}`?"),
                        None => format!("unknown key (known here: {})", names.join(", ")),
                    };
                    checker.error(&key.span(), &path, message);
                    reported.push(path_of(key_str));
                }
            },
        }
    }
}

/// Removes the value at `path`; whether there was one.
fn remove_path(table: &mut DeTable<'_>, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => table.remove(last.as_str()).is_some(),
        [first, rest @ ..] => match table.get_mut(first.as_str()).map(Spanned::get_mut) {
            Some(DeValue::Table(inner)) => remove_path(inner, rest),
            _ => false,
        },
    }
}

fn record_provenance(
    table: &DeTable<'_>,
    shape: &Shape,
    prefix: &str,
    map: &SourceMap,
    out: &mut BTreeMap<String, String>,
) {
    for (key, value) in table {
        let path = join(prefix, key.get_ref());
        let inner_shape = match shape {
            Shape::MapOf(entry) => Some(*entry),
            Shape::Table(known) => known.iter().find(|(n, _)| *n == key.get_ref().as_ref()).map(|(_, s)| s),
            Shape::Leaf => None,
        };
        match (inner_shape, value.get_ref().as_table()) {
            (Some(inner @ (Shape::Table(_) | Shape::MapOf(_))), Some(t)) => {
                out.insert(path.clone(), map.source_label(&value.span()));
                record_provenance(t, inner, &path, map, out);
            }
            _ => {
                out.insert(path, map.source_label(&value.span()));
            }
        }
    }
}

/// Deserializes one value. Serde stops at the first error, so a failure is reported at the deepest key whose
/// value holds the error's span, the value at fault (a key's, or one item of an array) is left out, and the rest
/// is read again: one bad value hides nothing. `None` when the failure belongs to nothing inside the value.
fn de<T: for<'de> Deserialize<'de>>(
    mut value: Spanned<DeValue<'_>>,
    path: &str,
    checker: &mut Checker<'_>,
) -> Option<T> {
    loop {
        let copy = value.clone();
        let err = match T::deserialize(ValueDeserializer::from(value)) {
            Ok(parsed) => return Some(parsed),
            Err(err) => err,
        };
        let span = err.span().unwrap_or_else(|| copy.span());
        let steps = steps_to(&copy, &span);
        let key = steps
            .iter()
            .filter_map(|step| match step {
                Step::Key(key) => Some(key.as_str()),
                Step::Index(_) => None,
            })
            .fold(path.to_owned(), |path, key| join(&path, key));
        let message = err
            .message()
            .trim()
            .replace("expected i64", "expected a whole number")
            .replace("expected u16", "expected a whole number");
        checker.error(&span, &key, message);
        value = copy;
        if !remove_step(value.get_mut(), &steps) {
            return None;
        }
    }
}

/// One step from a value to a value inside it.
enum Step {
    Key(String),
    Index(usize),
}

/// The steps from `value` down to the deepest value inside it that holds `span`.
fn steps_to(value: &Spanned<DeValue<'_>>, span: &Range<usize>) -> Vec<Step> {
    let holds = |inner: &Spanned<DeValue<'_>>| {
        let range = inner.span();
        range.start <= span.start && span.start < range.end
    };
    let (step, inner) = match value.get_ref() {
        DeValue::Table(table) => match table.iter().find(|(_, inner)| holds(inner)) {
            Some((key, inner)) => (Step::Key(key.get_ref().to_string()), inner),
            None => return Vec::new(),
        },
        DeValue::Array(items) => match items.iter().enumerate().find(|(_, inner)| holds(inner)) {
            Some((index, inner)) => (Step::Index(index), inner),
            None => return Vec::new(),
        },
        _ => return Vec::new(),
    };
    let mut steps = vec![step];
    steps.extend(steps_to(inner, span));
    steps
}

/// Removes the value `steps` lead to; whether there was one.
fn remove_step(value: &mut DeValue<'_>, steps: &[Step]) -> bool {
    match (value, steps) {
        (DeValue::Table(table), [Step::Key(key)]) => table.remove(key.as_str()).is_some(),
        (DeValue::Array(items), [Step::Index(index)]) if *index < items.len() => {
            let kept = std::mem::replace(items, DeArray::new()).into_iter().enumerate();
            *items = kept.filter(|(i, _)| i != index).map(|(_, item)| item).collect();
            true
        }
        (DeValue::Table(table), [Step::Key(key), rest @ ..]) => {
            table.get_mut(key.as_str()).is_some_and(|inner| remove_step(inner.get_mut(), rest))
        }
        (DeValue::Array(items), [Step::Index(index), rest @ ..]) => {
            items.get_mut(*index).is_some_and(|inner| remove_step(inner.get_mut(), rest))
        }
        _ => false,
    }
}

fn read_sections(tree: DeTable<'_>, checker: &mut Checker<'_>) -> RawConfig {
    let mut raw = RawConfig::default();
    for (key, value) in tree {
        match key.get_ref().as_ref() {
            "project" => raw.project = de(value, "project", checker).unwrap_or_default(),
            "setup" => {
                let span = value.span();
                raw.setup = de::<RawSetup>(value, "setup", checker).map(|body| Spanned::new(span, body));
            }
            "services" => raw.services = entries(value, "services", checker),
            "requirements" => raw.requirements = entries(value, "requirements", checker),
            "jobs" => {
                let (span, mut inner) = (value.span(), value.into_inner());
                if let DeValue::Table(table) = &mut inner
                    && let Some(types) = table.remove("types")
                {
                    raw.job_types = entries(types, "jobs.types", checker);
                }
                raw.jobs = de(Spanned::new(span, inner), "jobs", checker).unwrap_or_default();
            }
            _ => {}
        }
    }
    raw
}

/// The entries of a `MapOf` table, every name kept: an entry whose body could not be read (a plain value,
/// already reported by [`check_keys`]) has no body but its name is still defined, so `depends_on` naming it is
/// not an error too.
fn entries<T: for<'de> Deserialize<'de>>(
    value: Spanned<DeValue<'_>>,
    prefix: &str,
    checker: &mut Checker<'_>,
) -> Vec<(Spanned<String>, Option<T>)> {
    let DeValue::Table(table) = value.into_inner() else {
        return Vec::new();
    };
    table
        .into_iter()
        .map(|(name, body)| {
            let path = join(prefix, name.get_ref());
            let parsed = if body.get_ref().as_table().is_some() { de(body, &path, checker) } else { None };
            (Spanned::new(name.span(), name.into_inner().into_owned()), parsed)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::layers::Origin;

    fn problems(text: &str) -> Vec<String> {
        let layers = [Layer { origin: Origin::File("/r/.envctl".into()), text: text.to_owned() }];
        match load(&layers, "r", "hint") {
            Ok(_) => Vec::new(),
            Err(err) => err.problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn every_bad_value_in_one_table_is_reported_and_the_rest_still_checked() {
        let found = problems(
            "[services.web]\nport = \"80\"\nenabled = \"yes\"\nrestart = \"sometimes\"\n\
             depends_on = [\"web\", 5]\n",
        );
        assert_eq!(
            found,
            [
                "/r/.envctl:1:11: services.web.command: is required",
                "/r/.envctl:2:8: services.web.port: invalid type: string \"80\", expected a whole number",
                "/r/.envctl:3:11: services.web.enabled: invalid type: string \"yes\", expected a boolean",
                "/r/.envctl:4:11: services.web.restart: `sometimes` is not one of no, on-failure, always",
                "/r/.envctl:5:15: services.web.depends_on: a service cannot depend on itself",
                "/r/.envctl:5:22: services.web.depends_on: invalid type: integer `5`, expected a string",
            ]
        );
    }

    #[test]
    fn a_plain_value_where_a_table_belongs_is_reported_once() {
        let found = problems("[services.web]\ncommand = \"run\"\nready = \"http\"\n\n[jobs]\ntypes = 3\n");
        assert_eq!(
            found,
            [
                "/r/.envctl:3:9: services.web.ready: must be a table, not string",
                "/r/.envctl:6:9: jobs.types: must be a table, not integer",
            ]
        );
    }

    #[test]
    fn a_broken_section_hides_nothing_after_it() {
        let found = problems("[jobs]\nlease_secs = \"forever\"\nbackend = \"rabbit\"\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[1].contains("jobs.backend: `rabbit`"), "{found:?}");
    }
}
