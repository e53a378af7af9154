//! A fault-injecting TCP proxy between `executor` and a test registry, run
//! in-process on a tokio runtime of its own: it forwards bytes both ways
//! and, per connection, may drop the connection after a number of bytes,
//! stall (stop forwarding and hold the connection open), answer the first
//! request with a 5xx of its own without forwarding it, or cut the first
//! answer's body short. Faults are drawn from a seeded generator as
//! connections arrive ([`Mode::Random`]), or given in order
//! ([`Mode::Script`]); [`Mode::Throttle`] sends answers slowly but steadily.
//!
//! It knows HTTP only as far as finding the end of a request or answer head
//! (`\r\n\r\n`): every other fault is a byte offset on the connection.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// One connection's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection once `after` bytes went through, from the
    /// client (`upstream`, a request or upload) or from the registry.
    Drop { upstream: bool, after: u64 },
    /// Stop forwarding once `after` bytes went through in that direction,
    /// hold the connection open for the proxy's stall time, then close it.
    Stall { upstream: bool, after: u64 },
    /// Answer the first request with this status (500, 502, 503) instead
    /// of forwarding it, and close.
    ServerError(u16),
    /// Forward the first answer's head and then only `body` more bytes,
    /// and close: a truncated body.
    Truncate { body: u64 },
}

impl Fault {
    /// A short name for counting: drop, stall, 5xx, truncate.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Drop { .. } => "drop",
            Self::Stall { .. } => "stall",
            Self::ServerError(_) => "5xx",
            Self::Truncate { .. } => "truncate",
        }
    }
}

/// What the proxy does to the connections it accepts from now on.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Forward everything.
    Clean,
    /// Each new connection gets a fault with probability `percent`/100
    /// while `budget` faults are left; faults and offsets come from a
    /// generator seeded with `seed`.
    Random {
        seed: u64,
        percent: u64,
        budget: u32,
    },
    /// These faults for the next connections, in order; the rest forward.
    Script(Vec<Fault>),
    /// Forward the registry's answers at about `bytes_per_sec`, in small
    /// pieces: slow downloads, never silent for long (requests and uploads
    /// go at full speed).
    Throttle { bytes_per_sec: u64 },
}

/// A running proxy; stopped (connections closed) when dropped.
pub struct FaultProxy {
    /// `127.0.0.1:PORT`, to use in image references instead of the
    /// registry's own host.
    pub host: String,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Shared {
    upstream: String,
    stall: Duration,
    plan: Mutex<Plan>,
    injected: Mutex<Vec<Fault>>,
}

struct Plan {
    mode: Mode,
    rng: SplitMix64,
    script: std::collections::VecDeque<Fault>,
    budget: u32,
}

/// What one direction of one connection does.
#[derive(Debug, Clone, Copy)]
enum Rule {
    Forward,
    CutAfter(u64),
    StallAfter(u64),
    /// Cut `body` bytes after the end of the first head.
    TruncateBody(u64),
    Throttle(u64),
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The sender closed: the other direction goes on.
    Eof,
    /// The connection is to be closed both ways.
    Cut,
}

impl FaultProxy {
    /// A proxy on a free 127.0.0.1 port to `upstream` (`HOST:PORT`). A
    /// stalled connection is held open for `stall` before it is closed.
    #[must_use]
    pub fn start(upstream: &str, stall: Duration) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime for the proxy");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("a port for the proxy");
        let host = listener
            .local_addr()
            .expect("the proxy's address")
            .to_string();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            stall,
            plan: Mutex::new(Plan {
                mode: Mode::Clean,
                rng: SplitMix64(0),
                script: std::collections::VecDeque::new(),
                budget: 0,
            }),
            injected: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&shared);
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = Arc::clone(&accepting);
                tokio::spawn(async move { connection(client, shared).await });
            }
        });
        Self {
            host,
            shared,
            runtime: Some(runtime),
        }
    }

    /// Applies `mode` to the connections accepted from now on, and forgets
    /// the faults injected so far.
    pub fn set_mode(&self, mode: Mode) {
        let mut plan = lock(&self.shared.plan);
        plan.script.clear();
        plan.budget = 0;
        match &mode {
            Mode::Random { seed, budget, .. } => {
                plan.rng = SplitMix64(*seed);
                plan.budget = *budget;
            }
            Mode::Script(faults) => plan.script = faults.iter().copied().collect(),
            Mode::Clean | Mode::Throttle { .. } => {}
        }
        plan.mode = mode;
        lock(&self.shared.injected).clear();
    }

    /// The faults injected since the last [`FaultProxy::set_mode`].
    #[must_use]
    pub fn injected(&self) -> Vec<Fault> {
        lock(&self.shared.injected).clone()
    }

    /// `HOST:PORT/repo:tag` through this proxy.
    #[must_use]
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.host)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// The rules for a new connection (requests, answers) and the 5xx to
    /// answer with instead, if any.
    fn next(&self) -> (Rule, Rule, Option<u16>) {
        let mut plan = lock(&self.plan);
        let fault = match plan.mode.clone() {
            Mode::Clean => None,
            Mode::Throttle { bytes_per_sec } => {
                return (Rule::Forward, Rule::Throttle(bytes_per_sec), None);
            }
            Mode::Script(_) => plan.script.pop_front(),
            Mode::Random { percent, .. } => {
                if plan.budget > 0 && plan.rng.below(100) < percent {
                    plan.budget -= 1;
                    Some(plan.rng.fault())
                } else {
                    None
                }
            }
        };
        drop(plan);
        let Some(fault) = fault else {
            return (Rule::Forward, Rule::Forward, None);
        };
        lock(&self.injected).push(fault);
        match fault {
            Fault::Drop {
                upstream: true,
                after,
            } => (Rule::CutAfter(after), Rule::Forward, None),
            Fault::Drop {
                upstream: false,
                after,
            } => (Rule::Forward, Rule::CutAfter(after), None),
            Fault::Stall {
                upstream: true,
                after,
            } => (Rule::StallAfter(after), Rule::Forward, None),
            Fault::Stall {
                upstream: false,
                after,
            } => (Rule::Forward, Rule::StallAfter(after), None),
            Fault::ServerError(status) => (Rule::Forward, Rule::Forward, Some(status)),
            Fault::Truncate { body } => (Rule::Forward, Rule::TruncateBody(body), None),
        }
    }
}

