//! Statement classification: SQL text in, a [`Verdict`] out.
//!
//! Pure: no I/O, no tokio. It reads the text with PostgreSQL's own lexer and
//! parser (libpg_query through the `pg_query` crate), never with keyword
//! matching, so comments, dollar quotes and escape strings cannot hide a
//! statement. The rule is **unsure means primary**: a statement is a read only
//! when it is proven read-only; anything else, unparsable text included, is a
//! write. Function calls it cannot settle from its lists are handed back to
//! the caller, who must look them up and treat any it cannot prove read-only
//! as a write.
//!
//! What it cannot see (the caller's catalog can): functions hidden behind
//! views, user-defined operators and casts, attribute-notation calls
//! (`t.f` meaning `f(t)`), and user overloads of built-in names.

pub mod catalog;
mod fast;
mod functions;
mod key;
mod statement;
mod walk;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_effects;
#[cfg(test)]
mod tests_standby;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use functions::FunctionLists;
pub use functions::DEFAULT_PRIMARY_RELATIONS;
pub use statement::body_sets_config;

/// Where a statement may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Proven read-only (subject to the caller settling `functions`).
    Read,
    /// Anything else.
    Write,
}

/// A `pgsplit.route` value or a `/* pgsplit:… */` comment hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteMode {
    Primary,
    Replica,
    Auto,
}

/// Why a session must keep its server connection (and what the
/// `pgsplit_pinned_sessions` gauge counts by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PinCause {
    /// CREATE TEMP table/view/sequence, SELECT INTO TEMP, `pg_temp` objects.
    TempObject,
    /// LISTEN.
    Listen,
    /// A session-level advisory lock (`pg_advisory_lock` and friends).
    AdvisoryLock,
    /// DECLARE … WITH HOLD.
    HoldCursor,
    /// SET SESSION CHARACTERISTICS AS TRANSACTION.
    SessionCharacteristics,
    /// A DO block or routine whose body changes settings (`SET`,
    /// `set_config(…, false)`): what it set is known only to its server.
    HiddenSet,
    /// A SET inside a transaction whose outcome pgsplit cannot tell (a
    /// savepoint was rolled back after it).
    SetInTransaction,
    /// LOAD, `set_config()`, `setseed()`, `dblink_connect()`, SET TRANSACTION
    /// SNAPSHOT, a prepared SET.
    Other,
}

impl PinCause {
    /// Every cause, in label order.
    pub const ALL: [PinCause; 8] = [
        PinCause::TempObject,
        PinCause::Listen,
        PinCause::AdvisoryLock,
        PinCause::HoldCursor,
        PinCause::SessionCharacteristics,
        PinCause::HiddenSet,
        PinCause::SetInTransaction,
        PinCause::Other,
    ];

    /// A bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            PinCause::TempObject => "temp_object",
            PinCause::Listen => "listen",
            PinCause::AdvisoryLock => "advisory_lock",
            PinCause::HoldCursor => "hold_cursor",
            PinCause::SessionCharacteristics => "session_characteristics",
            PinCause::HiddenSet => "hidden_set",
            PinCause::SetInTransaction => "set_in_transaction",
            PinCause::Other => "other",
        }
    }

    /// Whether reads may still go to a replica while this pin holds (the
    /// pinned state does not change what a read sees; a read that could see
    /// a temp object is kept home by the caller).
    pub fn allows_replica_reads(self) -> bool {
        matches!(
            self,
            PinCause::TempObject | PinCause::Listen | PinCause::AdvisoryLock | PinCause::HoldCursor
        )
    }
}

/// Why a statement is classified as it is: the first write's kind, else the
/// first statement's. `label()` is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Why {
    Read,
    Explain,
    Show,
    CopyTo,
    Cursor,
    Prepare,
    Set,
    Session,
    Transaction,
    Empty,
    /// A pgsplit setting (`SET pgsplit.route`, …), answered by pgsplit.
    Pgsplit,
    Write,
    Ddl,
    Utility,
    CopyFrom,
    CopyFile,
    CteWrite,
    SelectInto,
    Locking,
    Function,
    Execute,
    PgsplitInvalid,
    Unparsable,
    TooComplex,
    BackslashString,
}

