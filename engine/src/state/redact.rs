//! Keeping secrets out of the history: the per-run copies under `runs/` keep every variable's name but not the
//! value of a secret-looking one (`*PASSWORD*`, `*SECRET*`, `*TOKEN*`, `*_KEY`, …), and no URL keeps its password.
//! Only the latest view (`run_state.json`, the one file the host needs to restart services) holds them, 0600.

use serde_json::Value;

/// What a removed value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Whether a variable or key named `name` holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL", "PRIVATE", "AUTH"]
        .iter()
        .any(|w| upper.contains(w))
        || upper.ends_with("_KEY")
        || upper == "KEY"
}

/// `text` with the password of every `scheme://user:password@` in it replaced.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail.find(['/', ' ', '\'', '"', '?', '#']).unwrap_or(tail.len());
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
}
