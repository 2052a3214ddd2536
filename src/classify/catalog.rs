//! What pgsplit learned from a database's catalog about names the
//! classifier's lists cannot settle: user functions (`pg_proc`: volatile or
//! not, and whether a body changes settings), relations (`pg_class`:
//! unlogged or not), and functions called by OID (fastpath). Per database,
//! each answer trusted for a minute, so a redefinition is noticed. Pure:
//! the caller runs the SQL these build and feeds the rows back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::functions::Settled;
use super::{body_sets_config, Classifier};

/// How long an answer is trusted.
const TTL: Duration = Duration::from_secs(60);
/// Entries kept at most (then the cache starts over).
const MAX_ENTRIES: usize = 100_000;

/// What the catalog says of a function name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionFacts {
    /// Every function of that name is immutable or stable (and one exists).
    pub read: bool,
    /// A body of that name changes settings.
    pub sets_config: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Function(Box<str>, Box<str>),
    Relation(Box<str>, Box<str>),
    Oid(Box<str>, u32),
}

#[derive(Debug, Clone, Copy)]
enum Fact {
    Function(FunctionFacts),
    Unlogged(bool),
    /// A function by OID may run on a replica.
    Allowed(bool),
}

/// See the module doc. Shared by every session.
#[derive(Debug, Default)]
pub struct Catalog {
    entries: Mutex<HashMap<Key, (Fact, Instant)>>,
}

/// Quotes `name` as a dollar-quoted literal pgsplit's own lookups use;
/// None when it cannot be quoted safely (it then stays unsettled: a write).
fn literal(name: &str) -> Option<String> {
    const Q: &str = "$pgsplit$";
    (!name.contains(Q) && !name.contains('\0')).then(|| format!("{Q}{name}{Q}"))
}