impl Why {
    pub fn label(self) -> &'static str {
        match self {
            Why::Read => "read",
            Why::Explain => "explain",
            Why::Show => "show",
            Why::CopyTo => "copy_to",
            Why::Cursor => "cursor",
            Why::Prepare => "prepare",
            Why::Set => "set",
            Why::Session => "session",
            Why::Transaction => "transaction",
            Why::Empty => "empty",
            Why::Pgsplit => "pgsplit",
            Why::Write => "write",
            Why::Ddl => "ddl",
            Why::Utility => "utility",
            Why::CopyFrom => "copy_from",
            Why::CopyFile => "copy_file",
            Why::CteWrite => "cte_write",
            Why::SelectInto => "select_into",
            Why::Locking => "locking",
            Why::Function => "function",
            Why::Execute => "execute",
            Why::PgsplitInvalid => "pgsplit_invalid",
            Why::Unparsable => "unparsable",
            Why::TooComplex => "too_complex",
            Why::BackslashString => "backslash_string",
        }
    }
}

/// Transaction and session effects of one statement, in statement order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// BEGIN / START TRANSACTION. `read_only` is `None` when not stated.
    Begin {
        read_only: Option<bool>,
        serializable: bool,
    },
    /// SET TRANSACTION … (the current transaction's characteristics).
    SetTransaction {
        read_only: Option<bool>,
        serializable: bool,
    },
    /// COMMIT, END, PREPARE TRANSACTION (it ends the transaction too).
    /// `chain`: AND CHAIN, a new transaction with the same characteristics
    /// starts at once (stay on the same server).
    Commit { chain: bool },
    /// ROLLBACK, ABORT (not ROLLBACK TO SAVEPOINT). `chain` as for Commit.
    Rollback { chain: bool },
    /// ROLLBACK TO SAVEPOINT: what the transaction did since may be undone.
    RollbackToSavepoint,
    /// SET [SESSION|LOCAL] name …, SET ROLE, SET SESSION AUTHORIZATION,
    /// SET TIME ZONE (name `timezone`). `sql` is this statement's own text,
    /// to replay on another server. `name` is lower case; `value` is the
    /// single constant value, lower case, when there is one.
    Set {
        name: String,
        local: bool,
        sql: String,
        value: Option<String>,
    },
    /// RESET name (RESET ROLE: `role`; RESET SESSION AUTHORIZATION:
    /// `session_authorization`).
    Reset { name: String },
    /// RESET ALL.
    ResetAll,
    /// DISCARD ALL.
    DiscardAll,
    /// DISCARD TEMP (or TEMPORARY): the session's temp objects are gone.
    DiscardTemp,
    /// SQL PREPARE. `sql` is the whole PREPARE statement; `read` says whether
    /// the prepared statement is a read, provided the caller also settles
    /// `functions` (its unsettled function names); `forbidden` whether the
    /// read-only port must refuse executing it.
    Prepare {
        name: String,
        sql: String,
        read: bool,
        functions: Vec<Box<str>>,
        forbidden: bool,
    },
    /// SQL EXECUTE name, alone or inside EXPLAIN or CREATE TABLE AS. `runs`
    /// is false when it is only explained (EXPLAIN without ANALYZE): its
    /// statement must exist, but nothing runs.
    Execute { name: String, runs: bool },
    /// DEALLOCATE [PREPARE] name; `None` for ALL.
    Deallocate { name: Option<String> },
    /// The session cannot move between servers from now on.
    Pin(PinCause),
    /// LISTEN channel.
    Listen(String),
    /// UNLISTEN channel; `None` for UNLISTEN *.
    Unlisten(Option<String>),
    /// DECLARE name … WITH HOLD.
    HoldCursor(String),
    /// CLOSE name; `None` for CLOSE ALL.
    CloseCursor(Option<String>),
    /// A temporary object of this name was created (it shadows regular
    /// relations of the same name through `pg_temp` in the search path).
    TempObject(String),
    /// `pg_advisory_unlock_all()`: the session holds no advisory lock.
    AdvisoryUnlockAll,
    /// SET pgsplit.route = … (RESET pgsplit.route means Auto). Local only.
    Route(RouteMode),
    /// SET pgsplit.min_lsn = '…'; `None` for RESET. Local only.
    MinLsn(Option<String>),
}

