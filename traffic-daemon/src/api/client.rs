//! The one client of the admin API: HTTP/1.1 + JSON on the daemon's Unix socket.
//!
//! Blocking and dependency-free (std and serde only) on purpose: `trafficctl` runs one
//! request and exits, and the test kit and load generator call it from plain threads while
//! their own work runs; neither wants a runtime. One request per connection
//! (`Connection: close`), so the answer is read to the end of the stream.

use std::{
    io::{Read, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Serialize, de::DeserializeOwned};

use super::ApiError;

/// Why a request to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "trafficd is not running (no admin socket at {path}); start it with `systemctl start trafficd`"
    )]
    NotRunning { path: PathBuf },
    #[error(
        "permission denied on {path}: run as root or as a member of the socket's group (`traffic` by default)"
    )]
    Permission { path: PathBuf },
    #[error("cannot reach trafficd at {path}: {source}")]
    Unreachable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("trafficd answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("unexpected answer from trafficd: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Whether the daemon could not be reached at all (`trafficctl` exits with 3).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::NotRunning { .. } | Self::Permission { .. } | Self::Unreachable { .. }
        )
    }
}

/// An HTTP answer as received: any status, the body de-chunked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body decoded as JSON when the status is 2xx; otherwise the error the API sent
    /// (its `{"error": …}` message, or the raw body).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        if !self.is_success() {
            let message = serde_json::from_str::<ApiError>(&self.body)
                .map(|e| e.error)
                .unwrap_or_else(|_| self.body.clone());
            return Err(ClientError::Api {
                status: self.status,
                message,
            });
        }
        serde_json::from_str(&self.body)
            .map_err(|e| ClientError::Protocol(format!("{e}: {}", self.body)))
    }
}

/// A blocking admin API client for one socket.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client for `socket` with a 30 s read timeout (a reload may take a while).
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
            timeout: Duration::from_secs(30),
        }
    }

    /// The same client with another read timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// GET a JSON document.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request("GET", path, None)?.json()
    }

    /// POST without a body, decode the JSON answer.
    pub fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request("POST", path, None)?.json()
    }

    /// POST a JSON body, decode the JSON answer.
    pub fn post_json<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_string(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.request("POST", path, Some(&body))?.json()
    }

    /// DELETE, decode the JSON answer.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request("DELETE", path, None)?.json()
    }

    /// One request with an optional JSON body; the answer whatever its status (tests check
    /// error statuses; the typed methods above turn them into [`ClientError::Api`]).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response, ClientError> {
        let mut stream = self.connect()?;
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: trafficd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .map_err(|e| self.unreachable(e))?;
        read_response(&mut stream).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => ClientError::Protocol(e.to_string()),
            _ => self.unreachable(e),
        })
    }

    /// GET a stream of lines (`GET /v1/watch`): call `on_line` with each non-empty line
    /// as it arrives (empty lines are the server's heartbeats) until it returns false
    /// (`Ok(true)`) or the daemon ends the stream (`Ok(false)`: stopped or restarted). The
    /// read timeout applies between two lines or heartbeats.
    pub fn stream_lines(
        &self,
        path: &str,
        mut on_line: impl FnMut(&str) -> bool,
    ) -> Result<bool, ClientError> {
        let mut stream = self.connect()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: trafficd\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| self.unreachable(e))?;
        let mut r = std::io::BufReader::new(stream);
        let io = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::InvalidData => ClientError::Protocol(e.to_string()),
            _ => self.unreachable(e),
        };
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut r, &mut line).map_err(io)? == 0 {
                return Err(ClientError::Protocol("no HTTP header".into()));
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        if !head
            .split_whitespace()
            .nth(1)
            .is_some_and(|s| s.starts_with('2'))
        {
            // An error document: read it whole, as any answer.
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).map_err(io)?;
            let mut all = head.into_bytes();
            all.extend_from_slice(&rest);
            return read_response(&mut &all[..])
                .map_err(io)?
                .json::<serde_json::Value>()
                .map(|_| false);
        }
        let mut pending = Vec::new();
        while let Some(chunk) = read_chunk(&mut r).map_err(io)? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line[..end]);
                if !text.trim().is_empty() && !on_line(text.trim_end()) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn connect(&self) -> Result<UnixStream, ClientError> {
        let stream = UnixStream::connect(&self.socket).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning {
                    path: self.socket.clone(),
                }
            }
            std::io::ErrorKind::PermissionDenied => ClientError::Permission {
                path: self.socket.clone(),
            },
            _ => self.unreachable(e),
        })?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(|e| self.unreachable(e))?;
        Ok(stream)
    }

    fn unreachable(&self, source: std::io::Error) -> ClientError {
        ClientError::Unreachable {
            path: self.socket.clone(),
            source,
        }
    }
}

