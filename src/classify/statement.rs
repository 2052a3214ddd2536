//! The full path: parse with PostgreSQL's grammar and classify each statement.

use pg_query::protobuf::node::Node as N;
use pg_query::protobuf::{
    self, a_const, DiscardMode, RawStmt, TransactionStmtKind, VariableSetKind,
};
use serde::Serialize;

use super::functions::{FunctionLists, Settled};
use super::walk::{is_temp_schema, walk};
use super::{Access, Effect, PinCause, RouteMode, Verdict};

/// `CURSOR_OPT_HOLD` in PostgreSQL's parsenodes.h.
const CURSOR_OPT_HOLD: i32 = 0x0020;

/// One statement's classification.
struct Outcome {
    access: Access,
    reason: &'static str,
    functions: Vec<Box<str>>,
    effects: Vec<Effect>,
    /// A pgsplit setting, answered by the proxy itself.
    local_only: bool,
    /// Must not run on a replica, though a standby would run it.
    replica_forbidden: bool,
}

impl Outcome {
    fn read(reason: &'static str) -> Self {
        Outcome {
            access: Access::Read,
            reason,
            functions: Vec::new(),
            effects: Vec::new(),
            local_only: false,
            replica_forbidden: false,
        }
    }

    fn write(reason: &'static str) -> Self {
        Outcome {
            access: Access::Write,
            ..Outcome::read(reason)
        }
    }

    fn with(mut self, effect: Effect) -> Self {
        self.effects.push(effect);
        self
    }

    fn local(effect: Effect) -> Self {
        Outcome {
            local_only: true,
            ..Outcome::read("pgsplit").with(effect)
        }
    }
}

/// Parses `sql` and classifies every statement in it.
pub(crate) fn classify_parsed(sql: &str, lists: &FunctionLists) -> Verdict {
    let parsed = match pg_query::parse(sql) {
        Ok(parsed) => parsed,
        Err(_) => return Verdict::write("unparsable"),
    };
    let stmts = &parsed.protobuf.stmts;
    let mut verdict = Verdict {
        local_only: !stmts.is_empty(),
        statements: stmts.len(),
        ..Verdict::write("")
    };
    verdict.access = Access::Read;
    verdict.reason = if stmts.is_empty() { "empty" } else { "" };
    for raw in stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) else {
            return Verdict::write("unparsable");
        };
        let outcome = classify_stmt(node, stmt_text(sql, raw), lists);
        if verdict.reason.is_empty() {
            verdict.reason = outcome.reason;
        }
        if outcome.access == Access::Write && verdict.access == Access::Read {
            verdict.access = Access::Write;
            verdict.reason = outcome.reason;
        }
        for name in outcome.functions {
            if !verdict.functions.contains(&name) {
                verdict.functions.push(name);
            }
        }
        verdict.effects.extend(outcome.effects);
        verdict.local_only &= outcome.local_only;
        verdict.replica_forbidden |= outcome.replica_forbidden;
    }
    verdict
}

/// One statement's own text, from the parse result's location and length.
fn stmt_text<'a>(sql: &'a str, raw: &RawStmt) -> &'a str {
    let start = raw.stmt_location.max(0) as usize;
    let end = if raw.stmt_len <= 0 {
        sql.len()
    } else {
        start + raw.stmt_len as usize
    };
    sql.get(start..end.min(sql.len())).unwrap_or(sql).trim()
}