/// The classification of one Query or Parse message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Write if any statement is a write, else Read. The caller must still
    /// settle `functions`.
    pub access: Access,
    /// The first write's kind, else the first statement's.
    pub why: Why,
    /// Function names the lists could not settle, in SQL identifier syntax
    /// (`myfunc`, `myschema.f`, `"MixedCase"`), deduplicated. For a read the
    /// caller must prove each one read-only; for any statement, one whose
    /// body changes settings pins the session (see [`PinCause::HiddenSet`]).
    pub functions: Vec<Box<str>>,
    /// Relation names a read refers to (last name part, as the server folds
    /// it), deduplicated: the caller checks that none is unlogged. May hold
    /// more names than relations (the lexer-only path lists every name).
    pub relations: Vec<Box<str>>,
    /// Transaction and session effects, in statement order.
    pub effects: Vec<Effect>,
    /// A `/* pgsplit:primary */` or `/* pgsplit:replica */` comment (a real
    /// comment, as the lexer sees it). Primary wins if both appear.
    pub hint: Option<RouteMode>,
    /// Every statement is a pgsplit setting: answer locally, send nothing.
    pub local_only: bool,
    /// A read that asks about the server it runs on (its WAL position,
    /// whether it is in recovery, its backend pid, `transaction_read_only`)
    /// or reads a node's own runtime state (`routing.primary_relations`):
    /// on the read-write port it is the primary's question.
    pub primary_only: bool,
    /// Something the read-only port must refuse: a data-modifying or DDL
    /// statement, or a function with an effect that outlasts the statement
    /// (promotion, replay control, advisory locks, large objects, dblink,
    /// replication slots, signals, CHECKPOINT, ALTER SYSTEM, ...), even where
    /// a standby would accept it.
    pub replica_forbidden: bool,
    /// Statements in the text (0 when it could not be parsed).
    pub statements: usize,
}

impl Verdict {
    pub fn write(why: Why) -> Self {
        Verdict {
            access: Access::Write,
            why,
            functions: Vec::new(),
            relations: Vec::new(),
            effects: Vec::new(),
            hint: None,
            local_only: false,
            primary_only: false,
            replica_forbidden: false,
            statements: 0,
        }
    }

    /// Whether any statement is a COMMIT/ROLLBACK (ending the transaction).
    pub fn ends_transaction(&self) -> bool {
        self.effects
            .iter()
            .any(|e| matches!(e, Effect::Commit { .. } | Effect::Rollback { .. }))
    }
}

const SHARDS: usize = 16;

/// Texts longer than this are classified but not cached: a cache of bulk
/// INSERTs would hold megabytes for nothing.
pub const MAX_CACHED_LEN: usize = 8 * 1024;

type Shard = Mutex<HashMap<Box<str>, Arc<Verdict>>>;

/// Classifies statements, with a bounded cache keyed by exact text.
/// `Send + Sync`: one is shared by every session.
pub struct Classifier {
    lists: FunctionLists,
    shards: Box<[Shard]>,
    shard_capacity: usize,
    hasher: RandomState,
}

impl Classifier {
    /// `read_functions`/`write_functions` are the configured overrides (write
    /// wins; neither overrides the built-in write list). `cache_capacity` is
    /// the total number of cached texts; 0 disables the cache. Reads of
    /// [`DEFAULT_PRIMARY_RELATIONS`] are the primary's (see
    /// [`Classifier::with_primary_relations`]).
    pub fn new(
        read_functions: &[String],
        write_functions: &[String],
        cache_capacity: usize,
    ) -> Self {
        Classifier {
            lists: FunctionLists::new(read_functions, write_functions),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_capacity: cache_capacity.div_ceil(SHARDS),
            hasher: RandomState::new(),
        }
    }

    /// Replaces the relations whose reads are the primary's
    /// (`routing.primary_relations`; `x*` matches a prefix).
    pub fn with_primary_relations(mut self, names: &[String]) -> Self {
        self.lists
            .set_primary_relations(names.iter().map(String::as_str));
        self
    }

