//! Keeping secrets out of everything envctl writes for other eyes: the per-run copies under `runs/` and the debug
//! bundles. One [`Redactor`] applies every named rule ([`RULES`]) to JSON (by key and by value) and to text, line
//! by line, and counts what each rule replaced — never the values. Names and structure stay, so what is left is
//! still readable. Only the latest view (`run_state.json`, the one file the host needs to restart services) keeps
//! secrets, 0600.

mod rules;

use std::collections::BTreeMap;

use serde_json::Value;

/// The scope directory's folder of generated server passwords (written by `requirements::secrets`).
pub const SECRETS_DIR: &str = "secrets";

/// What a removed value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// A known secret value shorter than this is not searched for (it would match ordinary text).
pub const MIN_KNOWN: usize = 6;

/// Every rule, by name, with what it replaces (the order is the order they run in).
pub const RULES: &[(&str, &str)] = &[
    ("pem_private_key", "the body of a PEM private key block (`-----BEGIN … PRIVATE KEY-----`)"),
    ("authorization_header", "the value of an `Authorization:` header or field"),
    ("bearer_token", "the token after `Bearer `"),
    ("jwt", "a JSON Web Token (`eyJ….eyJ….…`)"),
    ("aws_access_key", "an AWS access key id (`AKIA…`, `ASIA…`)"),
    ("github_token", "a GitHub token (`ghp_…`, `gho_…`, `ghu_…`, `ghs_…`, `ghr_…`, `github_pat_…`)"),
    ("gitlab_token", "a GitLab personal access token (`glpat-…`)"),
    ("slack_token", "a Slack token (`xoxb-…`, `xoxp-…`, `xoxa-…`, `xoxr-…`, `xoxs-…`, `xapp-…`)"),
    ("slack_webhook", "the secret path of a Slack webhook URL"),
    (
        "stripe_key",
        "a Stripe secret or restricted key or webhook secret (`sk_live_…`, `rk_test_…`, `whsec_…`)",
    ),
    ("google_api_key", "a Google API key (`AIza…`)"),
    ("npm_token", "an npm token (`npm_…`)"),
    ("url_userinfo", "the password in `scheme://user:password@host`"),
    (
        "secret_key",
        "the value of a key that looks secret (password, passwd, secret, token, key, credential, auth, cookie, session, private; any case, any separator): `NAME=value`, `NAME: value`, `\"NAME\": \"value\"`, `--name value`, JSON fields",
    ),
    (
        "known_value",
        "a value seen under a secret-looking name, or a generated server password, wherever it stands",
    ),
];

/// Words of a name that make it secret on their own.
const SECRET_WORDS: &[&str] =
    &["pass", "pwd", "pw", "key", "auth", "oauth", "authorization", "session", "sessionid", "sid", "apikey"];
/// Parts of a word that make it secret wherever they stand in it.
const SECRET_PARTS: &[&str] = &["password", "passwd", "secret", "token", "credential", "cookie", "private"];

/// Names that look secret but hold none (paths, sockets, session kinds), and the labels of key/value pairs.
const NOT_SECRET: &[&str] = &[
    "PWD",
    "OLDPWD",
    "SSH_AUTH_SOCK",
    "XDG_SESSION_ID",
    "XDG_SESSION_TYPE",
    "XDG_SESSION_CLASS",
    "XDG_SESSION_DESKTOP",
    "DBUS_SESSION_BUS_ADDRESS",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "SUDO_ASKPASS",
    "key",
    "name",
];

/// Whether a variable or key named `name` holds a secret: a word of it (split at any separator and at camelCase)
/// is one of [`SECRET_WORDS`], contains one of [`SECRET_PARTS`] or ends in `pass` (`requirepass`). `PASSED`,
/// `KEYBOARD` and `AUTHOR` are not.
pub fn is_secret_name(name: &str) -> bool {
    if NOT_SECRET.iter().any(|n| n.eq_ignore_ascii_case(name)) {
        return false;
    }
    // Called for every `NAME=` and `NAME:` of every log line: no allocation for names of usual length.
    let mut buffer = [0u8; 64];
    let mut found = false;
    each_word(name, |word| {
        if word.len() > buffer.len() {
            found |= word_is_secret(&word.to_ascii_lowercase());
            return;
        }
        let lower = &mut buffer[..word.len()];
        lower.copy_from_slice(word);
        lower.make_ascii_lowercase();
        found |= word_is_secret(lower);
    });
    found
}