async fn connection(client: TcpStream, shared: Arc<Shared>) {
    let (up_rule, down_rule, server_error) = shared.next();
    if let Some(status) = server_error {
        answer_with(client, status).await;
        return;
    }
    let Ok(server) = TcpStream::connect(&shared.upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, up_rule, shared.stall);
    let down = pump(server_read, client_write, down_rule, shared.stall);
    tokio::pin!(up, down);
    let (first, up_done) = tokio::select! {
        o = &mut up => (o, true),
        o = &mut down => (o, false),
    };
    if first == Outcome::Cut {
        return;
    }
    if up_done {
        down.await;
    } else {
        up.await;
    }
}

/// Reads the request's head and answers `status` with a registry-style
/// error body, without asking the registry.
async fn answer_with(mut client: TcpStream, status: u16) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"injected by the test proxy"}]}"#;
    let reason = match status {
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        _ => "Service Unavailable",
    };
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(answer.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// Copies `from` to `to` under `rule`.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut rule: Rule,
    stall: Duration,
) -> Outcome {
    let mut buf = vec![0u8; 16 * 1024];
    let mut passed: u64 = 0;
    // The last bytes seen, to find a head's end across reads.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return Outcome::Eof;
            }
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if let Rule::TruncateBody(body) = rule {
            tail.extend_from_slice(chunk);
            if let Some(end) = tail.windows(4).position(|w| w == b"\r\n\r\n") {
                // `tail` starts `tail.len() - n` bytes before this chunk.
                let head_end = passed + (end + 4) as u64 - (tail.len() - n) as u64;
                rule = Rule::CutAfter(head_end + body);
            } else {
                let keep = tail.len().saturating_sub(3);
                tail.drain(..keep);
            }
        }
        match rule {
            Rule::CutAfter(limit) | Rule::StallAfter(limit) if passed + n as u64 >= limit => {
                let keep = usize::try_from(limit - passed).unwrap_or(n).min(n);
                let _ = to.write_all(&chunk[..keep]).await;
                let _ = to.flush().await;
                if matches!(rule, Rule::StallAfter(_)) {
                    tokio::time::sleep(stall).await;
                }
                return Outcome::Cut;
            }
            Rule::Throttle(rate) => {
                for piece in chunk.chunks(4096) {
                    if to.write_all(piece).await.is_err() {
                        return Outcome::Cut;
                    }
                    let micros = (piece.len() as u64).saturating_mul(1_000_000) / rate.max(1);
                    tokio::time::sleep(Duration::from_micros(micros)).await;
                }
            }
            _ => {
                if to.write_all(chunk).await.is_err() {
                    return Outcome::Cut;
                }
            }
        }
        passed += n as u64;
    }
}

/// A small seeded generator (SplitMix64): the same seed, the same faults.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A byte offset up to 2 MiB, small ones as likely as large ones in
    /// scale (a request head, a manifest, a layer).
    fn offset(&mut self) -> u64 {
        let bits = self.below(22);
        self.below(1 << bits)
    }

    fn fault(&mut self) -> Fault {
        match self.below(6) {
            0 => Fault::Drop {
                upstream: true,
                after: self.offset(),
            },
            1 => Fault::Drop {
                upstream: false,
                after: self.offset(),
            },
            2 => Fault::Stall {
                upstream: self.below(2) == 0,
                after: self.offset(),
            },
            3 => Fault::ServerError([500, 502, 503][usize::try_from(self.below(3)).unwrap_or(0)]),
            _ => Fault::Truncate {
                body: self.offset(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        let draw = |seed| {
            let mut rng = SplitMix64(seed);
            (0..50).map(|_| rng.fault()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let kinds: std::collections::BTreeSet<_> = draw(7).iter().map(Fault::kind).collect();
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            ["5xx", "drop", "stall", "truncate"]
        );
    }
}
