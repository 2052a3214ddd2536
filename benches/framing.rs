//! Hot-path framing benchmarks.
//!
//! - `split_frame/*`: cutting a buffered, pipelined client batch into whole
//!   messages with a `split_frame` loop, as the session does with client
//!   traffic. Two batches: 64 pgbench-style extended-protocol transactions
//!   (Parse/Bind/Describe/Execute/Sync each) and 64 simple Query messages.
//! - `stream_scanner/*`: `StreamScanner::scan` over server traffic fed in
//!   16 KiB reads, watching ReadyForQuery (`Z`) and ErrorResponse (`E`) as the
//!   relay does. Two streams: one large result set (RowDescription, thousands
//!   of ~100-byte DataRows, CommandComplete, ReadyForQuery) and 64 pipelined
//!   one-row responses (what `pgbench -S` gets back).
//!
//! Fixtures are encoded by hand below. Throughput is reported in bytes of
//! wire traffic per second. Run with `cargo bench --bench framing`; under
//! `cargo test --benches` each benchmark runs once as a smoke test.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pgsplit::protocol::frame::{split_frame, StreamScanner};

/// The limit pgsplit applies to client messages by default (64 MiB).
const MAX_MESSAGE: usize = 64 << 20;
/// Largest watched server message the relay accepts whole.
const MAX_WATCHED: usize = 1 << 20;
/// Size of one socket read in the relay.
const READ_CHUNK: usize = 16 * 1024;
/// Transactions (client side) or responses (server side) per pipelined batch.
const BATCH: usize = 64;

// ---------------------------------------------------------------------------
// Message encoding helpers.
// ---------------------------------------------------------------------------

/// Appends one tagged message: type byte, Int32 length (counting itself), body.
fn put_msg(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
}

fn put_cstr(body: &mut Vec<u8>, s: &str) {
    body.extend_from_slice(s.as_bytes());
    body.push(0);
}

fn put_i16(body: &mut Vec<u8>, v: i16) {
    body.extend_from_slice(&v.to_be_bytes());
}

fn put_i32(body: &mut Vec<u8>, v: i32) {
    body.extend_from_slice(&v.to_be_bytes());
}

/// Query: the SQL text.
fn query(out: &mut Vec<u8>, sql: &str) {
    let mut b = Vec::new();
    put_cstr(&mut b, sql);
    put_msg(out, b'Q', &b);
}

/// Parse of the unnamed statement with `nparams` unspecified parameter types.
fn parse(out: &mut Vec<u8>, sql: &str, nparams: usize) {
    let mut b = Vec::new();
    put_cstr(&mut b, "");
    put_cstr(&mut b, sql);
    put_i16(&mut b, nparams as i16);
    for _ in 0..nparams {
        put_i32(&mut b, 0);
    }
    put_msg(out, b'P', &b);
}

/// Bind of the unnamed portal with text parameters and text results.
fn bind(out: &mut Vec<u8>, params: &[&str]) {
    let mut b = Vec::new();
    put_cstr(&mut b, "");
    put_cstr(&mut b, "");
    put_i16(&mut b, 0); // parameter formats: all text
    put_i16(&mut b, params.len() as i16);
    for p in params {
        put_i32(&mut b, p.len() as i32);
        b.extend_from_slice(p.as_bytes());
    }
    put_i16(&mut b, 0); // result formats: all text
    put_msg(out, b'B', &b);
}

/// Describe of the unnamed portal.
fn describe_portal(out: &mut Vec<u8>) {
    put_msg(out, b'D', b"P\0");
}

/// Execute of the unnamed portal, no row limit.
fn execute(out: &mut Vec<u8>) {
    let mut b = Vec::new();
    put_cstr(&mut b, "");
    put_i32(&mut b, 0);
    put_msg(out, b'E', &b);
}

fn sync(out: &mut Vec<u8>) {
    put_msg(out, b'S', &[]);
}

/// RowDescription with text columns of the given (name, type oid, type size).
fn row_description(out: &mut Vec<u8>, cols: &[(&str, u32, i16)]) {
    let mut b = Vec::new();
    put_i16(&mut b, cols.len() as i16);
    for (i, (name, oid, size)) in cols.iter().enumerate() {
        put_cstr(&mut b, name);
        put_i32(&mut b, 16_400); // table oid
        put_i16(&mut b, i as i16 + 1); // column number
        b.extend_from_slice(&oid.to_be_bytes());
        put_i16(&mut b, *size);
        put_i32(&mut b, -1); // type modifier
        put_i16(&mut b, 0); // text format
    }
    put_msg(out, b'T', &b);
}

/// DataRow with the given text values.
fn data_row(out: &mut Vec<u8>, values: &[&[u8]]) {
    let mut b = Vec::new();
    put_i16(&mut b, values.len() as i16);
    for v in values {
        put_i32(&mut b, v.len() as i32);
        b.extend_from_slice(v);
    }
    put_msg(out, b'D', &b);
}

fn command_complete(out: &mut Vec<u8>, tag: &str) {
    let mut b = Vec::new();
    put_cstr(&mut b, tag);
    put_msg(out, b'C', &b);
}

fn ready_for_query(out: &mut Vec<u8>, status: u8) {
    put_msg(out, b'Z', &[status]);
}

// ---------------------------------------------------------------------------
// Fixtures.
// ---------------------------------------------------------------------------

