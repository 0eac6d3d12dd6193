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
    /// Connects to 127.0.0.1:`port` as `user` (with `password`, when the server asks for one) to `database`.
    pub async fn connect(
        port: u16,
        user: &str,
        password: Option<&str>,
        database: &str,
    ) -> Result<Self, PgError> {
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
        let mut scram: Option<scram::Client> = None;
        loop {
            let (kind, body) = conn.read().await?;
            let code = body.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            match (kind, code) {
                // Once SCRAM began, only a server that proved it knows the password may say "ok".
                (b'R', Some(0)) if scram.as_ref().is_some_and(|c| !c.verified) => {
                    return Err(PgError::Io(format!(
                        "127.0.0.1:{port} accepted without proving it knows the password"
                    )));
                }
                (b'R', Some(0)) => {}
                (b'R', Some(10)) => {
                    let password = password.ok_or_else(|| {
                        PgError::Io(format!("127.0.0.1:{port} asks for a password and none is known"))
                    })?;
                    let client = scram::Client::new(password)?;
                    let first = client.first_message();
                    let mut msg = b"SCRAM-SHA-256\0".to_vec();
                    msg.extend_from_slice(&u32::try_from(first.len()).unwrap_or(0).to_be_bytes());
                    msg.extend_from_slice(first.as_bytes());
                    conn.send(b'p', &msg).await?;
                    scram = Some(client);
                }
                (b'R', Some(11)) => {
                    let client =
                        scram.as_mut().ok_or_else(|| PgError::Io("SCRAM continue before it began".into()))?;
                    let reply = client.final_message(&String::from_utf8_lossy(&body[4..]))?;
                    conn.send(b'p', reply.as_bytes()).await?;
                }
                (b'R', Some(12)) => {
                    let client =
                        scram.as_mut().ok_or_else(|| PgError::Io("SCRAM final before it began".into()))?;
                    client.verify(&String::from_utf8_lossy(&body[4..]))?;
                }
                (b'R', other) => {
                    return Err(PgError::Io(format!(
                        "127.0.0.1:{port} asks for an authentication envctl does not speak (code {other:?})"
                    )));
                }
                (b'E', _) => return Err(error_text(&body)),
                (b'Z', _) => return Ok(conn),
                _ => {}
            }
        }
    }

    async fn send(&mut self, kind: u8, body: &[u8]) -> Result<(), PgError> {
        self.stream.write_all(&message(kind, body)).await.map_err(|e| PgError::Io(e.to_string()))
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
pub async fn query(port: u16, login: Login<'_>, database: &str, sql: &str) -> Result<Rows, PgError> {
    Connection::connect(port, login.user, login.password, database).await?.query(sql).await
}

/// Who connects: a role and, for a cluster that asks for one, its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Login<'a> {
    /// The role.
    pub user: &'a str,
    /// Its password.
    pub password: Option<&'a str>,
}

impl<'a> Login<'a> {
    /// `user` with `password`.
    pub fn new(user: &'a str, password: Option<&'a str>) -> Self {
        Self { user, password }
    }
}

/// Quotes an identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// SCRAM-SHA-256 (RFC 5802 / 7677) as Postgres speaks it: the client proves it knows the password without sending
/// it, and checks the server's signature in return (a server that does not know the password cannot fake one).
mod scram {
    use base64::Engine as _;
    use hmac::{Hmac, Mac as _};
    use sha2::{Digest as _, Sha256};

    use super::PgError;

    type HmacSha256 = Hmac<Sha256>;

    fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
        // An HMAC takes a key of any length.
        let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("any key length"));
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    fn b64() -> base64::engine::GeneralPurpose {
        base64::engine::general_purpose::STANDARD
    }

    fn bad(what: &str) -> PgError {
        PgError::Io(format!("the server's SCRAM answer is not understood: {what}"))
    }

    /// One exchange.
    #[derive(Debug)]
    pub struct Client {
        password: String,
        nonce: String,
        /// `client-first-bare,server-first,client-final-without-proof`, once known.
        auth_message: Option<String>,
        salted: Option<[u8; 32]>,
        /// Whether the server's signature checked out.
        pub verified: bool,
    }

    impl Client {
        pub fn new(password: &str) -> Result<Self, PgError> {
            let mut raw = [0u8; 18];
            std::io::Read::read_exact(
                &mut std::fs::File::open("/dev/urandom").map_err(|e| PgError::Io(e.to_string()))?,
                &mut raw,
            )
            .map_err(|e| PgError::Io(e.to_string()))?;
            Ok(Self {
                password: password.to_owned(),
                nonce: b64().encode(raw),
                auth_message: None,
                salted: None,
                verified: false,
            })
        }

        fn first_bare(&self) -> String {
            // Postgres takes the user from the startup message; the SCRAM user name stays empty.
            format!("n=,r={}", self.nonce)
        }

        /// `client-first-message`.
        pub fn first_message(&self) -> String {
            format!("n,,{}", self.first_bare())
        }

        /// `client-final-message` for the server's `server-first-message`.
        pub fn final_message(&mut self, server_first: &str) -> Result<String, PgError> {
            let field = |name: &str| {
                server_first.split(',').find_map(|part| part.strip_prefix(name)).ok_or_else(|| bad(name))
            };
            let nonce = field("r=")?;
            if !nonce.starts_with(&self.nonce) || nonce.len() <= self.nonce.len() {
                return Err(bad("its nonce does not extend ours"));
            }
            if server_first.split(',').any(|part| part.starts_with("m=")) {
                return Err(bad("a mandatory extension"));
            }
            let salt = b64().decode(field("s=")?).map_err(|_| bad("salt"))?;
            let iterations: u32 = field("i=")?.parse().map_err(|_| bad("iteration count"))?;
            // Postgres uses 4096; a server asking for far more only stalls the client.
            if !(1..=1_000_000).contains(&iterations) {
                return Err(bad("iteration count out of range"));
            }
            let mut salted = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(self.password.as_bytes(), &salt, iterations, &mut salted);
            let without_proof = format!("c=biws,r={nonce}");
            let auth_message = format!("{},{server_first},{without_proof}", self.first_bare());
            let client_key = hmac(&salted, b"Client Key");
            let stored_key: [u8; 32] = Sha256::digest(client_key).into();
            let signature = hmac(&stored_key, auth_message.as_bytes());
            let proof: Vec<u8> = client_key.iter().zip(signature).map(|(k, s)| k ^ s).collect();
            self.auth_message = Some(auth_message);
            self.salted = Some(salted);
            Ok(format!("{without_proof},p={}", b64().encode(proof)))
        }

        /// Checks the server's `server-final-message`.
        pub fn verify(&mut self, server_final: &str) -> Result<(), PgError> {
            let (Some(auth_message), Some(salted)) = (&self.auth_message, &self.salted) else {
                return Err(bad("it ended before it began"));
            };
            let given = server_final.strip_prefix("v=").ok_or_else(|| bad("no server signature"))?;
            let server_key = hmac(salted, b"Server Key");
            let expected = b64().encode(hmac(&server_key, auth_message.as_bytes()));
            if given != expected {
                return Err(bad("the server's signature is wrong"));
            }
            self.verified = true;
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// RFC 7677's example exchange (user "user", password "pencil").
        #[test]
        fn the_rfc_example_gives_its_proof_and_checks_its_server_signature() {
            let mut client = Client {
                password: "pencil".into(),
                nonce: "rOprNGfwEbeRWgbNEkqO".into(),
                auth_message: None,
                salted: None,
                verified: false,
            };
            // The RFC's client-first names the user; Postgres leaves it empty, so the bare message differs: use
            // the RFC's by computing the final message the same way with its user.
            let server_first =
                "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
            let salt = b64().decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
            let mut salted = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(b"pencil", &salt, 4096, &mut salted);
            let auth = format!(
                "n=user,r=rOprNGfwEbeRWgbNEkqO,{server_first},c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
            );
            let client_key = hmac(&salted, b"Client Key");
            let stored: [u8; 32] = Sha256::digest(client_key).into();
            let proof: Vec<u8> =
                client_key.iter().zip(hmac(&stored, auth.as_bytes())).map(|(k, s)| k ^ s).collect();
            assert_eq!(b64().encode(proof), "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
            let server = b64().encode(hmac(&hmac(&salted, b"Server Key"), auth.as_bytes()));
            assert_eq!(server, "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
            // And our own exchange is self-consistent: the final message carries the extended nonce.
            let reply = client.final_message(server_first).expect("final");
            assert!(
                reply.starts_with("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p="),
                "{reply}"
            );
            assert!(client.verify("v=wrong").is_err());
        }
    }
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
            while let Err(e) = query(port, Login::new("envctl", None), "postgres", "SELECT 1").await {
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
        let q = |sql: &'static str| query(pg.port, Login::new("envctl", None), "postgres", sql);
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
        let mut conn = Connection::connect(pg.port, "envctl", None, "postgres").await.expect("connect");
        let err = conn.query("SELEC 1").await.expect_err("syntax error");
        assert_eq!(err.to_string(), "ERROR: syntax error at or near \"SELEC\" (42601)");
        assert_eq!(err.code(), Some("42601"));
        assert_eq!(conn.query("SELECT 2").await.expect("after the error"), vec![vec![text("2")]]);
        let err = Connection::connect(pg.port, "envctl", None, "nope").await.expect_err("no such database");
        assert_eq!(err.to_string(), "FATAL: database \"nope\" does not exist (3D000)");
    }

    #[tokio::test]
    async fn ident_quotes_a_name_with_a_double_quote() {
        let name = "we\"ird db";
        assert_eq!(ident(name), "\"we\"\"ird db\"");
        let Some(pg) = TestPostgres::start().await else { return };
        query(pg.port, Login::new("envctl", None), "postgres", &format!("CREATE DATABASE {}", ident(name)))
            .await
            .expect("create");
        let found = query(
            pg.port,
            Login::new("envctl", None),
            "postgres",
            "SELECT datname FROM pg_database WHERE datname LIKE 'we%'",
        )
        .await
        .expect("select");
        assert_eq!(found, vec![vec![text(name)]]);
        assert_eq!(
            query(pg.port, Login::new("envctl", None), name, "SELECT current_database()")
                .await
                .expect("connect by name"),
            found
        );
        let unquoted =
            query(pg.port, Login::new("envctl", None), "postgres", &format!("DROP DATABASE {name}")).await;
        assert!(unquoted.is_err_and(|e| e.code() == Some("42601")), "unquoted, the name is a syntax error");
        query(pg.port, Login::new("envctl", None), "postgres", &format!("DROP DATABASE {}", ident(name)))
            .await
            .expect("drop");
    }

    #[tokio::test]
    async fn a_closed_port_names_the_address() {
        let port =
            std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind").local_addr().expect("addr").port();
        let err = query(port, Login::new("envctl", None), "postgres", "SELECT 1")
            .await
            .expect_err("nothing listens")
            .to_string();
        assert!(err.starts_with(&format!("127.0.0.1:{port}: ")) && err.contains("refused"), "{err}");
    }
}