/// Whether one lower-case word of a name makes it secret.
fn word_is_secret(word: &[u8]) -> bool {
    let has = |part: &str| word.windows(part.len()).any(|w| w == part.as_bytes());
    SECRET_WORDS.iter().any(|w| w.as_bytes() == word)
        || SECRET_PARTS.iter().any(|p| has(p))
        || word.ends_with(b"pass")
}

/// Calls `f` with each word of `name`: split at anything not a letter or digit, and before an upper-case letter
/// that follows a lower-case one or a digit.
fn each_word(name: &str, mut f: impl FnMut(&[u8])) {
    let bytes = name.as_bytes();
    let mut start: Option<usize> = None;
    for (i, b) in bytes.iter().enumerate() {
        if !b.is_ascii_alphanumeric() {
            if let Some(s) = start.take() {
                f(&bytes[s..i]);
            }
            continue;
        }
        if let Some(s) = start
            && b.is_ascii_uppercase()
            && (bytes[i - 1].is_ascii_lowercase() || bytes[i - 1].is_ascii_digit())
        {
            f(&bytes[s..i]);
            start = Some(i);
        }
        start.get_or_insert(i);
    }
    if let Some(s) = start {
        f(&bytes[s..]);
    }
}

/// Applies every rule and counts what each replaced.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    known: Vec<String>,
    counts: BTreeMap<&'static str, u64>,
    in_pem: bool,
}

impl Redactor {
    /// A redactor that also replaces each of `known` wherever it stands.
    pub fn new(known: impl IntoIterator<Item = String>) -> Self {
        let mut redactor = Self::default();
        redactor.add_known(known);
        redactor
    }

    /// More values to replace wherever they stand (shorter than [`MIN_KNOWN`]: ignored).
    pub fn add_known(&mut self, values: impl IntoIterator<Item = String>) {
        for value in values {
            let value = value.trim().to_owned();
            if value.len() >= MIN_KNOWN && value != REDACTED && !self.known.contains(&value) {
                self.known.push(value);
            }
        }
        // Longest first, so a secret that contains another is replaced whole.
        self.known.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// What each rule replaced so far, every rule listed.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        RULES
            .iter()
            .map(|(name, _)| ((*name).to_owned(), self.counts.get(name).copied().unwrap_or(0)))
            .collect()
    }

    fn count(&mut self, rule: &'static str, n: u64) {
        if n > 0 {
            *self.counts.entry(rule).or_default() += n;
        }
    }

    /// One line of text (without its newline), redacted. A PEM block spanning lines is followed across calls: its
    /// `BEGIN` line ends in the marker and its body lines come out empty.
    pub fn line(&mut self, text: &str) -> String {
        let mut line = text.to_owned();
        if self.in_pem {
            if let Some(end) = line.find("-----END") {
                self.in_pem = false;
                line.replace_range(..end, "");
            } else {
                return String::new();
            }
        }
        if let Some(begin) = line.find("-----BEGIN ").filter(|_| line.contains("PRIVATE KEY-----")) {
            let body = line[begin..].find("KEY-----").map_or(line.len(), |n| begin + n + "KEY-----".len());
            if let Some(end) = line[body..].find("-----END").map(|n| body + n) {
                line.replace_range(body..end, REDACTED);
            } else {
                line.truncate(body);
                line.push_str(REDACTED);
                self.in_pem = true;
            }
            self.count("pem_private_key", 1);
        }
        let mut n = rules::authorization(&mut line);
        self.count("authorization_header", n);
        n = rules::bearer(&mut line);
        self.count("bearer_token", n);
        n = rules::jwt(&mut line);
        self.count("jwt", n);
        for (rule, n) in rules::prefixed_all(&mut line) {
            self.count(rule, n);
        }
        n = rules::url_userinfo(&mut line);
        self.count("url_userinfo", n);
        n = rules::secret_key(&mut line);
        self.count("secret_key", n);
        n = rules::known_values(&mut line, &self.known);
        self.count("known_value", n);
        line
    }

