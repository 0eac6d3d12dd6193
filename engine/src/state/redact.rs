//! Keeping secrets out of the history: the per-run copies under `runs/` keep every variable's name but not the
//! value of a secret-looking one (`*PASSWORD*`, `*SECRET*`, `*TOKEN*`, `*_KEY`, …), and no URL keeps its password.
//! Only the latest view (`run_state.json`, the one file the host needs to restart services) holds them, 0600.

use serde_json::Value;

/// The scope directory's folder of generated server passwords (written by `requirements::secrets`).
pub const SECRETS_DIR: &str = "secrets";

/// What a removed value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Whether a variable or key named `name` holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["PASS", "SECRET", "TOKEN", "CREDENTIAL", "PRIVATE", "AUTH"].iter().any(|w| upper.contains(w))
        || ["_KEY", "_PWD", "_PW"].iter().any(|w| upper.ends_with(w))
        || upper == "KEY"
}

/// `value` with every occurrence of each of `secrets` (known secret values: generated passwords, values under
/// secret-looking names) replaced, wherever it stands: argv, a URL list, a DSN.
pub fn redact_values(value: &mut Value, secrets: &[String]) {
    match value {
        Value::Object(map) => map.values_mut().for_each(|inner| redact_values(inner, secrets)),
        Value::Array(items) => items.iter_mut().for_each(|inner| redact_values(inner, secrets)),
        Value::String(text) => {
            for secret in secrets.iter().filter(|s| s.len() >= 4) {
                if text.contains(secret.as_str()) {
                    *text = text.replace(secret.as_str(), REDACTED);
                }
            }
        }
        _ => {}
    }
}

/// The values under secret-looking names anywhere in `value`.
pub fn secret_values(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match inner {
                    Value::String(text) if is_secret_name(key) && text != REDACTED => out.push(text.clone()),
                    _ => secret_values(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|inner| secret_values(inner, out)),
        _ => {}
    }
}

/// `text` with the password of every `scheme://user:password@` in it replaced.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end =
            tail.find(['/', ' ', '\'', '"', '?', '#', ',', ';', '\n', '\t']).unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@').and_then(|at| authority[..at].find(':').map(|colon| (colon, at))) {
            Some((colon, at)) => {
                out.push_str(&authority[..=colon]);
                out.push_str(REDACTED);
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

/// `value` with every secret-named field's value replaced and every URL's password removed, recursively.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                match inner {
                    Value::String(_) if is_secret_name(key) => *inner = Value::String(REDACTED.into()),
                    _ => redact(inner),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(text) if text.contains("://") => *text = redact_urls(text),
        _ => {}
    }
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
        redact(&mut value);
        redact_values(&mut value, &secrets);
        let text = value.to_string();
        assert!(!text.contains("Zq9pLmW2") && !text.contains("x1y2z3w4"), "{text}");
        assert_eq!(redact_urls("a://u:p@h,b://:q@i/0"), "a://u:<redacted>@h,b://:<redacted>@i/0");
    }
}