fn classify_stmt(node: &N, text: &str, lists: &FunctionLists) -> Outcome {
    match node {
        N::SelectStmt(_) => query(node, lists, "read"),
        N::ExplainStmt(e) => match e.query.as_ref().and_then(|q| q.node.as_ref()) {
            Some(inner) if explain_analyze(&e.options) => classify_stmt(inner, text, lists),
            // Without ANALYZE nothing is executed.
            _ => Outcome::read("explain"),
        },
        N::CopyStmt(c) => {
            if c.is_from {
                Outcome::write("copy_from")
            } else if c.is_program || !c.filename.is_empty() {
                Outcome::write("copy_file")
            } else {
                query(node, lists, "copy_to")
            }
        }
        N::VariableShowStmt(_) => Outcome::read("show"),
        N::TransactionStmt(t) => transaction(t),
        N::VariableSetStmt(s) => set(s, text),
        N::DiscardStmt(d) => match DiscardMode::try_from(d.target) {
            Ok(DiscardMode::DiscardAll) => Outcome::read("session").with(Effect::DiscardAll),
            Ok(DiscardMode::DiscardPlans | DiscardMode::DiscardSequences) => {
                Outcome::read("session")
            }
            _ => Outcome::write("utility"),
        },
        N::PrepareStmt(p) => {
            let inner = match p.query.as_ref().and_then(|q| q.node.as_ref()) {
                Some(inner) => classify_stmt(inner, text, lists),
                None => Outcome::write("unparsable"),
            };
            Outcome::read("prepare").with(Effect::Prepare {
                name: p.name.clone(),
                sql: text.to_owned(),
                read: inner.access == Access::Read,
                functions: inner.functions,
            })
        }
        N::ExecuteStmt(e) => Outcome::write("execute").with(Effect::Execute {
            name: e.name.clone(),
        }),
        N::DeallocateStmt(d) => {
            let name = if d.isall { None } else { Some(d.name.clone()) };
            Outcome::read("session").with(Effect::Deallocate { name })
        }
        N::DeclareCursorStmt(d) => {
            let mut outcome = match d.query.as_ref().and_then(|q| q.node.as_ref()) {
                Some(inner) => classify_stmt(inner, text, lists),
                None => Outcome::write("unparsable"),
            };
            if outcome.access == Access::Read {
                outcome.reason = "cursor";
            }
            if d.options & CURSOR_OPT_HOLD != 0 {
                outcome.effects.push(Effect::Pin(PinCause::HoldCursor));
            }
            outcome
        }
        // A cursor lives in its transaction (or, WITH HOLD, in a pinned
        // session), so these go wherever that is.
        N::FetchStmt(_) | N::ClosePortalStmt(_) => Outcome::read("cursor"),
        N::ListenStmt(_) => Outcome::write("utility").with(Effect::Pin(PinCause::Listen)),
        N::LoadStmt(_) => Outcome::write("utility").with(Effect::Pin(PinCause::Other)),
        N::CheckPointStmt(_) | N::AlterSystemStmt(_) => Outcome {
            replica_forbidden: true,
            ..Outcome::write("utility")
        },
        N::InsertStmt(_) | N::UpdateStmt(_) | N::DeleteStmt(_) | N::MergeStmt(_) => {
            modifying(node, "write", lists)
        }
        N::CallStmt(_) | N::CreateTableAsStmt(_) => modifying(node, "write", lists),
        N::CreateFunctionStmt(f) => {
            let mut outcome = Outcome::write("ddl");
            let schema = f.funcname.first().and_then(|n| match &n.node {
                Some(N::String(s)) if f.funcname.len() > 1 => Some(s.sval.as_str()),
                _ => None,
            });
            if schema.is_some_and(is_temp_schema) {
                outcome.effects.push(Effect::Pin(PinCause::TempObject));
            }
            outcome
        }
        _ => {
            let mut outcome = Outcome::write("utility");
            if walk(node).temp_relation {
                outcome.effects.push(Effect::Pin(PinCause::TempObject));
            }
            outcome
        }
    }
}

/// A query that is a read unless something in it writes.
fn query<T: Serialize + ?Sized>(
    node: &T,
    lists: &FunctionLists,
    read_reason: &'static str,
) -> Outcome {
    let found = walk(node);
    let (write_function, unknown, pins) = settle_all(&found.functions, lists);
    let forbidden = found.functions.iter().any(|f| replica_forbidden(f));
    let reason = if found.modifying {
        "cte_write"
    } else if found.into {
        "select_into"
    } else if found.locking {
        "locking"
    } else if write_function {
        "function"
    } else {
        let mut outcome = Outcome::read(read_reason);
        outcome.functions = unknown;
        return outcome;
    };
    let mut outcome = Outcome::write(reason);
    outcome.replica_forbidden = forbidden;
    outcome.effects = pins.into_iter().map(Effect::Pin).collect();
    if found.into && found.temp_relation {
        outcome.effects.push(Effect::Pin(PinCause::TempObject));
    }
    outcome
}

