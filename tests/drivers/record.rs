//! Seed corpora for the fuzz targets, from real traffic: the driver checks
//! run through a small TCP relay in front of pgsplit that keeps every
//! connection's bytes, both ways; the recordings are then cut the way each
//! target reads its input and written under `fuzz/corpus/<target>/`.
//!
//! ```text
//! cargo test --test drivers -- --ignored record_driver_traffic --nocapture
//! ```
//!
//! `PGSPLIT_FUZZ_CORPUS` names another output directory. Drivers that are
//! not installed are left out (the recording says which ran).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One relayed connection: what the client sent, what it was sent.
#[derive(Default)]
pub struct Recording {
    pub client: Vec<u8>,
    pub server: Vec<u8>,
}

pub type Recordings = Arc<Mutex<Vec<Arc<Mutex<Recording>>>>>;

/// Starts a relay on a free loopback port in front of `target`; every
/// connection through it is appended to `recordings`. Returns the port.
pub async fn relay(target: u16, recordings: Recordings) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay binds");
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                continue;
            };
            let recording = Arc::new(Mutex::new(Recording::default()));
            recordings.lock().unwrap().push(Arc::clone(&recording));
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = Arc::clone(&recording);
            tokio::spawn(copy(client_read, server_write, move |b| {
                up.lock().unwrap().client.extend_from_slice(b)
            }));
            tokio::spawn(copy(server_read, client_write, move |b| {
                recording.lock().unwrap().server.extend_from_slice(b)
            }));
        }
    });
    port
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    keep: impl Fn(&[u8]),
) {
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        keep(&buf[..n]);
    }
    let _ = to.shutdown().await;
}

/// A tagged message's (tag, whole wire bytes) at the front of `buf`.
fn message(buf: &[u8]) -> Option<(u8, &[u8])> {
    let len = u32::from_be_bytes(buf.get(1..5)?.try_into().ok()?) as usize;
    let whole = buf.get(..len + 1)?;
    Some((buf[0], whole))
}

/// Splits a client's bytes into its startup packets (SSLRequest,
/// StartupMessage, ...) and the tagged messages after them; also says how
/// many SSLRequest/GSSENCRequest packets came first (each answered by one
/// byte, outside the tagged stream).
fn split_client(bytes: &[u8]) -> Option<(&[u8], &[u8], usize)> {
    let mut pos = 0;
    let mut requests = 0;
    loop {
        let len = u32::from_be_bytes(bytes.get(pos..pos + 4)?.try_into().ok()?) as usize;
        let code = u32::from_be_bytes(bytes.get(pos + 4..pos + 8)?.try_into().ok()?);
        pos += len;
        // SSLRequest, GSSENCRequest: another packet follows.
        if code != 80_877_103 && code != 80_877_104 {
            return Some((&bytes[..pos], &bytes[pos..], requests));
        }
        requests += 1;
    }
}

/// Cuts a stream of tagged messages after each message `ends` accepts.
fn cut(mut bytes: &[u8], ends: impl Fn(u8) -> bool) -> Vec<(Vec<u8>, &[u8])> {
    let mut pieces = Vec::new();
    let mut tags = Vec::new();
    let mut start = bytes;
    let mut len = 0;
    while let Some((t, whole)) = message(bytes) {
        tags.push(t);
        len += whole.len();
        bytes = &bytes[whole.len()..];
        if ends(t) {
            pieces.push((std::mem::take(&mut tags), &start[..len]));
            start = bytes;
            len = 0;
        }
    }
    pieces
}

/// The seeds of every target, by target name, deduplicated.
pub fn seeds(recordings: &[Recording]) -> BTreeMap<&'static str, Vec<Vec<u8>>> {
    let mut out: BTreeMap<&'static str, Vec<Vec<u8>>> = BTreeMap::new();
    let mut shapes = std::collections::HashSet::new();
    for r in recordings {
        let Some((startup, tagged, requests)) = split_client(&r.client) else {
            continue;
        };
        // The one-byte answers to SSLRequest/GSSENCRequest: 'N' (go on in
        // plain) starts the tagged stream after it; 'S' means what follows
        // is TLS records, of no use as seeds.
        let Some(answers) = r.server.get(..requests) else {
            continue;
        };
        if answers.iter().any(|&b| b != b'N') {
            continue;
        }
        let server = &r.server[requests..];
        // Startup: the packets, then the SASL messages that log in.
        let sasl: usize = cut(tagged, |_| true)
            .iter()
            .take_while(|(tags, _)| tags == b"p")
            .map(|(_, bytes)| bytes.len())
            .sum();
        let mut login = startup.to_vec();
        login.extend_from_slice(&tagged[..sasl]);
        out.entry("startup").or_default().push(login);
        // Client framing: one seed per request shape (its message tags).
        let requests = &tagged[sasl..];
        for (tags, bytes) in cut(requests, |t| matches!(t, b'S' | b'Q' | b'H' | b'F' | b'X')) {
            if shapes.insert((b'c', tags)) {
                out.entry("client_framing")
                    .or_default()
                    .push(bytes.to_vec());
            }
        }
        // The classifier: every SQL text (Query, Parse), shape byte 0.
        for (tags, whole) in cut(requests, |_| true) {
            let t = tags[0];
            let body = &whole[5..];
            let sql = match t {
                b'Q' => body,
                b'P' => match body.iter().position(|&b| b == 0) {
                    Some(name_end) => &body[name_end + 1..],
                    None => continue,
                },
                _ => continue,
            };
            let sql = sql.split(|&b| b == 0).next().unwrap_or_default();
            let mut seed = vec![0u8];
            seed.extend_from_slice(sql);
            out.entry("classify").or_default().push(seed);
        }
        // The server side: each answer up to its ReadyForQuery, after the
        // login's, owed as that many plain requests (see the target).
        let answers = cut(server, |t| t == b'Z');
        for (tags, bytes) in answers.into_iter().skip(1) {
            if shapes.insert((b's', tags)) {
                let mut seed = vec![1u8, 0x01, 255];
                seed.extend_from_slice(bytes);
                out.entry("server_stream").or_default().push(seed);
            }
        }
    }
    for seeds in out.values_mut() {
        seeds.sort();
        seeds.dedup();
    }
    out
}

/// The longest seed kept: `fuzz/run.sh`'s `-max_len` (libFuzzer would
/// only read the front of a longer one, and large answers are many
/// DataRows alike).
const MAX_SEED: usize = 16 << 10;

/// Writes `seeds` under `dir/<target>/`, each file named by its SHA-256
/// (as libFuzzer names what it finds); at most `cap` per target, the
/// smallest first, none past `MAX_SEED`. Returns how many were written per
/// target.
pub fn write_seeds(
    dir: &Path,
    seeds: BTreeMap<&'static str, Vec<Vec<u8>>>,
    cap: usize,
) -> Vec<(&'static str, usize)> {
    let mut written = Vec::new();
    for (target, mut files) in seeds {
        files.retain(|f| f.len() <= MAX_SEED);
        files.sort_by_key(|f| (f.len(), f.clone()));
        files.truncate(cap);
        let sub = dir.join(target);
        std::fs::create_dir_all(&sub).unwrap();
        for f in &files {
            let name: String = Sha256::digest(f)
                .iter()
                .take(20)
                .map(|b| format!("{b:02x}"))
                .collect();
            std::fs::write(sub.join(name), f).unwrap();
        }
        written.push((target, files.len()));
    }
    written
}

pub fn corpus_dir() -> PathBuf {
    std::env::var_os("PGSPLIT_FUZZ_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"))
}
