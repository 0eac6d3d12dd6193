//! Config problems: each names where (file, line and column, or the variable or flag), which key, what is wrong and
//! what to do. Loading collects every problem before failing, so one run shows them all.

use std::fmt;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `path:line:col`, `env ENVCTL_X`, `--set` or a path.
    pub location: String,
    /// Dotted key, when the problem belongs to one.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: {key}: {}", self.location, self.message),
            None => write!(f, "{}: {}", self.location, self.message),
        }
    }
}

/// The configuration could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Every problem found, in file order.
    pub problems: Vec<Problem>,
    /// What to do about them.
    pub hint: String,
}

impl ConfigError {
    /// One problem without a key.
    pub fn single(location: String, message: &str, hint: &str) -> Self {
        Self {
            problems: vec![Problem { location, key: None, message: message.to_owned() }],
            hint: hint.to_owned(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [only] = self.problems.as_slice() {
            write!(f, "{only}")?;
        } else {
            write!(f, "the configuration has {} problems:", self.problems.len())?;
            for problem in &self.problems {
                write!(f, "\n  {problem}")?;
            }
        }
        write!(f, "\nhint: {}", self.hint)
    }
}

impl std::error::Error for ConfigError {}