    /// A text of any number of lines, redacted (a PEM block is followed within it only).
    pub fn text(&mut self, text: &str) -> String {
        let outer = std::mem::take(&mut self.in_pem);
        let mut out = String::with_capacity(text.len());
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let redacted = self.line(line);
            out.push_str(&redacted);
        }
        self.in_pem = outer;
        out
    }

    /// `value` with every secret-named field's value replaced (also `{"key": NAME, "value": …}` pairs and the
    /// argument after a `--secret-flag` in a list) and every string redacted as text.
    pub fn json(&mut self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                let labelled = is_labelled_secret(map);
                for (key, inner) in map.iter_mut() {
                    let secret = is_secret_name(key) || (labelled && key == "value");
                    match inner {
                        Value::String(text) if secret => {
                            if !text.is_empty() && !text.starts_with(REDACTED) {
                                REDACTED.clone_into(text);
                                self.count("secret_key", 1);
                            }
                        }
                        _ => self.json(inner),
                    }
                }
            }
            Value::Array(items) => {
                let mut after_flag = false;
                for item in items.iter_mut() {
                    match item {
                        Value::String(text) if after_flag && !text.starts_with(REDACTED) => {
                            REDACTED.clone_into(text);
                            self.count("secret_key", 1);
                            after_flag = false;
                        }
                        Value::String(text) => {
                            after_flag = text.starts_with('-')
                                && !text.contains('=')
                                && is_secret_name(text.trim_start_matches('-'));
                            *text = self.text(text);
                        }
                        other => {
                            after_flag = false;
                            self.json(other);
                        }
                    }
                }
            }
            Value::String(text) => *text = self.text(text),
            _ => {}
        }
    }
}

