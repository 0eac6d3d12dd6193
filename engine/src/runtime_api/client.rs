//! The client `envctl job` uses: plain HTTP/1.1 over one loopback TCP connection per call (the API is always on
//! 127.0.0.1), no dependencies, so a call as a process costs little more than starting the binary. Connection
//! errors (the API not answering yet, a reset) are tried again with a pause doubling from 50 ms, five times.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

/// A call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A variable the client needs is not set.
    #[error(
        "{0} is not set\nhint: `envctl job` works inside a job envctl runs (it reads ENVCTL_RUNTIME_URL, ENVCTL_EXECUTION_ID and ENVCTL_EXECUTION_TOKEN)"
    )]
    NotInJob(&'static str),
    /// `ENVCTL_RUNTIME_URL` is not `http://host:port`.
    #[error("ENVCTL_RUNTIME_URL `{0}` is not http://<host>:<port>")]
    BadUrl(String),
    /// The API did not answer.
    #[error("cannot reach the runtime API at {url}: {detail}")]
    Unreachable {
        /// Its URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// The API answered with an error status.
    #[error("runtime API: {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Its `error`.
        message: String,
    },
}

impl ClientError {
    /// Whether the API said 404 (a missing variable or job).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status: 404, .. })
    }
}

/// An API endpoint and the token to call it with.
#[derive(Clone)]
pub struct Client {
    url: String,
    host: String,
    token: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("url", &self.url).finish_non_exhaustive()
    }
}

const RETRIES: u32 = 5;

impl Client {
    /// A client of the API at `url` (`http://host:port`) with `token`.
    pub fn new(url: &str, token: &str) -> Result<Self, ClientError> {
        let host = url
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .ok_or_else(|| ClientError::BadUrl(url.to_owned()))?;
        Ok(Self { url: url.to_owned(), host: host.to_owned(), token: token.to_owned() })
    }

    /// Makes one call; returns the body of a 2xx answer. Only connecting is tried again: once the request is
    /// sent it is never sent twice (an increment must not count twice).
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Result<String, ClientError> {
        let unreachable =
            |e: &std::io::Error| ClientError::Unreachable { url: self.url.clone(), detail: e.to_string() };
        let mut pause = Duration::from_millis(50);
        let mut attempt = 0;
        let stream = loop {
            match TcpStream::connect(&self.host) {
                Ok(stream) => break stream,
                Err(e) if attempt < RETRIES => {
                    tracing::debug!(error = %e, "runtime API unreachable; trying again");
                    std::thread::sleep(pause);
                    pause *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(unreachable(&e)),
            }
        };
        let (status, text) = self.exchange(stream, method, path, body).map_err(|e| unreachable(&e))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let message =
            serde_json::from_str::<envctl_contracts::runtime_api::ApiError>(&text).map_or(text, |e| e.error);
        Err(ClientError::Status { status, message })
    }

    fn exchange(
        &self,
        mut stream: TcpStream,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.host,
            self.token,
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        parse_response(&raw).ok_or_else(|| std::io::Error::other("the runtime API sent no HTTP response"))
    }
}

/// The status and body of a complete HTTP/1.1 response (a body of `Content-Length`, chunked or up to the end).
fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(rest)? } else { rest.to_vec() };
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..end]).ok()?.split(';').next()?.trim(), 16)
                .ok()?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_with_a_length_or_in_chunks() {
        let plain = b"HTTP/1.1 404 Not Found\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_response(plain), Some((404, "hello".into())));
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((200, "abcde".into())));
        assert_eq!(parse_response(b"garbage"), None);
    }

    #[test]
    fn only_http_urls_of_a_host_and_port() {
        assert!(Client::new("http://127.0.0.1:4000", "t").is_ok());
        assert!(Client::new("http://127.0.0.1:4000/", "t").is_ok());
        assert!(Client::new("https://127.0.0.1:4000", "t").is_err());
        assert!(Client::new("http://127.0.0.1:4000/x", "t").is_err());
    }
}