/// Read an HTTP/1.1 response to the end of the stream (the request said
/// `Connection: close`): the status and the body, a chunked body reassembled. Also used for
/// the metrics listener over TCP. A malformed answer is an `InvalidData` error.
pub fn read_response(r: &mut impl Read) -> std::io::Result<Response> {
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let mut raw = Vec::new();
    r.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no HTTP header".into()))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line in {head:?}")))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body).map_err(|m| bad(m.to_owned()))?
    } else {
        body.to_owned()
    };
    Ok(Response { status, body })
}

/// One chunk of a chunked body as it arrives; `None` at the last (empty) chunk or at the
/// end of the stream.
fn read_chunk(r: &mut impl std::io::BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let mut size = String::new();
    if r.read_line(&mut size)? == 0 {
        return Ok(None);
    }
    let n = usize::from_str_radix(size.trim(), 16).map_err(|_| bad("bad chunk size"))?;
    if n == 0 {
        return Ok(None);
    }
    let mut data = vec![0; n + 2];
    r.read_exact(&mut data)?;
    if !data.ends_with(b"\r\n") {
        return Err(bad("chunk without its CRLF"));
    }
    data.truncate(n);
    Ok(Some(data))
}

fn dechunk(mut s: &str) -> Result<String, &'static str> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").ok_or("bad chunk")?;
        let n = usize::from_str_radix(size.trim(), 16).map_err(|_| "bad chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        if rest.len() < n {
            return Err("short chunk");
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            "abcde"
        );
        assert!(dechunk("zz\r\n").is_err());
    }

    #[test]
    fn reads_plain_and_chunked_answers() {
        let plain = b"HTTP/1.1 404 Not Found\r\ncontent-length: 17\r\n\r\n{\"error\":\"nope\"}";
        let r = read_response(&mut &plain[..]).unwrap();
        assert_eq!(r.status, 404);
        match r.json::<serde_json::Value>() {
            Err(ClientError::Api { status, message }) => {
                assert_eq!((status, message.as_str()), (404, "nope"));
            }
            other => panic!("{other:?}"),
        }
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        let r = read_response(&mut &chunked[..]).unwrap();
        assert_eq!(r.json::<serde_json::Value>().unwrap()["a"], 1);
        let e = read_response(&mut &b"garbage"[..]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn chunks_are_read_one_at_a_time() {
        let mut r = &b"4\r\nab\n\n\r\n3\r\ncd\n\r\n0\r\n\r\n"[..];
        assert_eq!(read_chunk(&mut r).unwrap().unwrap(), b"ab\n\n");
        assert_eq!(read_chunk(&mut r).unwrap().unwrap(), b"cd\n");
        assert!(read_chunk(&mut r).unwrap().is_none());
        assert!(read_chunk(&mut &b""[..]).unwrap().is_none());
        assert!(read_chunk(&mut &b"2\r\nabcd"[..]).is_err());
    }

    #[test]
    fn missing_socket_is_not_running() {
        let c = Client::new(Path::new("/nonexistent/traffic/admin.sock"));
        let e = c.get::<serde_json::Value>("/v1/status").unwrap_err();
        assert!(e.is_unreachable());
        assert!(e.to_string().contains("not running"), "{e}");
    }
}