/// A pseudo-random but reproducible account id, like pgbench's `random(1, 100000 * scale)`.
fn aid(i: usize) -> String {
    ((i as u64).wrapping_mul(2_654_435_761) % 1_000_000 + 1).to_string()
}

/// `BATCH` pgbench-style TPC-B transactions in extended protocol, as one
/// pipelined client write: each statement is Parse/Bind/Describe/Execute/Sync.
fn extended_batch() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..BATCH {
        let (a, t, b) = (aid(i), (i % 100 + 1).to_string(), (i % 10 + 1).to_string());
        let delta = ((i as i64 * 7919) % 10_001 - 5_000).to_string();
        let stmts: [(&str, Vec<&str>); 7] = [
            ("BEGIN;", vec![]),
            (
                "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
                vec![&delta, &a],
            ),
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
                vec![&a],
            ),
            (
                "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2;",
                vec![&delta, &t],
            ),
            (
                "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2;",
                vec![&delta, &b],
            ),
            (
                "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
                 VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);",
                vec![&t, &b, &a, &delta],
            ),
            ("END;", vec![]),
        ];
        for (sql, params) in &stmts {
            parse(&mut out, sql, params.len());
            bind(&mut out, params);
            describe_portal(&mut out);
            execute(&mut out);
            sync(&mut out);
        }
    }
    out
}

/// `BATCH` pgbench `-S -M simple` queries as one pipelined client write.
fn simple_batch() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..BATCH {
        query(
            &mut out,
            &format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
                aid(i)
            ),
        );
    }
    out
}

/// One large result set: `SELECT aid, bid, abalance, filler FROM
/// pgbench_accounts LIMIT rows`, each DataRow about 100 bytes on the wire.
fn large_result(rows: usize) -> Vec<u8> {
    let mut out = Vec::new();
    row_description(
        &mut out,
        &[
            ("aid", 23, 4),
            ("bid", 23, 4),
            ("abalance", 23, 4),
            ("filler", 1042, -1),
        ],
    );
    let filler = [b' '; 60];
    for i in 0..rows {
        let (a, b, bal) = (
            aid(i),
            (i % 10 + 1).to_string(),
            (i as i64 % 9_973 - 4_986).to_string(),
        );
        data_row(
            &mut out,
            &[a.as_bytes(), b.as_bytes(), bal.as_bytes(), &filler],
        );
    }
    command_complete(&mut out, &format!("SELECT {rows}"));
    ready_for_query(&mut out, b'I');
    out
}

/// `BATCH` pipelined one-row responses to `-S -M extended`:
/// ParseComplete, BindComplete, RowDescription, DataRow, CommandComplete,
/// ReadyForQuery each.
fn small_responses() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..BATCH {
        put_msg(&mut out, b'1', &[]);
        put_msg(&mut out, b'2', &[]);
        row_description(&mut out, &[("abalance", 23, 4)]);
        data_row(
            &mut out,
            &[(i as i64 % 9_973 - 4_986).to_string().as_bytes()],
        );
        command_complete(&mut out, "SELECT 1");
        ready_for_query(&mut out, b'I');
    }
    out
}

// ---------------------------------------------------------------------------
// The measured loops.
// ---------------------------------------------------------------------------

/// Splits `buf` into whole messages; returns (messages, a checksum of tags).
fn split_all(buf: &[u8]) -> (usize, u64) {
    let (mut pos, mut count, mut sum) = (0, 0, 0u64);
    while let Some(frame) = split_frame(&buf[pos..], MAX_MESSAGE).expect("valid fixture") {
        pos += frame.wire_len();
        count += 1;
        sum = sum.wrapping_add(u64::from(frame.tag)) ^ frame.body.len() as u64;
    }
    assert_eq!(pos, buf.len(), "fixture must end on a boundary");
    (count, sum)
}

/// Feeds `stream` to a fresh scanner `READ_CHUNK` bytes at a time, presenting
/// unforwarded bytes again with the next read, like the relay does. The stream
/// is contiguous, so the pending bytes plus the new read are a plain sub-slice
/// and nothing is copied: only the scanner is measured. Returns the number of
/// watched messages seen.
fn scan_all(stream: &[u8]) -> usize {
    let mut scanner = StreamScanner::new();
    let (mut forwarded, mut received, mut watched) = (0, 0, 0);
    while forwarded < stream.len() {
        received = (received + READ_CHUNK).min(stream.len());
        let n = scanner
            .scan(
                &stream[forwarded..received],
                MAX_WATCHED,
                |tag| tag == b'Z' || tag == b'E',
                |_, body| watched += body.len() + 1,
            )
            .expect("valid fixture");
        forwarded += n;
    }
    assert!(scanner.at_boundary());
    watched
}

fn bench_split_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("split_frame");
    for (name, buf) in [
        ("extended_tpcb_x64", extended_batch()),
        ("simple_query_x64", simple_batch()),
    ] {
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_with_input(BenchmarkId::new(name, buf.len()), &buf, |b, buf| {
            b.iter(|| split_all(black_box(buf)))
        });
    }
    group.finish();
}

fn bench_stream_scanner(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream_scanner");
    for (name, buf) in [
        ("datarows_100B_x4096", large_result(4096)),
        ("one_row_responses_x64", small_responses()),
    ] {
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_with_input(BenchmarkId::new(name, buf.len()), &buf, |b, buf| {
            b.iter(|| scan_all(black_box(buf)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_split_frame, bench_stream_scanner);
criterion_main!(benches);
