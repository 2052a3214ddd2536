//! What pgsplit learned from a database's catalog about names the
//! classifier's lists cannot settle: user functions (`pg_proc`: volatile or
//! not, and whether a body changes settings), relations (`pg_class`:
//! unlogged or not), and functions called by OID (fastpath). Per database,
//! each answer trusted for a minute, so a redefinition is noticed. Pure:
//! the caller runs the SQL these build and feeds the rows back.

use std::collections::HashMap;
use std::sync::RwLock;
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

/// One database's answers, each with when it was learned. Looked up by
/// borrowed names: a lookup allocates nothing.
#[derive(Debug, Default)]
struct Database {
    functions: HashMap<Box<str>, (FunctionFacts, Instant)>,
    /// Relation name → unlogged.
    relations: HashMap<Box<str>, (bool, Instant)>,
    /// Function OID → may run on a replica.
    oids: HashMap<u32, (bool, Instant)>,
}

impl Database {
    fn len(&self) -> usize {
        self.functions.len() + self.relations.len() + self.oids.len()
    }
}

/// The answer, while it is trusted.
fn fresh<T: Copy>(entry: Option<&(T, Instant)>) -> Option<T> {
    entry.filter(|(_, at)| at.elapsed() < TTL).map(|(v, _)| *v)
}

/// See the module doc. Shared by every session; read far more often than
/// written.
#[derive(Debug, Default)]
pub struct Catalog {
    databases: RwLock<HashMap<Box<str>, Database>>,
}

/// Quotes `name` as a dollar-quoted literal pgsplit's own lookups use;
/// None when it cannot be quoted safely (it then stays unsettled: a write).
fn literal(name: &str) -> Option<String> {
    const Q: &str = "$pgsplit$";
    (!name.contains(Q) && !name.contains('\0')).then(|| format!("{Q}{name}{Q}"))
}

impl Catalog {
    /// Reads `database`'s answers.
    fn read<T>(&self, database: &str, f: impl FnOnce(&Database) -> Option<T>) -> Option<T> {
        let databases = self.databases.read().unwrap_or_else(|p| p.into_inner());
        f(databases.get(database)?)
    }

    /// Records answers for `database`.
    fn write(&self, database: &str, f: impl FnOnce(&mut Database)) {
        let mut databases = self.databases.write().unwrap_or_else(|p| p.into_inner());
        if databases.values().map(Database::len).sum::<usize>() >= MAX_ENTRIES {
            databases.clear();
        }
        f(databases.entry(database.into()).or_default());
    }

    pub fn function(&self, database: &str, name: &str) -> Option<FunctionFacts> {
        self.read(database, |d| fresh(d.functions.get(name)))
    }

    pub fn relation_unlogged(&self, database: &str, name: &str) -> Option<bool> {
        self.read(database, |d| fresh(d.relations.get(name)))
    }

    pub fn function_oid(&self, database: &str, oid: u32) -> Option<bool> {
        self.read(database, |d| fresh(d.oids.get(&oid)))
    }

    /// What each database's live answer says of function `name` (for the
    /// admin console, which belongs to no database), by database name.
    pub fn function_everywhere(&self, name: &str) -> Vec<(Box<str>, FunctionFacts)> {
        self.everywhere(|d| fresh(d.functions.get(name)))
    }

    /// What each database's live answer says of relation `name`: unlogged
    /// or not, by database name.
    pub fn relation_everywhere(&self, name: &str) -> Vec<(Box<str>, bool)> {
        self.everywhere(|d| fresh(d.relations.get(name)))
    }

    /// `f`'s answer in each database that has one, sorted by database name.
    fn everywhere<T>(&self, f: impl Fn(&Database) -> Option<T>) -> Vec<(Box<str>, T)> {
        let databases = self.databases.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(Box<str>, T)> = databases
            .iter()
            .filter_map(|(db, d)| Some((db.clone(), f(d)?)))
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
        let now = Instant::now();
        self.write(database, |d| {
            for name in names {
                let fact = facts.get(&**name).copied().unwrap_or(FunctionFacts {
                    read: false,
                    sets_config: false,
                });
                d.functions.insert(name.clone(), (fact, now));
            }
        });
    }

    /// Records that `names` could not be looked up: writes, for a while.
    pub fn put_unknown_functions(&self, database: &str, names: &[Box<str>]) {
        let fact = FunctionFacts {
            read: false,
            sets_config: false,
        };
        let now = Instant::now();
        self.write(database, |d| {
            for name in names {
                d.functions.insert(name.clone(), (fact, now));
            }
        });
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
        let now = Instant::now();
        self.write(database, |d| {
            for name in names {
                let unlogged = rows
                    .iter()
                    .find(|r| r.first().and_then(|n| n.as_deref()) == Some(name))
                    .is_none_or(|r| r.get(1).and_then(|v| v.as_deref()) != Some("f"));
                d.relations.insert(name.clone(), (unlogged, now));
            }
        });
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
        let mut answers = Vec::with_capacity(oids.len());
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
            answers.push((oid, allowed));
        }
        let now = Instant::now();
        self.write(database, |d| {
            for (oid, allowed) in answers {
                d.oids.insert(oid, (allowed, now));
            }
        });
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
