//! The native Redis adapter: `redis-server` on 127.0.0.1, one per target (`isolation = "server"`) or one shared
//! with a database index per target (`"db-index"`); data saved to its directory on shutdown, so `stop` keeps it.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// argv of the server.
pub fn argv(binary: &Path, data_dir: &Path, port: u16) -> Vec<String> {
    [
        binary.display().to_string(),
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
    ]
    .into()
}

/// Sends inline commands (one per line) and returns one reply line per command.
pub async fn commands(port: u16, lines: &[&str]) -> Result<Vec<String>, String> {
    let run = async {
        let mut stream =
            TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("127.0.0.1:{port}: {e}"))?;
        let request: String = lines.iter().flat_map(|l| [*l, "\r\n"]).collect();
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        while bytecount(&buf, b'\n') < lines.len() {
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, String>(String::from_utf8_lossy(&buf).lines().map(str::to_owned).collect())
    };
    tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .map_err(|_| format!("127.0.0.1:{port}: no answer"))?
}

/// Empties database `index`.
pub async fn flush_database(port: u16, index: u16) -> Result<(), String> {
    let replies = commands(port, &[&format!("SELECT {index}"), "FLUSHDB"]).await?;
    match replies.iter().find(|r| r.starts_with('-')) {
        Some(error) => Err(error.clone()),
        None => Ok(()),
    }
}

/// How many times `byte` occurs in `bytes` (replies are a few lines; no need for a SIMD counter).
#[allow(clippy::naive_bytecount)]
fn bytecount(bytes: &[u8], byte: u8) -> usize {
    bytes.iter().filter(|b| **b == byte).count()
}