/// A statement that writes: only its pins matter.
fn modifying(node: &N, reason: &'static str, lists: &FunctionLists) -> Outcome {
    let found = walk(node);
    let (_, _, pins) = settle_all(&found.functions, lists);
    let mut outcome = Outcome::write(reason);
    outcome.replica_forbidden = found.functions.iter().any(|f| replica_forbidden(f));
    outcome.effects = pins.into_iter().map(Effect::Pin).collect();
    if found.temp_relation {
        outcome.effects.push(Effect::Pin(PinCause::TempObject));
    }
    outcome
}

/// Built-in functions a standby would run that must not run on a replica:
/// promotion, replay control, advisory locks (they would lock nothing the
/// primary sees), large objects and dblink (writes elsewhere).
fn replica_forbidden(parts: &[String]) -> bool {
    let Some(last) = parts.last() else {
        return false;
    };
    let builtin = parts.len() == 1 || (parts.len() == 2 && parts[0] == "pg_catalog");
    builtin
        && (matches!(
            last.as_str(),
            "pg_promote" | "pg_wal_replay_pause" | "pg_wal_replay_resume" | "lowrite" | "loread"
        ) || ["pg_advisory_", "pg_try_advisory_", "lo_", "dblink"]
            .iter()
            .any(|p| last.starts_with(p)))
}

/// Settles every function name: (any write?, unsettled names, pins).
fn settle_all(
    functions: &[Vec<String>],
    lists: &FunctionLists,
) -> (bool, Vec<Box<str>>, Vec<PinCause>) {
    let mut write = false;
    let mut unknown: Vec<Box<str>> = Vec::new();
    let mut pins = Vec::new();
    for parts in functions {
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        match lists.settle(&parts) {
            Settled::Read => {}
            Settled::Write(pin) => {
                write = true;
                if let Some(pin) = pin {
                    if !pins.contains(&pin) {
                        pins.push(pin);
                    }
                }
            }
            Settled::Unknown(name) => {
                if !unknown.contains(&name) {
                    unknown.push(name);
                }
            }
        }
    }
    (write, unknown, pins)
}

/// Whether EXPLAIN's options include ANALYZE that is not explicitly false.
fn explain_analyze(options: &[protobuf::Node]) -> bool {
    options.iter().any(|option| match &option.node {
        Some(N::DefElem(d)) if d.defname.eq_ignore_ascii_case("analyze") => {
            match d.arg.as_ref().and_then(|a| a.node.as_ref()) {
                None => true,
                Some(arg) => option_bool(arg).unwrap_or(true),
            }
        }
        _ => false,
    })
}