/// The generated passwords of the scope's servers (`secrets/*.password`).
pub fn known_secrets(scope: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(scope.join(SECRETS_DIR))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether `map` is a `{"key": NAME, "value": …}` (or `"name"`) pair whose NAME's last dotted part looks secret.
fn is_labelled_secret(map: &serde_json::Map<String, Value>) -> bool {
    ["key", "name"]
        .iter()
        .filter_map(|k| map.get(*k).and_then(Value::as_str))
        .any(|label| label.rsplit('.').next().is_some_and(is_secret_name))
}

/// The values under secret-looking names anywhere in `value`.
pub fn secret_values(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let labelled = is_labelled_secret(map);
            for (key, inner) in map {
                let secret = is_secret_name(key) || (labelled && key == "value");
                match inner {
                    Value::String(text) if secret && text != REDACTED => out.push(text.clone()),
                    Value::String(text) if text.contains("://") => out.extend(url_passwords(text)),
                    _ => secret_values(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|inner| secret_values(inner, out)),
        Value::String(text) if text.contains("://") => out.extend(url_passwords(text)),
        _ => {}
    }
}

/// The password of every `scheme://user:password@host` in `text`.
pub fn url_passwords(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let tail = &rest[at + 3..];
        let end = tail.find(['/', ' ', '\'', '"', '?', '#', ',', ';', '\n', '\t']).unwrap_or(tail.len());
        let authority = &tail[..end];
        if let Some((colon, at)) = authority.rfind('@').and_then(|a| authority[..a].find(':').map(|c| (c, a)))
        {
            out.push(authority[colon + 1..at].to_owned());
        }
        rest = &tail[end..];
    }
    out.retain(|p| !p.is_empty() && p != REDACTED);
    out
}

/// `text` with the password of every `scheme://user:password@host` in it replaced.
pub fn redact_urls(text: &str) -> String {
    let mut line = text.to_owned();
    rules::url_userinfo(&mut line);
    line
}

/// `value` with every secret-named field's value replaced, every URL's password removed and every known token
/// shape replaced, recursively.
pub fn redact(value: &mut Value) {
    Redactor::default().json(value);
}

/// Whether `value` holds anything [`redact`] replaced.
pub fn was_redacted(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.values().any(was_redacted),
        Value::Array(items) => items.iter().any(was_redacted),
        Value::String(text) => text.contains(REDACTED),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_by_word() {
        for name in [
            "DB_PASSWORD",
            "apiKey",
            "api-key",
            "CACHE_PASS",
            "SESSION_ID",
            "x.auth",
            "MyCookie",
            "PGPASSWORD",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["passed", "KEYBOARD", "GIT_AUTHOR_NAME", "PORT", "monkey", "PWD", "key", "SSH_AUTH_SOCK"]
        {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn secrets_go_names_stay() {
        let mut value = serde_json::json!({
            "env": {
                "DB_PASSWORD": "hunter2",
                "API_KEY": "k",
                "DATABASE_URL": "postgresql://postgres:hunter2@127.0.0.1:5432/app",
                "REDIS_URL": "redis://:s3cret@127.0.0.1:6379/0",
                "PORT": "8000",
                "SITE": "http://127.0.0.1:8000/x",
            },
            "argv": ["sh", "-c", "run --db postgresql://u:p@h/db"],
            "values": [{"key": "services.web.env.API_TOKEN", "value": "tok-1234567", "source": "file"}],
        });
        redact(&mut value);
        let env = &value["env"];
        assert_eq!(env["DB_PASSWORD"], REDACTED);
        assert_eq!(env["API_KEY"], REDACTED);
        assert_eq!(env["DATABASE_URL"], "postgresql://postgres:<redacted>@127.0.0.1:5432/app");
        assert_eq!(env["REDIS_URL"], "redis://:<redacted>@127.0.0.1:6379/0");
        assert_eq!(env["PORT"], "8000");
        assert_eq!(env["SITE"], "http://127.0.0.1:8000/x");
        assert_eq!(value["argv"][2], "run --db postgresql://u:<redacted>@h/db");
        assert_eq!(value["values"][0]["key"], "services.web.env.API_TOKEN");
        assert_eq!(value["values"][0]["value"], REDACTED);
        assert!(!value.to_string().contains("hunter2") && !value.to_string().contains("s3cret"));
        assert!(was_redacted(&value));
    }

    #[test]
    fn known_values_go_wherever_they_stand() {
        let mut value = serde_json::json!({
            "argv": ["sh", "-c", "server --auth Zq9pLmW2"],
            "env": { "CACHE_PASS": "x1y2z3w4", "BROKERS": "redis://127.0.0.1:1,redis://:Zq9pLmW2@127.0.0.1:2/0" },
        });
        let mut secrets = vec!["Zq9pLmW2".to_owned()];
        secret_values(&value, &mut secrets);
        assert!(secrets.contains(&"x1y2z3w4".to_owned()), "{secrets:?}");
        // One pass: the secret-named fields, the token shapes and the known values (a run copy's redaction).
        Redactor::new(secrets).json(&mut value);
        let text = value.to_string();
        assert!(!text.contains("Zq9pLmW2") && !text.contains("x1y2z3w4"), "{text}");
        assert_eq!(redact_urls("a://u:p@h,b://:q@i/0"), "a://u:<redacted>@h,b://:<redacted>@i/0");
    }

    #[test]
    fn a_pem_block_across_lines_and_the_counts_by_rule() {
        let mut r = Redactor::new(["generated-pw-1".to_owned()]);
        let lines = [
            "key follows",
            "-----BEGIN RSA PRIVATE KEY-----",
            "MIIEowIBAAKCAQEA",
            "abcdef",
            "-----END RSA PRIVATE KEY-----",
            "pw generated-pw-1 and argv: --password hunter22",
        ];
        let out: Vec<String> = lines.iter().map(|l| r.line(l)).collect();
        assert_eq!(out[1], "-----BEGIN RSA PRIVATE KEY-----<redacted>");
        assert_eq!((out[2].as_str(), out[3].as_str()), ("", ""));
        assert_eq!(out[4], "-----END RSA PRIVATE KEY-----");
        assert_eq!(out[5], "pw <redacted> and argv: --password <redacted>");
        let counts = r.counts();
        assert_eq!(counts.len(), RULES.len());
        assert_eq!((counts["pem_private_key"], counts["known_value"], counts["secret_key"]), (1, 1, 1));
        let mut args = serde_json::json!(["redis-server", "--requirepass", "abcdefgh"]);
        r.json(&mut args);
        assert_eq!(args[2], REDACTED);
    }
}
