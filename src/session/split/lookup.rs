//! What a session asks before it can route a statement: the verdict on its
//! text (a per-session memo, then the shared classifier and its cache) and
//! what `pg_proc` says about functions the classifier's lists do not know.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::classify::{Classifier, Verdict};

/// What pgsplit learned from `pg_proc` about functions its lists do not
/// know, per database: `true` when every function of that name is
/// immutable or stable (read-only), `false` when one is volatile or none
/// exists. Entries expire, so a function redefined is noticed.
#[derive(Debug, Default)]
pub struct FunctionCache {
    entries: std::sync::Mutex<HashMap<FunctionKey, (bool, Instant)>>,
}

/// (database, function name as written).
type FunctionKey = (Box<str>, Box<str>);

/// Settles function names for one plan from the `pg_proc` cache, and
/// remembers the ones it could not.
pub struct Functions<'a> {
    cache: &'a FunctionCache,
    database: &'a str,
    missing: std::cell::RefCell<Vec<Box<str>>>,
}

impl<'a> Functions<'a> {
    /// The names it could not settle, leaving none.
    pub(super) fn take_missing(&self) -> Vec<Box<str>> {
        self.missing.take()
    }

    pub fn new(cache: &'a FunctionCache, database: &'a str) -> Self {
        Functions {
            cache,
            database,
            missing: Default::default(),
        }
    }

    pub(super) fn settle(&self, name: &str) -> Option<bool> {
        self.cache.get(self.database, name)
    }

    pub(super) fn missing(&self, name: &str) {
        let mut missing = self.missing.borrow_mut();
        if !missing.iter().any(|m| &**m == name) {
            missing.push(name.into());
        }
    }
}

/// How long a `pg_proc` answer is trusted.
const FUNCTION_TTL: std::time::Duration = std::time::Duration::from_secs(60);

impl FunctionCache {
    pub fn get(&self, database: &str, name: &str) -> Option<bool> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        // A tuple key of borrowed strs cannot be looked up without building
        // one; names are short and lookups rare (only unknown functions).
        let (read, at) = entries.get(&(database.into(), name.into()))?;
        (at.elapsed() < FUNCTION_TTL).then_some(*read)
    }

    pub fn put(&self, database: &str, name: &str, read: bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= 100_000 {
            entries.clear();
        }
        entries.insert((database.into(), name.into()), (read, Instant::now()));
    }

    /// The query that settles `names`: one row per name, `t` when every
    /// function of that name is non-volatile, `f` otherwise (none found
    /// included). Names that cannot be quoted safely are left out (they
    /// stay writes).
    pub fn lookup_sql(names: &[Box<str>]) -> Option<String> {
        const Q: &str = "$pgsplit$";
        let quoted: Vec<String> = names
            .iter()
            .filter(|n| !n.contains(Q) && !n.contains('\0'))
            .map(|n| format!("{Q}{n}{Q}"))
            .collect();
        if quoted.is_empty() {
            return None;
        }
        Some(format!(
            "SELECT n, coalesce((SELECT bool_and(p.provolatile <> 'v') \
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace s ON s.oid = p.pronamespace \
             WHERE p.proname = i[array_length(i, 1)] \
             AND (array_length(i, 1) = 1 OR s.nspname = i[1])), false) \
             FROM (SELECT n, pg_catalog.parse_ident(n) AS i \
             FROM unnest(ARRAY[{}]::text[]) AS n) AS names",
            quoted.join(",")
        ))
    }
}

/// The last message text a session classified and its verdict: one message
/// is looked at several times (plan, sync, record), and a simple-protocol
/// text with its literals inline would miss the shared cache each time.
#[derive(Debug, Default)]
pub struct Memo {
    sql: Vec<u8>,
    verdict: Option<Arc<Verdict>>,
    /// Which classifier made it (a reload makes a new one).
    classifier: usize,
}

/// Classification for one session: its memo first, then the shared
/// classifier (and its cache).
pub struct Verdicts<'a> {
    classifier: &'a Classifier,
    memo: &'a std::sync::Mutex<Memo>,
}

impl<'a> Verdicts<'a> {
    pub fn new(classifier: &'a Classifier, memo: &'a std::sync::Mutex<Memo>) -> Self {
        Verdicts { classifier, memo }
    }

    /// The verdict on `sql` (non-UTF-8 text is a write), timed when it was
    /// not the memo's.
    pub fn get(&self, sql: &[u8], observe: &dyn Observe) -> Arc<Verdict> {
        let id = self.classifier as *const Classifier as usize;
        let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        if memo.classifier == id && memo.sql == sql {
            if let Some(verdict) = &memo.verdict {
                return Arc::clone(verdict);
            }
        }
        let started = Instant::now();
        let verdict = match std::str::from_utf8(sql) {
            Ok(text) => self.classifier.classify(text),
            Err(_) => Arc::new(Verdict::write(crate::classify::Why::Unparsable)),
        };
        observe.classified(started);
        memo.sql.clear();
        memo.sql.extend_from_slice(sql);
        memo.verdict = Some(Arc::clone(&verdict));
        memo.classifier = id;
        verdict
    }
}

/// Timing and counting hooks for classification (metrics live elsewhere).
pub trait Observe {
    fn classified(&self, started: Instant);
}
