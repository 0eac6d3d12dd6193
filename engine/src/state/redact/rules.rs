//! The named rules' scanners over one line of text. Each finds its shape by a literal first (cheap on lines that
//! hold none), replaces the secret part with [`REDACTED`] and returns how many it replaced.

use super::{REDACTED, is_secret_name};

/// A token shape recognised by its prefix: (rule, prefix, characters of the body, shortest body).
pub type Prefixed = (&'static str, &'static str, fn(u8) -> bool, usize);

/// Token shapes recognised by their prefix.
pub const PREFIXED: &[Prefixed] = &[
    ("aws_access_key", "AKIA", upper_digit, 16),
    ("aws_access_key", "ASIA", upper_digit, 16),
    ("github_token", "ghp_", alnum, 30),
    ("github_token", "gho_", alnum, 30),
    ("github_token", "ghu_", alnum, 30),
    ("github_token", "ghs_", alnum, 30),
    ("github_token", "ghr_", alnum, 30),
    ("github_token", "github_pat_", word, 22),
    ("gitlab_token", "glpat-", token_char, 20),
    ("slack_token", "xoxb-", token_char, 10),
    ("slack_token", "xoxp-", token_char, 10),
    ("slack_token", "xoxa-", token_char, 10),
    ("slack_token", "xoxr-", token_char, 10),
    ("slack_token", "xoxs-", token_char, 10),
    ("slack_token", "xapp-", token_char, 10),
    ("slack_webhook", "hooks.slack.com/services/", webhook_char, 20),
    ("stripe_key", "sk_live_", alnum, 16),
    ("stripe_key", "sk_test_", alnum, 16),
    ("stripe_key", "rk_live_", alnum, 16),
    ("stripe_key", "rk_test_", alnum, 16),
    ("stripe_key", "whsec_", alnum, 16),
    ("google_api_key", "AIza", token_char, 35),
    ("npm_token", "npm_", alnum, 36),
];

fn upper_digit(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn webhook_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'/'
}

