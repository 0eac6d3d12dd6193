//! Dotenv files (`env_file = [".env"]`): `KEY=value` lines, read the way the common loaders read them so a
//! project's existing `.env` works unchanged.
//!
//! A line is blank, a `#` comment, or `[export ]KEY=value`. An unquoted value ends at ` #` (a comment) and is
//! trimmed; a `'single'` value is literal; a `"double"` value knows `\n`, `\t`, `\"` and `\\` and may span lines.
//! Nothing is interpolated: `${OTHER}` stays as written (envctl's own placeholders belong in `env`).

use std::path::{Path, PathBuf};

/// One variable and the line that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvVar {
    /// Name.
    pub key: String,
    /// Value.
    pub value: String,
    /// 1-based line of its `KEY=`.
    pub line: usize,
}

/// A dotenv file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", path.display())]
pub struct DotenvError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (0 when the file could not be opened).
    pub line: usize,
    /// What is wrong, and what to do.
    pub message: String,
}

/// Reads the file at `path`.
pub fn read(path: &Path) -> Result<Vec<DotenvVar>, DotenvError> {
    let text = std::fs::read_to_string(path).map_err(|e| DotenvError {
        path: path.to_path_buf(),
        line: 0,
        message: format!("cannot read it: {e}"),
    })?;
    parse(&text).map_err(|(line, message)| DotenvError { path: path.to_path_buf(), line, message })
}

/// Parses dotenv text; an error is its line and message.
pub fn parse(text: &str) -> Result<Vec<DotenvVar>, (usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut vars = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let number = index + 1;
        let line = lines[index].trim_start();
        index += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, rest)) = line.split_once('=') else {
            return Err((number, format!("expected KEY=value, found `{}`", line.trim())));
        };
        let key = key.trim();
        if !super::valid_env_key(key) {
            return Err((number, format!("`{key}` is not a valid environment variable name")));
        }
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some('\'') => {
                let body = &rest[1..];
                let end =
                    body.find('\'').ok_or((number, "the value's single quote is never closed".to_owned()))?;
                body[..end].to_owned()
            }
            Some('"') => {
                let (value, used) = double_quoted(&rest[1..], &lines[index..])
                    .ok_or((number, "the value's double quote is never closed".to_owned()))?;
                index += used;
                value
            }
            _ => rest.split(" #").next().unwrap_or_default().trim().to_owned(),
        };
        vars.push(DotenvVar { key: key.to_owned(), value, line: number });
    }
    Ok(vars)
}

/// A double-quoted value starting at `first` (after the quote) and maybe running on into `more`: the value and
/// how many of `more` it used.
fn double_quoted(first: &str, more: &[&str]) -> Option<(String, usize)> {
    let mut value = String::new();
    let mut used = 0;
    let mut current = first;
    loop {
        let mut chars = current.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some((value, used)),
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some('r') => value.push('\r'),
                    Some(other @ ('"' | '\\' | '$')) => value.push(other),
                    Some(other) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => value.push('\\'),
                },
                other => value.push(other),
            }
        }
        current = more.get(used)?;
        used += 1;
        value.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text).expect("parses").into_iter().map(|v| (v.key, v.value)).collect()
    }

    #[test]
    fn reads_the_forms_projects_write() {
        let text = "# comment\n\nA=1\nexport B = two words # note\nC='lit ${X} # kept'\nD=\"a\\nb \\\"q\\\"\"\nE=\nF=\"multi\nline\"\nG=x#y\n";
        assert_eq!(
            pairs(text),
            [
                ("A", "1"),
                ("B", "two words"),
                ("C", "lit ${X} # kept"),
                ("D", "a\nb \"q\""),
                ("E", ""),
                ("F", "multi\nline"),
                ("G", "x#y"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("A=1\n\nnot a pair\n"), Err((3, "expected KEY=value, found `not a pair`".into())));
        assert_eq!(parse("A=1\n1X=2\n").expect_err("refused").0, 2);
        assert_eq!(
            parse("A=\"open\nstill open\n").expect_err("refused"),
            (1, "the value's double quote is never closed".into())
        );
        assert_eq!(parse("A='x\n").expect_err("refused").0, 1);
    }

    #[test]
    fn lines_after_a_multiline_value_keep_their_numbers() {
        let vars = parse("A=\"x\ny\"\nB=2\n").expect("parses");
        assert_eq!(vars[1].line, 3);
    }
}
