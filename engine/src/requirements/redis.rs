//! The native Redis adapter: `redis-server` on 127.0.0.1, one per target (`isolation = "server"`) or one shared
//! with a database index per target (`"db-index"`); data saved to its directory on shutdown, so `stop` keeps it.
//!
//! Talking to a server (the readiness `PING`, emptying a worktree's database) goes through the `redis` crate's
//! synchronous client on tokio's blocking pool: one fresh connection per call, 2 s to connect and 2 s per reply.

use super::RequirementError;
use std::path::Path;
use std::time::Duration;

/// Longest a connection may take to open, and then each reply to arrive.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The config file envctl writes into a server's data directory: its password (kept off the command line).
pub const CONFIG_FILE: &str = "envctl-redis.conf";

/// What the server's config file holds.
pub fn config_text(password: Option<&str>) -> String {
    password.map(|p| format!("requirepass {p}\n")).unwrap_or_default()
}

/// Writes the server's config file (0600) into `data_dir`.
pub fn write_config(data_dir: &Path, password: Option<&str>) -> std::io::Result<()> {
    crate::state::write_atomic(&data_dir.join(CONFIG_FILE), config_text(password).as_bytes())
}

/// argv of the server.
pub fn argv(binary: &Path, data_dir: &Path, port: u16) -> Vec<String> {
    [
        binary.display().to_string(),
        data_dir.join(CONFIG_FILE).display().to_string(),
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--dir".into(),
        data_dir.display().to_string(),
        "--save".into(),
        "3600 1".into(),
        "--appendonly".into(),
        "no".into(),
        "--daemonize".into(),
        "no".into(),
        "--databases".into(),
        "16".into(),
        // Left as it is, the server rewrites its command line over its environment, and with it the marks envctl
        // finds its processes by in `/proc` after a torn state.
        "--set-proc-title".into(),
        "no".into(),
    ]
    .into()
}

/// What went wrong talking to 127.0.0.1:`port`, in words a user can act on.
fn describe(port: u16, e: &redis::RedisError) -> RequirementError {
    let what = if e.is_connection_refusal() {
        "connection refused (is redis-server running on that port?)".to_owned()
    } else if e.is_timeout() {
        format!("no answer within {} s", TIMEOUT.as_secs())
    } else if let Some(code) = e.code() {
        // As the server said it (`ERR DB index is out of range`).
        format!("{code} {}", e.detail().unwrap_or_default())
    } else {
        e.to_string()
    };
    RequirementError::redis(port, what)
}

/// Runs `f` on a new connection to database 0 of 127.0.0.1:`port` (authenticated with `password`), on the
/// blocking pool.
async fn with_connection<T: Send + 'static>(
    port: u16,
    password: Option<&str>,
    f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T> + Send + 'static,
) -> Result<T, RequirementError> {
    let password = password.map(str::to_owned);
    let run = move || {
        use redis::IntoConnectionInfo as _;
        let info = ("127.0.0.1", port).into_connection_info()?;
        // No `CLIENT SETINFO` round trip: a probe's connection lives for one command.
        let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(password) = password {
            settings = settings.set_password(password);
        }
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let mut conn = client.get_connection_with_timeout(TIMEOUT)?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.set_write_timeout(Some(TIMEOUT))?;
        f(&mut conn)
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(result) => result.map_err(|e| describe(port, &e)),
        Err(e) => Err(RequirementError::redis(port, e.to_string())),
    }
}

/// `PING`: succeeds when the server answers `PONG` (a server still loading its data answers an error instead).
pub async fn ping(port: u16, password: Option<&str>) -> Result<(), RequirementError> {
    let reply: String = with_connection(port, password, |c| redis::cmd("PING").query(c)).await?;
    if reply == "PONG" {
        Ok(())
    } else {
        Err(RequirementError::redis(port, format!("PING answered {reply:?}")))
    }
}

/// Empties database `index`.
pub async fn flush_database(port: u16, password: Option<&str>, index: u16) -> Result<(), RequirementError> {
    with_connection(port, password, move |c| {
        redis::cmd("SELECT").arg(index).query::<()>(c)?;
        redis::cmd("FLUSHDB").query::<()>(c)
    })
    .await
}