fn name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// Where `needle` (ASCII, lower case) starts in `hay` at or after `from`, ignoring ASCII case.
fn find_ci(hay: &str, needle: &str, from: usize) -> Option<usize> {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    let first = needle[0];
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let at =
            i + hay[i..=hay.len() - needle.len()].iter().position(|b| b.to_ascii_lowercase() == first)?;
        if hay[at..at + needle.len()].eq_ignore_ascii_case(needle) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// Replaces `line[start..end]` with the marker; returns where scanning goes on.
fn replace(line: &mut String, start: usize, end: usize) -> usize {
    line.replace_range(start..end, REDACTED);
    start + REDACTED.len()
}

/// The end of the run of `body` bytes from `from`.
fn run_end(line: &str, from: usize, body: fn(u8) -> bool) -> usize {
    line.as_bytes()[from..].iter().position(|b| !body(*b)).map_or(line.len(), |n| from + n)
}

/// Every prefixed token shape in one pass over the line (the prefix stays, the body goes); returns how many each
/// rule replaced.
pub fn prefixed_all(line: &mut String) -> Vec<(&'static str, u64)> {
    let mut found: Vec<(usize, usize, &'static str)> = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        // Only where a word starts, and only prefixes that start with this byte.
        if i > 0 && bytes[i - 1].is_ascii_alphanumeric() || !b"Aghxsrwn".contains(&b) {
            i += 1;
            continue;
        }
        let hit = PREFIXED.iter().find_map(|(rule, prefix, body, min)| {
            let p = prefix.as_bytes();
            if p[0] != b || !bytes[i..].starts_with(p) {
                return None;
            }
            let start = i + p.len();
            let end = bytes[start..].iter().position(|c| !body(*c)).map_or(bytes.len(), |n| start + n);
            (end - start >= *min).then_some((start, end, *rule))
        });
        match hit {
            Some((start, end, rule)) => {
                found.push((start, end, rule));
                i = end;
            }
            None => i += 1,
        }
    }
    let mut counts: Vec<(&'static str, u64)> = Vec::new();
    for (start, end, rule) in found.into_iter().rev() {
        line.replace_range(start..end, REDACTED);
        match counts.iter_mut().find(|(r, _)| *r == rule) {
            Some((_, n)) => *n += 1,
            None => counts.push((rule, 1)),
        }
    }
    counts
}

/// JSON Web Tokens: `eyJ<header>.eyJ<claims>.<signature>`, replaced whole.
pub fn jwt(line: &mut String) -> u64 {
    let mut count = 0;
    let mut from = 0;
    while let Some(at) = line[from..].find("eyJ").map(|n| from + n) {
        let header_end = run_end(line, at, token_char);
        let claims = header_end + 1;
        let is_jwt = line.as_bytes().get(header_end) == Some(&b'.') && line[claims..].starts_with("eyJ");
        let claims_end = if is_jwt { run_end(line, claims, token_char) } else { claims };
        let signed = is_jwt && line.as_bytes().get(claims_end) == Some(&b'.');
        let end = if signed { run_end(line, claims_end + 1, token_char) } else { claims_end };
        if signed && header_end - at >= 10 && claims_end - claims >= 10 {
            from = replace(line, at, end);
            count += 1;
        } else {
            from = at + 3;
        }
    }
    count
}

/// `Authorization: <scheme> <credentials>` (any case, `:` or `=`, quoted or not): everything after the separator.
pub fn authorization(line: &mut String) -> u64 {
    let mut count = 0;
    let mut from = 0;
    while let Some(at) = find_ci(line, "authorization", from) {
        let mut i = at + "authorization".len();
        let bytes = line.as_bytes();
        while i < bytes.len() && matches!(bytes[i], b'"' | b'\'') {
            i += 1;
        }
        if i >= bytes.len() || !matches!(bytes[i], b':' | b'=') {
            from = i.max(at + 1);
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let quote = bytes.get(i).copied().filter(|b| matches!(b, b'"' | b'\''));
        let start = i + usize::from(quote.is_some());
        let end = match quote {
            Some(q) => line[start..].find(q as char).map_or(line.len(), |n| start + n),
            None => line[start..].find(['\r', '\n', ',', ';']).map_or(line.len(), |n| start + n),
        };
        let value = line[start..end].trim_end();
        if value.is_empty() || value.starts_with(REDACTED) {
            from = end.max(at + 1);
            continue;
        }
        from = replace(line, start, start + value.len());
        count += 1;
    }
    count
}

/// `Bearer <token>` anywhere (any case): the token goes.
pub fn bearer(line: &mut String) -> u64 {
    let mut count = 0;
    let mut from = 0;
    while let Some(at) = find_ci(line, "bearer ", from) {
        let start = at + "bearer ".len();
        let end = run_end(line, start, |b| b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b));
        if end - start >= 8 {
            from = replace(line, start, end);
            count += 1;
        } else {
            from = start;
        }
    }
    count
}

/// The password of every `scheme://user:password@host`.
pub fn url_userinfo(line: &mut String) -> u64 {
    let mut count = 0;
    let mut from = 0;
    while let Some(at) = line[from..].find("://").map(|n| from + n) {
        let start = at + 3;
        let end = line[start..]
            .find(['/', ' ', '\'', '"', '?', '#', ',', ';', '\n', '\t', '<', '>', '\\'])
            .map_or(line.len(), |n| start + n);
        let authority = &line[start..end];
        let span = authority.rfind('@').and_then(|at| authority[..at].find(':').map(|colon| (colon + 1, at)));
        match span {
            Some((a, b)) if b > a => {
                from = replace(line, start + a, start + b) + (end - (start + b));
                count += 1;
            }
            _ => from = end.max(start),
        }
    }
    count
}

/// The value of `NAME=value`, `NAME: value`, `"NAME": "value"` and `--NAME value` when NAME looks secret.
pub fn secret_key(line: &mut String) -> u64 {
    let mut count = 0;
    let mut i = 0;
    while i < line.len() {
        let bytes = line.as_bytes();
        let sep = bytes[i];
        let flag = sep == b' ' && i >= 2;
        if !matches!(sep, b'=' | b':') && !flag {
            i += 1;
            continue;
        }
        // The name before the separator (past a closing quote).
        let mut name_end = i;
        if name_end > 0 && matches!(bytes[name_end - 1], b'"' | b'\'') && !flag {
            name_end -= 1;
        }
        let name_start = bytes[..name_end].iter().rposition(|b| !name_char(*b)).map_or(0, |p| p + 1);
        let name = &line[name_start..name_end];
        if flag && !(name.starts_with("--") && name_start.checked_sub(1).is_none_or(|p| bytes[p] == b' ')) {
            i += 1;
            continue;
        }
        let name = name.trim_start_matches('-');
        if name.is_empty() || !is_secret_name(name) {
            i += 1;
            continue;
        }
        // The value after it.
        let mut start = i + 1;
        if !flag {
            while start < bytes.len() && bytes[start] == b' ' {
                start += 1;
            }
        }
        let quote = bytes.get(start).copied().filter(|b| matches!(b, b'"' | b'\''));
        if quote.is_some() {
            start += 1;
        }
        let end = match quote {
            Some(q) => line[start..].find(q as char).map_or(line.len(), |n| start + n),
            None => line[start..]
                .find([' ', '\t', '&', ',', ';', ')', '}', ']', '"', '\'', '\r', '\n'])
                .map_or(line.len(), |n| start + n),
        };
        let value = &line[start..end];
        let skip = value.is_empty()
            || value.starts_with(REDACTED)
            || value.starts_with(['{', '[', '-'])
            || (sep == b':' && value.starts_with("//"));
        if skip {
            i = end.max(i + 1);
            continue;
        }
        i = replace(line, start, end);
        count += 1;
    }
    count
}

/// Every occurrence of each of `known` (values seen under secret names, generated passwords).
pub fn known_values(line: &mut String, known: &[String]) -> u64 {
    let mut count = 0;
    for value in known {
        if line.contains(value.as_str()) {
            let n = line.matches(value.as_str()).count();
            *line = line.replace(value.as_str(), REDACTED);
            count += n as u64;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: impl Fn(&mut String) -> u64, text: &str) -> (String, u64) {
        let mut line = text.to_owned();
        let n = f(&mut line);
        (line, n)
    }

    #[test]
    fn each_scanner_replaces_its_shape_and_counts_it() {
        assert_eq!(
            run(secret_key, r#"DB_PASSWORD=hunter22 mode=dev {"apiKey": "k-123456"} --token abcdef x"#),
            (r#"DB_PASSWORD=<redacted> mode=dev {"apiKey": "<redacted>"} --token <redacted> x"#.into(), 3)
        );
        assert_eq!(run(secret_key, "passed: 3, key: services.web.port, PWD=/src").1, 0);
        assert_eq!(run(secret_key, "Error: token expired; tests passed=4").1, 0);
        assert_eq!(
            run(url_userinfo, "postgres://u:p4ss@h:5/db and redis://:s3cr3t@h/0 and http://h/x"),
            ("postgres://u:<redacted>@h:5/db and redis://:<redacted>@h/0 and http://h/x".into(), 2)
        );
        assert_eq!(
            run(authorization, "Authorization: Basic dXNlcjpwYXNz"),
            ("Authorization: <redacted>".into(), 1)
        );
        assert_eq!(
            run(bearer, "curl -H 'x: Bearer abcdefgh12345'"),
            ("curl -H 'x: Bearer <redacted>'".into(), 1)
        );
        let token =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(run(jwt, &format!("t={token};")), ("t=<redacted>;".into(), 1));
        assert_eq!(
            run(
                |l| prefixed_all(l).iter().map(|(_, n)| n).sum(),
                "id AKIAIOSFODNN7EXAMPLE, not AKIA12 xAKIAIOSFODNN7EXAMPLE"
            ),
            ("id AKIA<redacted>, not AKIA12 xAKIAIOSFODNN7EXAMPLE".into(), 1)
        );
        assert_eq!(run(|l| known_values(l, &["s3cr3tv4lue".into()]), "a s3cr3tv4lue b s3cr3tv4lue").1, 2);
    }
}
