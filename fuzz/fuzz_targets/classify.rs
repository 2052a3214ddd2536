//! The classifier, as the intake calls it on a Query's or Parse's text.
//! The first byte picks the input's shape: even, the rest is the text
//! itself (arbitrary bytes, with `fuzz/sql.dict` for keywords); odd, the
//! rest drives a generator of grammar-shaped SQL (`pgsplit_fuzz::sql`).
//!
//! Checked: the verdict from the cache (keyed by the text without its
//! literals for plain DML) equals the text's own verdict, so the cache can
//! never route a statement differently from what its text says.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pgsplit::classify::Classifier;

fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER.get_or_init(|| {
        let routing = pgsplit::config::Routing::default();
        Classifier::new(
            &routing.read_functions,
            &["audit.touch".to_owned()],
            routing.classify_cache,
        )
        .with_primary_relations(&routing.primary_relations)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let text = if shape % 2 == 0 {
        // A message's text ends at its NUL.
        let sql = rest.split(|&b| b == 0).next().unwrap_or_default();
        match std::str::from_utf8(sql) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        }
    } else {
        pgsplit_fuzz::sql::query(rest)
    };
    let cached = classifier().classify(&text);
    let own = classifier().classify_uncached(&text);
    assert_eq!(*cached, own, "the cache changed the verdict of {text:?}");
});