/// Runs inline commands (one per line, words split at whitespace) in order on one connection and returns each
/// reply in RESP's one-line form: `+OK`, `+PONG`, `:1`, `$-1` for nil, `-ERR …`, a string's text. For tests and
/// scripts that poke a server; envctl itself uses [`ping`] and [`flush_database`].
pub async fn commands(
    port: u16,
    password: Option<&str>,
    lines: &[&str],
) -> Result<Vec<String>, RequirementError> {
    let lines: Vec<Vec<String>> =
        lines.iter().map(|l| l.split_whitespace().map(str::to_owned).collect()).collect();
    with_connection(port, password, move |c| {
        let mut replies = Vec::with_capacity(lines.len());
        for words in lines {
            let mut cmd = redis::Cmd::new();
            for word in &words {
                cmd.arg(word);
            }
            replies.push(match cmd.query::<redis::Value>(c) {
                Ok(value) => one_line(&value),
                Err(e) if e.is_io_error() => return Err(e),
                Err(e) => format!("-{} {}", e.code().unwrap_or("ERR"), e.detail().unwrap_or_default()),
            });
        }
        Ok(replies)
    })
    .await
}

/// A reply as one line.
fn one_line(value: &redis::Value) -> String {
    match value {
        redis::Value::Nil => "$-1".into(),
        redis::Value::Okay => "+OK".into(),
        redis::Value::SimpleString(s) => format!("+{s}"),
        redis::Value::Int(n) => format!(":{n}"),
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `redis-server` started with envctl's own argv on a free port in a temporary directory, stopped (by its
    /// pid) on drop.
    struct Server {
        child: std::process::Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl Server {
        fn start() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            write_config(dir.path(), Some(PASSWORD)).expect("config");
            let argv = argv(Path::new("redis-server"), dir.path(), port);
            let child = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server (apt-get install redis-server)");
            let server = Self { child, port, _dir: dir };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(std::time::Instant::now() < deadline, "redis-server did not start on {port}");
                std::thread::sleep(Duration::from_millis(5));
            }
            server
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    const PASSWORD: &str = "s3cret";

    fn free_port() -> u16 {
        std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind").local_addr().expect("addr").port()
    }

    #[tokio::test]
    async fn ping_answers_from_a_real_server() {
        let server = Server::start();
        ping(server.port, Some(PASSWORD)).await.expect("ping");
        let replies =
            commands(server.port, Some(PASSWORD), &["PING", "NOSUCH", "INCR n"]).await.expect("commands");
        assert_eq!(replies[0], "+PONG");
        assert!(replies[1].starts_with("-ERR unknown command"), "{replies:?}");
        assert_eq!(replies[2], ":1", "the connection goes on after an error reply");
    }

    #[tokio::test]
    async fn flush_database_empties_only_the_given_index() {
        let server = Server::start();
        let port = server.port;
        for db in ["0", "1", "2"] {
            let select = format!("SELECT {db}");
            assert_eq!(
                commands(port, Some(PASSWORD), &[&select, "SET k v"]).await.expect("set"),
                vec!["+OK", "+OK"]
            );
        }
        flush_database(port, Some(PASSWORD), 1).await.expect("flush");
        let size = |db: &'static str| async move {
            commands(port, Some(PASSWORD), &[&format!("SELECT {db}"), "DBSIZE"]).await.expect("dbsize").pop()
        };
        assert_eq!(size("1").await.as_deref(), Some(":0"), "flushed");
        assert_eq!(size("0").await.as_deref(), Some(":1"), "database 0 untouched");
        assert_eq!(size("2").await.as_deref(), Some(":1"), "database 2 untouched");
        assert_eq!(
            commands(port, Some(PASSWORD), &["SELECT 2", "GET k", "GET gone"]).await.expect("get"),
            vec!["+OK", "v", "$-1"]
        );
        let err = flush_database(port, Some(PASSWORD), 16).await.expect_err("only 16 databases").to_string();
        assert!(err == format!("redis on 127.0.0.1:{port}: ERR DB index is out of range"), "{err}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let silent = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = silent.local_addr().expect("addr").port();
        let began = std::time::Instant::now();
        let err = ping(port, None).await.expect_err("no answer").to_string();
        assert_eq!(err, format!("redis on 127.0.0.1:{port}: no answer within 2 s"));
        assert!(began.elapsed() < Duration::from_millis(2500), "{:?}", began.elapsed());
    }

    #[tokio::test]
    async fn a_closed_port_gives_a_clear_error() {
        let port = free_port();
        for err in [
            ping(port, None).await.expect_err("nothing listens").to_string(),
            flush_database(port, Some(PASSWORD), 0).await.expect_err("nothing").to_string(),
        ] {
            assert!(err.starts_with(&format!("redis on 127.0.0.1:{port}: connection refused")), "{err}");
        }
    }
}