impl Catalog {
    fn get(&self, key: &Key) -> Option<Fact> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (fact, at) = entries.get(key)?;
        (at.elapsed() < TTL).then_some(*fact)
    }

    fn put(&self, key: Key, fact: Fact) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (fact, Instant::now()));
    }

    pub fn function(&self, database: &str, name: &str) -> Option<FunctionFacts> {
        match self.get(&Key::Function(database.into(), name.into()))? {
            Fact::Function(f) => Some(f),
            _ => None,
        }
    }

    pub fn relation_unlogged(&self, database: &str, name: &str) -> Option<bool> {
        match self.get(&Key::Relation(database.into(), name.into()))? {
            Fact::Unlogged(u) => Some(u),
            _ => None,
        }
    }

    pub fn function_oid(&self, database: &str, oid: u32) -> Option<bool> {
        match self.get(&Key::Oid(database.into(), oid))? {
            Fact::Allowed(a) => Some(a),
            _ => None,
        }
    }

    /// What each database's live answer says of function `name` (for the
    /// admin console, which belongs to no database), by database.
    pub fn function_everywhere(&self, name: &str) -> Vec<(Box<str>, FunctionFacts)> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(Box<str>, FunctionFacts)> = entries
            .iter()
            .filter_map(|(key, (fact, at))| match (key, fact) {
                (Key::Function(db, n), Fact::Function(f)) if &**n == name && at.elapsed() < TTL => {
                    Some((db.clone(), *f))
                }
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// What each database's live answer says of relation `name`: unlogged
    /// or not, by database.
    pub fn relation_everywhere(&self, name: &str) -> Vec<(Box<str>, bool)> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(Box<str>, bool)> = entries
            .iter()
            .filter_map(|(key, (fact, at))| match (key, fact) {
                (Key::Relation(db, n), Fact::Unlogged(u)) if &**n == name && at.elapsed() < TTL => {
                    Some((db.clone(), *u))
                }
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The query that settles function `names` (SQL identifier syntax, as
    /// the classifier hands them out): one row per (name, overload):
    /// name, provolatile, prosrc (NULLs for a name with no function).
    pub fn functions_sql(names: &[Box<str>]) -> Option<String> {
        let quoted: Vec<String> = names.iter().filter_map(|n| literal(n)).collect();
        if quoted.is_empty() {
            return None;
        }
        Some(format!(
            "SELECT n, p.provolatile, p.prosrc \
             FROM (SELECT n, pg_catalog.parse_ident(n) AS i \
                   FROM unnest(ARRAY[{}]::text[]) AS n) AS names \
             LEFT JOIN pg_catalog.pg_namespace s ON array_length(i, 1) = 2 AND s.nspname = i[1] \
             LEFT JOIN pg_catalog.pg_proc p ON p.proname = i[array_length(i, 1)] \
                  AND (array_length(i, 1) = 1 OR p.pronamespace = s.oid)",
            quoted.join(",")
        ))
    }

    /// Records the answer to [`Catalog::functions_sql`] for `names`; a name
    /// without a row (or with no function) is a write.
    pub fn put_functions(&self, database: &str, names: &[Box<str>], rows: &[Vec<Option<String>>]) {
        let mut facts: HashMap<&str, FunctionFacts> = HashMap::new();
        for row in rows {
            let [Some(name), volatility, source] = &row[..] else {
                continue;
            };
            let entry = facts.entry(name.as_str()).or_insert(FunctionFacts {
                read: true,
                sets_config: false,
            });
            match volatility.as_deref() {
                Some("i" | "s") => {}
                // Volatile, or no such function.
                _ => entry.read = false,
            }
            if source.as_deref().is_some_and(body_sets_config) {
                entry.sets_config = true;
            }
        }
        for name in names {
            let fact = facts.get(&**name).copied().unwrap_or(FunctionFacts {
                read: false,
                sets_config: false,
            });
            self.put(
                Key::Function(database.into(), name.clone()),
                Fact::Function(fact),
            );
        }
    }

    /// Records that `names` could not be looked up: writes, for a while.
    pub fn put_unknown_functions(&self, database: &str, names: &[Box<str>]) {
        for name in names {
            let fact = FunctionFacts {
                read: false,
                sets_config: false,
            };
            self.put(
                Key::Function(database.into(), name.clone()),
                Fact::Function(fact),
            );
        }
    }

    /// The query that says which of relation `names` (last name parts, as
    /// folded) are unlogged: one row per name, `t` when a relation of that
    /// name in any schema is.
    pub fn relations_sql(names: &[Box<str>]) -> Option<String> {
        let quoted: Vec<String> = names.iter().filter_map(|n| literal(n)).collect();
        if quoted.is_empty() {
            return None;
        }
        Some(format!(
            "SELECT n, EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
             WHERE c.relname = n AND c.relpersistence = 'u') \
             FROM unnest(ARRAY[{}]::text[]) AS n",
            quoted.join(",")
        ))
    }

    /// Records the answer to [`Catalog::relations_sql`]; a name without a
    /// row is taken as unlogged (unsure: the primary).
    pub fn put_relations(&self, database: &str, names: &[Box<str>], rows: &[Vec<Option<String>>]) {
        for name in names {
            let unlogged = rows
                .iter()
                .find(|r| r.first().and_then(|n| n.as_deref()) == Some(name))
                .is_none_or(|r| r.get(1).and_then(|v| v.as_deref()) != Some("f"));
            self.put(
                Key::Relation(database.into(), name.clone()),
                Fact::Unlogged(unlogged),
            );
        }
    }

    /// The query that names functions called by OID: oid, proname,
    /// schema, provolatile.
    pub fn oids_sql(oids: &[u32]) -> Option<String> {
        if oids.is_empty() {
            return None;
        }
        let list: Vec<String> = oids.iter().map(u32::to_string).collect();
        Some(format!(
            "SELECT p.oid::int8, p.proname, s.nspname, p.provolatile \
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace s ON s.oid = p.pronamespace \
             WHERE p.oid IN ({})",
            list.join(",")
        ))
    }

    /// Records the answer to [`Catalog::oids_sql`]: a function may run on a
    /// replica when the lists make it a read (or, unlisted, it is not
    /// volatile) and it has no effect that outlasts it. An OID without a row
    /// may not.
    pub fn put_oids(
        &self,
        database: &str,
        oids: &[u32],
        rows: &[Vec<Option<String>>],
        classifier: &Classifier,
    ) {
        for &oid in oids {
            let row = rows.iter().find(|r| {
                r.first()
                    .and_then(|v| v.as_deref())
                    .and_then(|v| v.parse::<u32>().ok())
                    == Some(oid)
            });
            let allowed = row.is_some_and(|r| {
                let (Some(Some(name)), Some(Some(schema))) = (r.get(1), r.get(2)) else {
                    return false;
                };
                let volatile = r.get(3).and_then(|v| v.as_deref()) == Some("v");
                match classifier.settle_function(schema, name) {
                    Settled::Read | Settled::PrimaryRead => true,
                    Settled::Write { .. } => false,
                    Settled::Unknown(_) => !volatile,
                }
            });
            self.put(Key::Oid(database.into(), oid), Fact::Allowed(allowed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[Option<&str>]) -> Vec<Option<String>> {
        cells.iter().map(|c| c.map(str::to_owned)).collect()
    }

    #[test]
    fn functions_settle_from_every_overload() {
        let c = Catalog::default();
        let names: Vec<Box<str>> = vec!["f".into(), "g".into(), "h".into(), "missing".into()];
        let rows = vec![
            row(&[Some("f"), Some("s"), Some("SELECT 1")]),
            row(&[Some("g"), Some("i"), Some("SELECT 1")]),
            row(&[Some("g"), Some("v"), Some("SELECT 2")]),
            row(&[
                Some("h"),
                Some("s"),
                Some("BEGIN PERFORM set_config('a.b', 'c', false); RETURN 1; END"),
            ]),
            row(&[Some("missing"), None, None]),
        ];
        c.put_functions("app", &names, &rows);
        c.put_functions(
            "other",
            &["f".into()],
            &[row(&[Some("f"), Some("v"), None])],
        );
        let everywhere = c.function_everywhere("f");
        assert_eq!(everywhere.len(), 2);
        assert_eq!((&*everywhere[0].0, everywhere[0].1.read), ("app", true));
        assert_eq!((&*everywhere[1].0, everywhere[1].1.read), ("other", false));
        assert!(c.function_everywhere("nope").is_empty());
        let f = |n| c.function("app", n).unwrap();
        assert_eq!((f("f").read, f("f").sets_config), (true, false));
        assert!(!f("g").read, "one volatile overload makes it a write");
        assert_eq!((f("h").read, f("h").sets_config), (true, true));
        assert!(!f("missing").read);
        assert_eq!(c.function("other_db", "f"), None);
        assert!(Catalog::functions_sql(&names)
            .unwrap()
            .contains("$pgsplit$f$pgsplit$"));
        assert_eq!(Catalog::functions_sql(&["x$pgsplit$".into()]), None);
    }

    #[test]
    fn relations_unsure_means_unlogged() {
        let c = Catalog::default();
        let names: Vec<Box<str>> = vec!["t".into(), "u".into(), "gone".into()];
        let rows = vec![row(&[Some("t"), Some("f")]), row(&[Some("u"), Some("t")])];
        c.put_relations("app", &names, &rows);
        assert_eq!(c.relation_unlogged("app", "t"), Some(false));
        assert_eq!(c.relation_unlogged("app", "u"), Some(true));
        assert_eq!(c.relation_unlogged("app", "gone"), Some(true));
        assert_eq!(c.relation_unlogged("app", "never"), None);
        assert_eq!(c.relation_everywhere("u"), [("app".into(), true)]);
    }

    #[test]
    fn functions_by_oid_follow_the_lists() {
        let c = Catalog::default();
        let classifier = Classifier::new(&[], &[], 0);
        let rows = vec![
            row(&[Some("1"), Some("lo_open"), Some("pg_catalog"), Some("v")]),
            row(&[Some("2"), Some("lower"), Some("pg_catalog"), Some("i")]),
            row(&[Some("3"), Some("myread"), Some("public"), Some("s")]),
            row(&[Some("4"), Some("mywrite"), Some("public"), Some("v")]),
        ];
        c.put_oids("app", &[1, 2, 3, 4, 5], &rows, &classifier);
        let allowed = |oid| c.function_oid("app", oid).unwrap();
        assert!(!allowed(1));
        assert!(allowed(2));
        assert!(allowed(3));
        assert!(!allowed(4));
        assert!(!allowed(5));
    }
}
