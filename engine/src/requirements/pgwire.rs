//! Just enough of the Postgres wire protocol (v3) to probe a server and run simple queries: a startup message
//! with trust authentication, simple `Query` messages, and the rows, errors and ready signals that come back.
//! envctl's clusters only listen on 127.0.0.1 and use trust authentication, so no password exchange is needed.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A query's rows: each column as text, or `None` for NULL.
pub type Rows = Vec<Vec<Option<String>>>;

/// An open connection.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(kind);
    out.extend_from_slice(&u32::try_from(body.len() + 4).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The fields of an ErrorResponse, as "SEVERITY: message (CODE)".
/// Why a query did not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgError {
    /// The connection failed, timed out or broke.
    #[error("{0}")]
    Io(String),
    /// The server refused the connection or the statement.
    #[error("{severity}: {message} ({code})")]
    Server {
        /// `ERROR`, `FATAL`, …
        severity: String,
        /// Its message.
        message: String,
        /// The SQLSTATE code (`42601`, `55006`, …).
        code: String,
    },
}

impl PgError {
    /// The SQLSTATE code, when the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Server { code, .. } => Some(code),
            Self::Io(_) => None,
        }
    }
}

fn error_text(body: &[u8]) -> PgError {
    let (mut severity, mut text, mut code) = (String::new(), String::new(), String::new());
    for field in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let value = String::from_utf8_lossy(&field[1..]).into_owned();
        match field[0] {
            b'S' => severity = value,
            b'M' => text = value,
            b'C' => code = value,
            _ => {}
        }
    }
    PgError::Server { severity, message: text, code }
}

impl Connection {
    /// Connects to 127.0.0.1:`port` as `user` to `database`.
    pub async fn connect(port: u16, user: &str, database: &str) -> Result<Self, PgError> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(("127.0.0.1", port)))
            .await
            .map_err(|_| PgError::Io(format!("127.0.0.1:{port}: no answer")))?
            .map_err(|e| PgError::Io(format!("127.0.0.1:{port}: {e}")))?;
        let mut conn = Self { stream };
        let mut body = 196_608u32.to_be_bytes().to_vec();
        for (k, v) in [("user", user), ("database", database), ("application_name", "envctl")] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut startup = u32::try_from(body.len() + 4).unwrap_or(u32::MAX).to_be_bytes().to_vec();
        startup.extend_from_slice(&body);
        conn.stream.write_all(&startup).await.map_err(|e| PgError::Io(e.to_string()))?;
        loop {
            let (kind, body) = conn.read().await?;
            match kind {
                b'R' if body.get(..4) == Some(&[0, 0, 0, 0]) => {}
                b'R' => {
                    return Err(PgError::Io(
                        "the server asks for a password; envctl's clusters use trust authentication".into(),
                    ));
                }
                b'E' => return Err(error_text(&body)),
                b'Z' => return Ok(conn),
                _ => {}
            }
        }
    }

    async fn read(&mut self) -> Result<(u8, Vec<u8>), PgError> {
        let mut head = [0u8; 5];
        self.stream
            .read_exact(&mut head)
            .await
            .map_err(|e| PgError::Io(format!("connection closed: {e}")))?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|e| PgError::Io(format!("connection closed: {e}")))?;
        Ok((head[0], body))
    }

    /// Runs `sql` (one or more statements) and returns the rows of the last result.
    pub async fn query(&mut self, sql: &str) -> Result<Rows, PgError> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        self.stream.write_all(&message(b'Q', &body)).await.map_err(|e| PgError::Io(e.to_string()))?;
        let mut rows = Vec::new();
        let mut failure = None;
        loop {
            let (kind, body) = self.read().await?;
            match kind {
                b'T' => rows.clear(),
                b'D' => rows.push(parse_row(&body)),
                b'E' => failure = Some(error_text(&body)),
                b'Z' => return failure.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }
}

fn parse_row(body: &[u8]) -> Vec<Option<String>> {
    let count = body.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let mut at = 2;
    let mut out = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let Some(len) = body.get(at..at + 4) else { break };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += 4;
        if let Ok(len) = usize::try_from(len) {
            out.push(body.get(at..at + len).map(|v| String::from_utf8_lossy(v).into_owned()));
            at += len;
        } else {
            out.push(None);
        }
    }
    out
}

/// Connects, runs `sql`, disconnects.
pub async fn query(port: u16, user: &str, database: &str, sql: &str) -> Result<Rows, PgError> {
    Connection::connect(port, user, database).await?.query(sql).await
}

