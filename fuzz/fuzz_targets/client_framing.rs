//! Client framing: `Batch::frame` over arbitrary client bytes (what follows
//! the login), with the real classifier, as the relay's intake calls it.
//! Checks that every batch covers whole messages inside the buffer, that
//! every name range lies inside its message, and that the read size the
//! relay would reserve for the next message never passes the limit.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use pgsplit::classify::{Classifier, Verdict, Why};
use pgsplit::protocol::frame::bytes_wanted;
use pgsplit::session::batch::{Batch, Kind};
use pgsplit_fuzz::{HIGH_WATER, MAX_MESSAGE};

fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER.get_or_init(|| {
        let routing = pgsplit::config::Routing::default();
        Classifier::new(
            &routing.read_functions,
            &routing.write_functions,
            routing.classify_cache,
        )
        .with_primary_relations(&routing.primary_relations)
    })
}

/// What the intake does with a message's SQL bytes.
fn verdict(sql: &[u8]) -> Arc<Verdict> {
    match std::str::from_utf8(sql) {
        Ok(text) => classifier().classify(text),
        Err(_) => Arc::new(Verdict::write(Why::Unparsable)),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut batch = Batch::default();
    let mut pos = 0;
    loop {
        let buf = &data[pos..];
        // The relay reserves this much before reading more.
        if let Ok(wanted) = bytes_wanted(buf, MAX_MESSAGE) {
            assert!(wanted <= MAX_MESSAGE, "would reserve {wanted} bytes");
        }
        match batch.frame(buf, MAX_MESSAGE, HIGH_WATER, verdict) {
            Ok(true) => {}
            Ok(false) | Err(_) => return,
        }
        assert!(batch.len > 0 && batch.len <= buf.len());
        let mut at = 0;
        for m in &batch.msgs {
            assert_eq!(m.at, at, "messages are contiguous");
            at += m.len;
            let wire = m.wire(buf);
            assert_eq!(wire[0], m.tag);
            let names = match &m.kind {
                Kind::Parse { name, body, .. } => vec![name.clone(), body.clone()],
                Kind::Bind { statement } => vec![statement.clone()],
                Kind::DescribeStatement { name } | Kind::CloseStatement { name } => {
                    vec![name.clone()]
                }
                Kind::Query(_) | Kind::FunctionCall { .. } | Kind::Other => vec![],
            };
            for range in &names {
                assert!(range.start <= range.end && range.end <= m.len);
                let _ = m.slice(buf, range);
            }
        }
        assert_eq!(at, batch.len, "a batch is its messages");
        let _ = batch.single_query();
        let _ = batch.verdicts().count();
        let _ = batch.only_statements();
        if batch.is_terminate() {
            return;
        }
        pos += batch.len;
    }
});
