//! For the server tests: a minimal HTTP/1.1 client (one request per
//! connection, the whole answer read, chunked bodies joined) and a forge
//! API on 127.0.0.1 that records every commit status POSTed to it.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// An answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    #[must_use]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Sends one request to `host` and reads the whole answer.
#[must_use]
pub fn request(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Answer> {
    let mut stream = TcpStream::connect(host).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    // A server refusing a long body may close before reading it all.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some(Answer { status, body })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A forge API on 127.0.0.1 that records every status POSTed to it.
pub struct Forge {
    pub host: String,
    /// Every status body and the path it was POSTed to, in order.
    pub statuses: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Forge {
    #[must_use]
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&statuses);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || {
                    let _ = record(stream, &seen);
                });
            }
        });
        Self { host, statuses }
    }

    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// `(state, target_url)` of each status for `context`, in order.
    #[must_use]
    pub fn states(&self, context: &str) -> Vec<(String, String)> {
        self.states_for("", context)
    }

    /// `(state, target_url)` of each status for commit `sha` and
    /// `context`, in order.
    #[must_use]
    pub fn states_for(&self, sha: &str, context: &str) -> Vec<(String, String)> {
        self.statuses
            .lock()
            .unwrap()
            .iter()
            .filter(|(path, s)| {
                path.ends_with(sha) && (s["context"] == context || s["name"] == context)
            })
            .map(|(_, s)| {
                (
                    s["state"].as_str().unwrap_or_default().to_owned(),
                    s["target_url"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The paths statuses were POSTed to, in order.
    #[must_use]
    pub fn paths(&self) -> Vec<String> {
        self.statuses
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }
}

fn record(stream: TcpStream, seen: &Mutex<Vec<(String, Value)>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    if let Ok(value) = serde_json::from_slice(&body) {
        seen.lock().unwrap().push((path, value));
    }
    let mut stream = stream;
    stream.write_all(
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
}