/// Quotes an identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    use super::*;
    use crate::requirements::postgres::{RunAs, run_as};

    /// A throwaway cluster (`initdb` in a temporary directory, trust authentication, user `envctl`) served on a
    /// free loopback port; as root, run as the unprivileged user envctl itself would use. Stopped by its pid on
    /// drop.
    struct TestPostgres {
        child: Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl TestPostgres {
        /// `None`, with the reason printed, when envctl runs as root and no user exists that Postgres could run as.
        async fn start() -> Option<Self> {
            let user = match run_as() {
                Ok(user) => user,
                Err(reason) => {
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!("skipped: {reason}");
                    }
                    return None;
                }
            };
            let initdb = crate::requirements::find_binary("initdb", None)
                .expect("initdb (apt-get install postgresql)");
            let bin_dir = initdb.parent().expect("bin dir").to_path_buf();
            let dir = tempfile::tempdir().expect("tempdir");
            let (data, sockets, log) =
                (dir.path().join("data"), dir.path().join("sockets"), dir.path().join("postgres.log"));
            std::fs::create_dir(&sockets).expect("socket dir");
            if let Some(user) = &user {
                for path in [dir.path(), &sockets] {
                    nix::unistd::chown(path, Some(user.uid), Some(user.gid)).expect("chown");
                }
            }
            let output = as_user(&initdb, dir.path(), user.as_ref())
                .arg("-D")
                .arg(&data)
                .args(["-U", "envctl", "--auth=trust", "--no-sync", "--no-instructions", "-E", "UTF8"])
                .arg("--locale=C")
                .output()
                .expect("run initdb");
            assert!(output.status.success(), "initdb: {}", String::from_utf8_lossy(&output.stderr));
            let port = std::net::TcpListener::bind(("127.0.0.1", 0))
                .expect("bind")
                .local_addr()
                .expect("addr")
                .port();
            let child = as_user(&bin_dir.join("postgres"), dir.path(), user.as_ref())
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
                .arg(&sockets)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .expect("run postgres");
            let server = Self { child, port, _dir: dir };
            let deadline = Instant::now() + Duration::from_secs(30);
            while let Err(e) = query(port, "envctl", "postgres", "SELECT 1").await {
                assert!(
                    Instant::now() < deadline,
                    "postgres did not start: {e}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Some(server)
        }
    }

    fn as_user(program: &Path, cwd: &Path, user: Option<&RunAs>) -> Command {
        use std::os::unix::process::CommandExt as _;
        let mut command = Command::new(program);
        command.current_dir(cwd);
        if let Some(user) = user {
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        command
    }

    impl Drop for TestPostgres {
        fn drop(&mut self) {
            // Fast shutdown, then SIGKILL if it lingers.
            if let Ok(pid) = i32::try_from(self.child.id()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGINT);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A non-NULL cell.
    #[allow(clippy::unnecessary_wraps)]
    fn text(value: &str) -> Option<String> {
        Some(value.to_owned())
    }

    #[tokio::test]
    async fn select_returns_the_rows_of_the_last_statement() {
        let Some(pg) = TestPostgres::start().await else { return };
        let q = |sql: &'static str| query(pg.port, "envctl", "postgres", sql);
        assert_eq!(q("SELECT 1").await.expect("select"), vec![vec![text("1")]]);
        assert_eq!(
            q("SELECT 1, NULL::text, 'x'").await.expect("select"),
            vec![vec![text("1"), None, text("x")]]
        );
        assert_eq!(
            q("SELECT 1; SELECT 'a' UNION ALL SELECT 'b'").await.expect("select"),
            vec![vec![text("a")], vec![text("b")]]
        );
        assert!(q("SELECT 1 WHERE false").await.expect("select").is_empty());
    }

    #[tokio::test]
    async fn errors_carry_the_servers_message_and_the_connection_goes_on() {
        let Some(pg) = TestPostgres::start().await else { return };
        let mut conn = Connection::connect(pg.port, "envctl", "postgres").await.expect("connect");
        let err = conn.query("SELEC 1").await.expect_err("syntax error");
        assert_eq!(err.to_string(), "ERROR: syntax error at or near \"SELEC\" (42601)");
        assert_eq!(err.code(), Some("42601"));
        assert_eq!(conn.query("SELECT 2").await.expect("after the error"), vec![vec![text("2")]]);
        let err = Connection::connect(pg.port, "envctl", "nope").await.expect_err("no such database");
        assert_eq!(err.to_string(), "FATAL: database \"nope\" does not exist (3D000)");
    }

    #[tokio::test]
    async fn ident_quotes_a_name_with_a_double_quote() {
        let name = "we\"ird db";
        assert_eq!(ident(name), "\"we\"\"ird db\"");
        let Some(pg) = TestPostgres::start().await else { return };
        query(pg.port, "envctl", "postgres", &format!("CREATE DATABASE {}", ident(name)))
            .await
            .expect("create");
        let found =
            query(pg.port, "envctl", "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'we%'")
                .await
                .expect("select");
        assert_eq!(found, vec![vec![text(name)]]);
        assert_eq!(
            query(pg.port, "envctl", name, "SELECT current_database()").await.expect("connect by name"),
            found
        );
        let unquoted = query(pg.port, "envctl", "postgres", &format!("DROP DATABASE {name}")).await;
        assert!(unquoted.is_err_and(|e| e.code() == Some("42601")), "unquoted, the name is a syntax error");
        query(pg.port, "envctl", "postgres", &format!("DROP DATABASE {}", ident(name))).await.expect("drop");
    }

    #[tokio::test]
    async fn a_closed_port_names_the_address() {
        let port =
            std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind").local_addr().expect("addr").port();
        let err =
            query(port, "envctl", "postgres", "SELECT 1").await.expect_err("nothing listens").to_string();
        assert!(err.starts_with(&format!("127.0.0.1:{port}: ")) && err.contains("refused"), "{err}");
    }
}
