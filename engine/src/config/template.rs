//! Placeholders in commands and env values: `{port}`, `{target}`, `{root}`, `{service}`, references to other
//! services and requirements such as `{backend.url}` or `{postgres.port}`, and named ports: `{ports.web}` (the
//! entry's own) and `{mail.ports.web}` (another's). Anything else in braces (shell `${VAR}`, brace expansion, awk
//! programs) is left alone.

/// Bare placeholders.
pub const BARE: &[&str] = &["port", "target", "root", "service"];
/// Attributes a reference may name (besides `ports.<name>`).
pub const ATTRS: &[&str] = &["url", "port", "host", "user", "password", "database", "db"];
/// The name of `{ports.<name>}`, an entry's own named port; no service or requirement may be called this.
pub const OWN_PORTS: &str = "ports";

/// One placeholder found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder<'a> {
    /// Byte range of `{…}` in the text.
    pub range: std::ops::Range<usize>,
    /// `port`, or the `backend` of `{backend.url}`.
    pub name: &'a str,
    /// The `url` of `{backend.url}`; `ports.web` of `{mail.ports.web}`.
    pub attr: Option<&'a str>,
}

impl<'a> Placeholder<'a> {
    /// For a named port, (whose, which): see [`named_port`].
    pub fn named_port(&self, own: &'a str) -> Option<(&'a str, &'a str)> {
        named_port(own, self.name, self.attr)
    }
}

/// For a named port, (whose, which): `{ports.web}` in a text of `own` is (`own`, `web`), `{mail.ports.web}` is
/// (`mail`, `web`); anything else is none.
pub fn named_port<'a>(own: &'a str, name: &'a str, attr: Option<&'a str>) -> Option<(&'a str, &'a str)> {
    let attr = attr?;
    if name == OWN_PORTS {
        return Some((own, attr));
    }
    attr.strip_prefix("ports.").map(|port| (name, port))
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Every placeholder-shaped `{name}` or `{name.attr}` in `text` (not preceded by `$`).
pub fn placeholders(text: &str) -> Vec<Placeholder<'_>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(open) = text[i..].find('{').map(|o| o + i) {
        i = open + 1;
        if open > 0 && bytes[open - 1] == b'$' {
            continue;
        }
        let Some(close) = text[open + 1..].find(['}', '{']).map(|c| c + open + 1) else {
            break;
        };
        if bytes[close] == b'{' {
            continue;
        }
        let inner = &text[open + 1..close];
        let (name, attr) = match inner.split_once('.') {
            Some((name, attr)) => (name, Some(attr)),
            None => (inner, None),
        };
        let named_port = |a: &str| a.strip_prefix("ports.").is_some_and(is_ident);
        let shaped = is_ident(name) && attr.is_none_or(|a| is_ident(a) || named_port(a));
        if shaped && (attr.is_some() || BARE.contains(&name)) {
            out.push(Placeholder { range: open..close + 1, name, attr });
        }
    }
    out
}

/// Replaces every placeholder with `lookup(name, attr)`; the first one it cannot fill is the error.
pub fn expand(
    text: &str,
    mut lookup: impl FnMut(&str, Option<&str>) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for p in placeholders(text) {
        out.push_str(&text[last..p.range.start]);
        match lookup(p.name, p.attr) {
            Some(value) => out.push_str(&value),
            None => return Err(text[p.range.clone()].to_owned()),
        }
        last = p.range.end;
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// `value` as one word for `sh`: as it is when every character is plainly safe (letters, digits and
/// `_ - . / : @ % + , =`), otherwise single-quoted, so a path such as `trees/b;touch x` stays one argument.
pub fn shell_word(value: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+,=".contains(c);
    if !value.is_empty() && value.chars().all(safe) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// [`expand`] for a shell command line: every filled-in value is one shell word ([`shell_word`]).
pub fn expand_for_shell(
    text: &str,
    mut lookup: impl FnMut(&str, Option<&str>) -> Option<String>,
) -> Result<String, String> {
    expand(text, |name, attr| lookup(name, attr).map(|v| shell_word(&v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_placeholders_and_leaves_shell_braces_alone() {
        let text = "run --port {port} --db {postgres.url} ${HOME} {a,b} awk '{print $1}'";
        let found: Vec<_> = placeholders(text).into_iter().map(|p| (p.name, p.attr)).collect();
        assert_eq!(found, vec![("port", None), ("postgres", Some("url"))]);
    }

    #[test]
    fn named_ports_are_placeholders_of_their_own_or_another_entry() {
        let text = "{ports.web} {mail.ports.smtp} {mail.ports.a.b} {mail.ports.}";
        let found: Vec<_> = placeholders(text).iter().map(|p| p.named_port("api")).collect();
        assert_eq!(found, vec![Some(("api", "web")), Some(("mail", "smtp"))]);
        assert_eq!(placeholders("{mail.url}")[0].named_port("api"), None);
    }

    #[test]
    fn values_for_a_shell_are_single_words_whatever_they_hold() {
        let filled = expand_for_shell("echo root={root} port={port}", |name, _| match name {
            "root" => Some("/repo/trees/b;touch $HOME/PWN3;x".into()),
            "port" => Some("8001".into()),
            _ => None,
        });
        assert_eq!(filled.as_deref(), Ok("echo root='/repo/trees/b;touch $HOME/PWN3;x' port=8001"));
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("postgres://u@127.0.0.1:5432/db"), "postgres://u@127.0.0.1:5432/db");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn expand_fills_in_and_names_what_it_cannot() {
        let filled = expand("x {port} {api.url}", |name, attr| match (name, attr) {
            ("port", None) => Some("8001".into()),
            ("api", Some("url")) => Some("http://127.0.0.1:9000".into()),
            _ => None,
        });
        assert_eq!(filled.as_deref(), Ok("x 8001 http://127.0.0.1:9000"));
        assert_eq!(expand("{nope.url}", |_, _| None), Err("{nope.url}".to_owned()));
    }
}