/// A boolean option value as PostgreSQL's `defGetBoolean` reads it.
fn option_bool(arg: &N) -> Option<bool> {
    let text = match arg {
        N::Boolean(b) => return Some(b.boolval),
        N::Integer(i) => return Some(i.ival != 0),
        N::String(s) => s.sval.to_ascii_lowercase(),
        N::AConst(c) => match &c.val {
            Some(a_const::Val::Boolval(b)) => return Some(b.boolval),
            Some(a_const::Val::Ival(i)) => return Some(i.ival != 0),
            Some(a_const::Val::Sval(s)) => s.sval.to_ascii_lowercase(),
            _ => return None,
        },
        _ => return None,
    };
    match text.as_str() {
        "true" | "on" | "yes" | "1" => Some(true),
        "false" | "off" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// READ ONLY / READ WRITE and SERIALIZABLE from transaction mode options.
fn transaction_modes(options: &[protobuf::Node]) -> (Option<bool>, bool) {
    let mut read_only = None;
    let mut serializable = false;
    for option in options {
        let Some(N::DefElem(d)) = &option.node else {
            continue;
        };
        let arg = d.arg.as_ref().and_then(|a| a.node.as_ref());
        match d.defname.as_str() {
            "transaction_read_only" => read_only = arg.and_then(option_bool),
            "transaction_isolation" => {
                if let Some(N::AConst(c)) = arg {
                    if let Some(a_const::Val::Sval(s)) = &c.val {
                        serializable = s.sval.eq_ignore_ascii_case("serializable");
                    }
                }
            }
            _ => {}
        }
    }
    (read_only, serializable)
}

fn transaction(t: &protobuf::TransactionStmt) -> Outcome {
    use TransactionStmtKind as K;
    match TransactionStmtKind::try_from(t.kind) {
        Ok(K::TransStmtBegin | K::TransStmtStart) => {
            let (read_only, serializable) = transaction_modes(&t.options);
            // Only a transaction declared READ ONLY is known to be a read.
            let outcome = if read_only == Some(true) {
                Outcome::read("transaction")
            } else {
                Outcome::write("transaction")
            };
            outcome.with(Effect::Begin {
                read_only,
                serializable,
            })
        }
        Ok(K::TransStmtCommit) => {
            Outcome::read("transaction").with(Effect::Commit { chain: t.chain })
        }
        Ok(K::TransStmtRollback) => {
            Outcome::read("transaction").with(Effect::Rollback { chain: t.chain })
        }
        Ok(K::TransStmtSavepoint | K::TransStmtRelease | K::TransStmtRollbackTo) => {
            Outcome::read("transaction")
        }
        Ok(K::TransStmtPrepare) => {
            Outcome::write("transaction").with(Effect::Commit { chain: false })
        }
        _ => Outcome::write("transaction"),
    }
}

/// The text of a SET's single constant argument.
fn set_value(args: &[protobuf::Node]) -> Option<String> {
    let [arg] = args else { return None };
    match &arg.node {
        Some(N::AConst(c)) => match &c.val {
            Some(a_const::Val::Sval(s)) => Some(s.sval.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn set(s: &protobuf::VariableSetStmt, text: &str) -> Outcome {
    use VariableSetKind as K;
    let name = s.name.to_lowercase();
    let kind = VariableSetKind::try_from(s.kind);
    match (kind, name.as_str()) {
        (Ok(K::VarSetValue), "pgsplit.route") => {
            match set_value(&s.args).map(|v| v.to_lowercase()).as_deref() {
                Some("primary") => Outcome::local(Effect::Route(RouteMode::Primary)),
                Some("replica") => Outcome::local(Effect::Route(RouteMode::Replica)),
                Some("auto") => Outcome::local(Effect::Route(RouteMode::Auto)),
                _ => Outcome::write("pgsplit_invalid"),
            }
        }
        (Ok(K::VarSetValue), "pgsplit.min_lsn") => match set_value(&s.args) {
            Some(lsn) => Outcome::local(Effect::MinLsn(Some(lsn))),
            None => Outcome::write("pgsplit_invalid"),
        },
        (Ok(K::VarSetDefault | K::VarReset), "pgsplit.route") => {
            Outcome::local(Effect::Route(RouteMode::Auto))
        }
        (Ok(K::VarSetDefault | K::VarReset), "pgsplit.min_lsn") => {
            Outcome::local(Effect::MinLsn(None))
        }
        (Ok(K::VarSetValue | K::VarSetDefault | K::VarSetCurrent), _) => {
            Outcome::read("set").with(Effect::Set {
                name,
                local: s.is_local,
                sql: text.to_owned(),
            })
        }
        (Ok(K::VarSetMulti), "transaction") => {
            let (read_only, serializable) = transaction_modes(&s.args);
            Outcome::read("transaction").with(Effect::SetTransaction {
                read_only,
                serializable,
            })
        }
        (Ok(K::VarSetMulti), "session characteristics") => {
            Outcome::read("set").with(Effect::Pin(PinCause::SessionCharacteristics))
        }
        // SET TRANSACTION SNAPSHOT and anything new.
        (Ok(K::VarSetMulti), _) => Outcome::write("transaction").with(Effect::Pin(PinCause::Other)),
        (Ok(K::VarReset), _) => Outcome::read("set").with(Effect::Reset { name }),
        (Ok(K::VarResetAll), _) => Outcome::read("set").with(Effect::ResetAll),
        _ => Outcome::write("utility"),
    }
}