    /// Classifies `sql`, from the cache when this text (or, for a plain
    /// SELECT/INSERT/UPDATE/DELETE, this text up to its literal values: see
    /// `key`) was seen. A full shard is cleared before an insert (crude,
    /// bounded, and cheap); texts over [`MAX_CACHED_LEN`] bytes are not
    /// cached.
    pub fn classify(&self, sql: &str) -> Arc<Verdict> {
        if self.shard_capacity == 0 || sql.len() > MAX_CACHED_LEN {
            return Arc::new(self.classify_uncached(sql));
        }
        let normalised = key::literal_free(sql);
        let key = normalised.as_deref().unwrap_or(sql);
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        if let Some(hit) = lock(shard).get(key) {
            return Arc::clone(hit);
        }
        // Classify outside the lock: parsing is the slow part.
        let verdict = Arc::new(self.classify_uncached(sql));
        let mut map = lock(shard);
        if map.len() >= self.shard_capacity {
            map.clear();
        }
        map.insert(key.into(), Arc::clone(&verdict));
        verdict
    }

    /// How a function `schema.name` settles by the lists alone.
    pub(crate) fn settle_function(&self, schema: &str, name: &str) -> functions::Settled {
        self.lists.settle(&[schema, name])
    }

    /// Classifies `sql` without the cache.
    pub fn classify_uncached(&self, sql: &str) -> Verdict {
        let scanned = match fast::scan(sql) {
            Ok(scanned) => scanned,
            // The parser uses the same lexer, so it would fail too.
            Err(_) => return Verdict::write(Why::Unparsable),
        };
        let mut verdict = if scanned.backslash_in_plain_string {
            // Whether `\` escapes a quote depends on the server's
            // standard_conforming_strings, which the text does not say.
            Verdict {
                replica_forbidden: true,
                ..Verdict::write(Why::BackslashString)
            }
        } else if fast::plain_select(sql, &scanned.tokens, &self.lists) {
            let relations = fast::names(sql, &scanned.tokens);
            Verdict {
                access: Access::Read,
                why: Why::Read,
                functions: Vec::new(),
                primary_only: relations.iter().any(|r| self.lists.primary_relation(r)),
                relations,
                effects: Vec::new(),
                hint: None,
                local_only: false,
                replica_forbidden: false,
                statements: 1,
            }
        } else {
            parse_with_room(sql, scanned.nesting_bound, &self.lists)
        };
        verdict.hint = scanned.hint;
        verdict
    }
}

/// Nesting bounds up to this are parsed on the caller's stack (a tokio worker
/// has 2 MiB).
const INLINE_NESTING: usize = 64;
/// Stack reserved per unit of nesting bound for a deeper parse.
const STACK_PER_LEVEL: usize = 16 * 1024;
/// Beyond this bound the text is not parsed at all (and is a write).
const MAX_NESTING: usize = 16 * 1024;

/// Parses on the caller's stack when the text cannot nest deeply, else on a
/// scoped thread with a stack sized for it: libpg_query recurses over the
/// tree without a depth check, and a stack overflow would abort the proxy.
fn parse_with_room(sql: &str, nesting_bound: usize, lists: &FunctionLists) -> Verdict {
    if nesting_bound <= INLINE_NESTING {
        return statement::classify_parsed(sql, lists);
    }
    if nesting_bound > MAX_NESTING {
        return Verdict {
            replica_forbidden: true,
            ..Verdict::write(Why::TooComplex)
        };
    }
    let stack = (nesting_bound * STACK_PER_LEVEL).max(2 << 20);
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("classify-parse".into())
            .stack_size(stack)
            .spawn_scoped(scope, || statement::classify_parsed(sql, lists))
            .ok()
            .and_then(|parse| parse.join().ok())
            .unwrap_or_else(|| Verdict::write(Why::Unparsable))
    })
}

fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<Verdict>>> {
    // A panic while holding the lock cannot leave the map inconsistent (only
    // whole inserts and clears happen under it), so poisoning is ignored.
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
