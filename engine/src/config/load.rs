//! From layers of text to a validated [`Config`]: parse and merge ([`super::layers`]), name unknown keys,
//! deserialize each section on its own (so one bad section does not hide another), then resolve and validate
//! ([`super::validate`]). Every problem is collected; loading fails once, with all of them.

use std::collections::BTreeMap;
use std::ops::Range;

use envctl_contracts::config::Config;
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::error::ConfigError;
use super::layers::{Layer, SourceMap, parse_and_merge};
use super::raw::{ROOT, RawConfig, Shape};
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
    let mut unknown = Vec::new();
    check_keys(tree.get_ref(), &ROOT, "", &mut checker, &mut unknown);
    for path in &unknown {
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

/// Reports keys the schema does not know, with the closest known key as a suggestion.
fn check_keys(
    table: &DeTable<'_>,
    shape: &Shape,
    prefix: &str,
    checker: &mut Checker<'_>,
    unknown: &mut Vec<Vec<String>>,
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
                Some(inner) => check_keys(inner, entry, &path, checker, unknown),
                None => checker.error(
                    &value.span(),
                    &path,
                    format!("must be a table, not {}", value.get_ref().type_str()),
                ),
            },
            Shape::Table(known) => match known.iter().find(|(name, _)| *name == key_str) {
                Some((_, Shape::Leaf)) => {}
                Some((_, inner_shape)) => match value.get_ref().as_table() {
                    Some(inner) => check_keys(inner, inner_shape, &path, checker, unknown),
                    None => checker.error(
                        &value.span(),
                        &path,
                        format!("must be a table, not {}", value.get_ref().type_str()),
                    ),
                },
                None => {
                    let names: Vec<&str> = known.iter().map(|(name, _)| *name).collect();
                    let message = match super::suggest(key_str, &names) {
                        Some(close) => format!("unknown key; did you mean `{close}`?"),
                        None => format!("unknown key (known here: {})", names.join(", ")),
                    };
                    checker.error(&key.span(), &path, message);
                    unknown.push(path_of(key_str));
                }
            },
        }
    }
}

fn remove_path(table: &mut DeTable<'_>, path: &[String]) {
    match path {
        [] => {}
        [last] => {
            table.remove(last.as_str());
        }
        [first, rest @ ..] => {
            if let Some(DeValue::Table(inner)) = table.get_mut(first.as_str()).map(Spanned::get_mut) {
                remove_path(inner, rest);
            }
        }
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

/// Deserializes one value, reporting a failure at the deepest key whose value holds the error's span.
fn de<T: for<'de> Deserialize<'de>>(
    value: Spanned<DeValue<'_>>,
    path: &str,
    checker: &mut Checker<'_>,
) -> Option<T> {
    let copy = value.clone();
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(parsed) => Some(parsed),
        Err(err) => {
            let span = err.span().unwrap_or_else(|| copy.span());
            let key = key_at(&copy, &span, path);
            let message = err
                .message()
                .trim()
                .replace("expected i64", "expected a whole number")
                .replace("expected u16", "expected a whole number");
            checker.error(&span, &key, message);
            None
        }
    }
}

fn key_at(value: &Spanned<DeValue<'_>>, span: &Range<usize>, path: &str) -> String {
    if let Some(table) = value.get_ref().as_table() {
        for (key, inner) in table {
            let range = inner.span();
            if range.start <= span.start && span.end <= range.end.max(span.end) && span.start < range.end {
                return key_at(inner, span, &join(path, key.get_ref()));
            }
        }
    }
    path.to_owned()
}

fn read_sections(tree: DeTable<'_>, checker: &mut Checker<'_>) -> RawConfig {
    let mut raw = RawConfig::default();
    for (key, value) in tree {
        match key.get_ref().as_ref() {
            "project" => raw.project = de(value, "project", checker).unwrap_or_default(),
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

fn entries<T: for<'de> Deserialize<'de> + Default>(
    value: Spanned<DeValue<'_>>,
    prefix: &str,
    checker: &mut Checker<'_>,
) -> Vec<(Spanned<String>, T)> {
    let DeValue::Table(table) = value.into_inner() else {
        return Vec::new();
    };
    table
        .into_iter()
        .filter_map(|(name, body)| {
            let path = join(prefix, name.get_ref());
            let parsed = de(body, &path, checker)?;
            Some((Spanned::new(name.span(), name.into_inner().into_owned()), parsed))
        })
        .collect()
}
