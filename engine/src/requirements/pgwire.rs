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
fn error_text(body: &[u8]) -> String {
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
    format!("{severity}: {text} ({code})")
}

impl Connection {
    /// Connects to 127.0.0.1:`port` as `user` to `database`.
    pub async fn connect(port: u16, user: &str, database: &str) -> Result<Self, String> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(("127.0.0.1", port)))
            .await
            .map_err(|_| format!("127.0.0.1:{port}: no answer"))?
            .map_err(|e| format!("127.0.0.1:{port}: {e}"))?;
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
        conn.stream.write_all(&startup).await.map_err(|e| e.to_string())?;
        loop {
            let (kind, body) = conn.read().await?;
            match kind {
                b'R' if body.get(..4) == Some(&[0, 0, 0, 0]) => {}
                b'R' => {
                    return Err(
                        "the server asks for a password; envctl's clusters use trust authentication".into()
                    );
                }
                b'E' => return Err(error_text(&body)),
                b'Z' => return Ok(conn),
                _ => {}
            }
        }
    }

    async fn read(&mut self) -> Result<(u8, Vec<u8>), String> {
        let mut head = [0u8; 5];
        self.stream.read_exact(&mut head).await.map_err(|e| format!("connection closed: {e}"))?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        self.stream.read_exact(&mut body).await.map_err(|e| format!("connection closed: {e}"))?;
        Ok((head[0], body))
    }

    /// Runs `sql` (one or more statements) and returns the rows of the last result.
    pub async fn query(&mut self, sql: &str) -> Result<Rows, String> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        self.stream.write_all(&message(b'Q', &body)).await.map_err(|e| e.to_string())?;
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
pub async fn query(port: u16, user: &str, database: &str, sql: &str) -> Result<Rows, String> {
    Connection::connect(port, user, database).await?.query(sql).await
}

/// Quotes an identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
