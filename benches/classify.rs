//! Statement classification benchmarks.
//!
//! - `uncached/*`: `Classifier::classify_uncached` on representative texts:
//!   a point SELECT and a SELECT with a join and built-in functions (both
//!   answered by the lexer fast path), a CTE, a SELECT calling a user
//!   function, an UPDATE and a BEGIN (all of which need the full parse).
//! - `cached/*`: `Classifier::classify` on the same texts once cached (a hash
//!   of the text, a shard lock, an `Arc` clone).
//!
//! Run with `cargo bench --bench classify`; under `cargo test --benches` each
//! benchmark runs once as a smoke test.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pgsplit::classify::Classifier;

const CASES: &[(&str, &str)] = &[
    ("point_select_fast", "SELECT abalance FROM pgbench_accounts WHERE aid = $1"),
    (
        "join_select_fast",
        "SELECT u.id, lower(u.name), count(*) FROM users u JOIN orders o ON o.user_id = u.id \
         WHERE o.created_at > now() - interval '1 day' GROUP BY u.id, u.name ORDER BY 3 DESC LIMIT 10",
    ),
    (
        "cte_select_parse",
        "WITH recent AS (SELECT * FROM orders WHERE created_at > $1) SELECT count(*) FROM recent",
    ),
    ("user_function_parse", "SELECT my_report($1, $2)"),
    ("update_parse", "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"),
    ("begin_parse", "BEGIN"),
];

fn bench(c: &mut Criterion) {
    let classifier = Classifier::new(&[], &[], 10_000);
    let mut uncached = c.benchmark_group("uncached");
    for (name, sql) in CASES {
        uncached.bench_function(*name, |b| {
            b.iter(|| classifier.classify_uncached(black_box(sql)))
        });
    }
    uncached.finish();
    let mut cached = c.benchmark_group("cached");
    for (name, sql) in CASES {
        classifier.classify(sql);
        cached.bench_function(*name, |b| b.iter(|| classifier.classify(black_box(sql))));
    }
    cached.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
