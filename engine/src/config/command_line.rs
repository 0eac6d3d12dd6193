//! How a configured command line is run: exec'd directly when it has no shell syntax, otherwise through `sh`.
//!
//! A command made only of plain words (letters, digits and `_ - . / : @ % + , =`, as [`shell_word`] leaves a
//! filled-in value) means the same to `sh` as its words split on blanks, so it is exec'd as that argv and no
//! shell stays in the process tree. A single command with shell syntax — quotes, `$VAR`, redirects, globs,
//! `~` — runs as `sh -c 'exec …'`: the shell expands it and is replaced by the program. A compound command (`|`,
//! `&&`, `||`, `;`, `&`, parentheses, a newline, a leading `VAR=value`, a reserved word or builtin first) cannot
//! be exec'd as one program and keeps its shell (`sh -c …`).
//!
//! [`shell_word`]: super::template::shell_word

use envctl_contracts::startup::Launch;

/// The shell every command with shell syntax runs under.
pub const SHELL: &str = "/bin/sh";

/// Words that, first, make the line a shell construct rather than a program to run: reserved words and the
/// builtins that have no program of their name (or must run in the shell itself).
const SHELL_WORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "case", "esac", "while", "until", "for", "in",
    "function", "select", ".", ":", "break", "continue", "eval", "exec", "exit", "export", "readonly",
    "return", "set", "shift", "times", "trap", "unset", "cd", "alias", "unalias", "command", "getopts",
    "hash", "jobs", "read", "type", "ulimit", "umask", "wait", "fg", "bg", "local", "source",
];

/// A character that means the same to `sh` as to a plain argv.
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-./:@%+,=".contains(c)
}

/// How `command` runs, and the argv that runs it.
pub fn launch_of(command: &str) -> (Launch, Vec<String>) {
    let launch = classify(command);
    let argv = match launch {
        Launch::Direct => command.split([' ', '\t']).filter(|w| !w.is_empty()).map(str::to_owned).collect(),
        Launch::ShellExec => vec![SHELL.into(), "-c".into(), format!("exec {}", command.trim_start())],
        Launch::Shell => vec![SHELL.into(), "-c".into(), command.to_owned()],
    };
    (launch, argv)
}

/// Which of the three ways `command` runs.
pub fn classify(command: &str) -> Launch {
    let first = command.split([' ', '\t']).find(|w| !w.is_empty()).unwrap_or_default();
    // A first word that is a reserved word, a builtin or an assignment is the shell's to run.
    let shell_first = first.is_empty()
        || SHELL_WORDS.contains(&first)
        || first.split_once('=').is_some_and(|(name, _)| crate::config::valid_env_key(name));
    if shell_first {
        return Launch::Shell;
    }
    if command.chars().all(|c| plain(c) || c == ' ' || c == '\t') && !first.contains('=') {
        return Launch::Direct;
    }
    if single_command(command) { Launch::ShellExec } else { Launch::Shell }
}

/// Whether `command` is one simple command: no control operator (`|`, `&`, `;`, parentheses, a newline) outside
/// quotes, and its quotes balanced. A `&` right after `<` or `>` is part of a redirect (`2>&1`), not an operator.
fn single_command(command: &str) -> bool {
    let (mut single, mut double, mut escaped) = (false, false, false);
    let mut previous = ' ';
    for c in command.chars() {
        if escaped {
            escaped = false;
        } else if single {
            single = c != '\'';
        } else if c == '\\' {
            escaped = true;
        } else if double {
            double = c != '"';
        } else {
            match c {
                '\'' => single = true,
                '"' => double = true,
                '&' if previous == '>' || previous == '<' => {}
                '|' | '&' | ';' | '(' | ')' | '\n' | '\r' => return false,
                _ => {}
            }
        }
        previous = c;
    }
    !single && !double && !escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_are_exec_d_directly_as_their_argv() {
        assert_eq!(launch_of("sleep 1000"), (Launch::Direct, vec!["sleep".to_owned(), "1000".to_owned()]));
        let (launch, argv) = launch_of("  python3 -m http.server 8000  --bind=127.0.0.1 ");
        assert_eq!(launch, Launch::Direct);
        assert_eq!(argv, ["python3", "-m", "http.server", "8000", "--bind=127.0.0.1"]);
        assert_eq!(classify("./bin/server --db postgresql://u:p@127.0.0.1:5432/db"), Launch::Direct);
    }

    #[test]
    fn quoting_variables_redirects_and_globs_run_through_a_shell_that_execs() {
        for command in [
            "echo 'a b'",
            "echo \"$HOME\"",
            "server --port $PORT",
            "server > out.log 2>&1",
            "server < input",
            "ls *.txt",
            "cat ~/x",
            "run a\\ b",
            "echo `date`",
            "server --name 'a;b|c&d'",
        ] {
            assert_eq!(classify(command), Launch::ShellExec, "{command}");
        }
        let (_, argv) = launch_of("server --port $PORT");
        assert_eq!(argv, ["/bin/sh", "-c", "exec server --port $PORT"]);
    }

    #[test]
    fn compound_commands_assignments_and_builtins_keep_their_shell() {
        for command in [
            "a | b",
            "a && b",
            "a || b",
            "a; b",
            "a &",
            "(cd x && run)",
            "run $(cat args; echo)",
            "a\nb",
            "FOO=1 server",
            "exec sleep 1000",
            "cd backend",
            "if true; then run; fi",
            "echo 'unbalanced",
            "",
        ] {
            assert_eq!(classify(command), Launch::Shell, "{command:?}");
        }
        assert_eq!(launch_of("a | b").1, ["/bin/sh", "-c", "a | b"]);
    }
}
