//! The full path: parse with PostgreSQL's grammar and classify each statement.

use pg_query::protobuf::node::Node as N;
use pg_query::protobuf::{
    self, a_const, DiscardMode, RawStmt, TransactionStmtKind, VariableSetKind,
};
use serde::Serialize;

use super::functions::{FunctionLists, Settled, PRIMARY_SETTINGS};
use super::walk::{is_temp_schema, walk, Findings};
use super::{Access, Effect, PinCause, RouteMode, Verdict, Why};

/// `CURSOR_OPT_HOLD` in PostgreSQL's parsenodes.h.
const CURSOR_OPT_HOLD: i32 = 0x0020;

/// One statement's classification.
struct Outcome {
    access: Access,
    why: Why,
    functions: Vec<Box<str>>,
    relations: Vec<Box<str>>,
    effects: Vec<Effect>,
    /// A pgsplit setting, answered by the proxy itself.
    local_only: bool,
    /// A read about the server itself: the primary's on the read-write port.
    primary_only: bool,
    /// The read-only port must refuse it.
    replica_forbidden: bool,
}

impl Outcome {
    fn read(why: Why) -> Self {
        Outcome {
            access: Access::Read,
            why,
            functions: Vec::new(),
            relations: Vec::new(),
            effects: Vec::new(),
            local_only: false,
            primary_only: false,
            replica_forbidden: false,
        }
    }

    /// A write the read-only port refuses.
    fn write(why: Why) -> Self {
        Outcome {
            access: Access::Write,
            replica_forbidden: true,
            ..Outcome::read(why)
        }
    }

    /// A write a standby refuses by itself without any effect, or whose
    /// effect ends with the session: the read-only port lets it through.
    fn harmless_write(why: Why) -> Self {
        Outcome {
            replica_forbidden: false,
            ..Outcome::write(why)
        }
    }

    fn with(mut self, effect: Effect) -> Self {
        self.effects.push(effect);
        self
    }

    fn local(effect: Effect) -> Self {
        Outcome {
            local_only: true,
            ..Outcome::read(Why::Pgsplit).with(effect)
        }
    }
}

/// Parses `sql` and classifies every statement in it.
pub(crate) fn classify_parsed(sql: &str, lists: &FunctionLists) -> Verdict {
    let parsed = match pg_query::parse(sql) {
        Ok(parsed) => parsed,
        Err(_) => return Verdict::write(Why::Unparsable),
    };
    let stmts = &parsed.protobuf.stmts;
    let mut verdict = Verdict {
        local_only: !stmts.is_empty(),
        statements: stmts.len(),
        ..Verdict::write(Why::Empty)
    };
    verdict.access = Access::Read;
    let mut first = true;
    for raw in stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) else {
            return Verdict::write(Why::Unparsable);
        };
        let outcome = classify_stmt(node, stmt_text(sql, raw), lists);
        if first {
            verdict.why = outcome.why;
            first = false;
        }
        if outcome.access == Access::Write && verdict.access == Access::Read {
            verdict.access = Access::Write;
            verdict.why = outcome.why;
        }
        for name in outcome.functions {
            if !verdict.functions.contains(&name) {
                verdict.functions.push(name);
            }
        }
        for name in outcome.relations {
            if !verdict.relations.contains(&name) {
                verdict.relations.push(name);
            }
        }
        verdict.effects.extend(outcome.effects);
        verdict.local_only &= outcome.local_only;
        verdict.primary_only |= outcome.primary_only;
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
        N::SelectStmt(_) => query(node, lists, Why::Read),
        N::ExplainStmt(e) => match e.query.as_ref().and_then(|q| q.node.as_ref()) {
            Some(inner) if explain_analyze(&e.options) => classify_stmt(inner, text, lists),
            // Without ANALYZE nothing is executed; an EXECUTE's statement
            // must still exist where it is explained.
            Some(N::ExecuteStmt(x)) => Outcome::read(Why::Explain).with(Effect::Execute {
                name: x.name.clone(),
                runs: false,
            }),
            _ => Outcome::read(Why::Explain),
        },
        N::CopyStmt(c) => {
            if c.is_from {
                Outcome::write(Why::CopyFrom)
            } else if c.is_program || !c.filename.is_empty() {
                Outcome::write(Why::CopyFile)
            } else {
                query(node, lists, Why::CopyTo)
            }
        }
        N::VariableShowStmt(v) => {
            let mut outcome = Outcome::read(Why::Show);
            let name = v.name.to_ascii_lowercase();
            outcome.primary_only = name == "all" || PRIMARY_SETTINGS.contains(&name.as_str());
            outcome
        }
        N::TransactionStmt(t) => transaction(t),
        N::VariableSetStmt(s) => set(s, text),
        N::DiscardStmt(d) => match DiscardMode::try_from(d.target) {
            Ok(DiscardMode::DiscardAll) => Outcome::read(Why::Session).with(Effect::DiscardAll),
            // It runs where the temp objects are: the session's own server.
            Ok(DiscardMode::DiscardTemp) => {
                Outcome::harmless_write(Why::Utility).with(Effect::DiscardTemp)
            }
            Ok(DiscardMode::DiscardPlans | DiscardMode::DiscardSequences) => {
                Outcome::read(Why::Session)
            }
            _ => Outcome::write(Why::Utility),
        },
        N::PrepareStmt(p) => {
            let inner = match p.query.as_ref().and_then(|q| q.node.as_ref()) {
                Some(inner) => classify_stmt(inner, text, lists),
                None => Outcome::write(Why::Unparsable),
            };
            Outcome::read(Why::Prepare).with(Effect::Prepare {
                name: p.name.clone(),
                sql: text.to_owned(),
                read: inner.access == Access::Read && !inner.primary_only,
                functions: inner.functions,
                forbidden: inner.replica_forbidden,
            })
        }
        // What it does is its prepared statement's: the caller knows.
        N::ExecuteStmt(e) => Outcome::read(Why::Execute).with(Effect::Execute {
            name: e.name.clone(),
            runs: true,
        }),
        N::DeallocateStmt(d) => {
            let name = if d.isall { None } else { Some(d.name.clone()) };
            Outcome::read(Why::Session).with(Effect::Deallocate { name })
        }
        N::DeclareCursorStmt(d) => {
            let mut outcome = match d.query.as_ref().and_then(|q| q.node.as_ref()) {
                Some(inner) => classify_stmt(inner, text, lists),
                None => Outcome::write(Why::Unparsable),
            };
            if outcome.access == Access::Read {
                outcome.why = Why::Cursor;
            }
            if d.options & CURSOR_OPT_HOLD != 0 {
                outcome.effects.push(Effect::Pin(PinCause::HoldCursor));
                outcome
                    .effects
                    .push(Effect::HoldCursor(d.portalname.clone()));
            }
            outcome
        }
        // A cursor lives in its transaction (or, WITH HOLD, in a pinned
        // session), so these go wherever that is.
        N::FetchStmt(_) => Outcome::read(Why::Cursor),
        N::ClosePortalStmt(c) => {
            let name = (!c.portalname.is_empty()).then(|| c.portalname.clone());
            Outcome::read(Why::Cursor).with(Effect::CloseCursor(name))
        }
        N::ListenStmt(l) => Outcome::write(Why::Utility)
            .with(Effect::Pin(PinCause::Listen))
            .with(Effect::Listen(l.conditionname.clone())),
        N::UnlistenStmt(u) => {
            let name = (!u.conditionname.is_empty()).then(|| u.conditionname.clone());
            Outcome::harmless_write(Why::Utility).with(Effect::Unlisten(name))
        }
        N::LoadStmt(_) => Outcome::harmless_write(Why::Utility).with(Effect::Pin(PinCause::Other)),
        // A standby takes ACCESS SHARE … ROW EXCLUSIVE locks and refuses
        // stronger ones itself; a lock outlives nothing.
        N::LockStmt(_) => Outcome::harmless_write(Why::Utility),
        N::DoStmt(d) => {
            let mut outcome = Outcome::write(Why::Utility);
            if do_body(d).is_some_and(body_sets_config) {
                outcome.effects.push(Effect::Pin(PinCause::HiddenSet));
            }
            outcome
        }
        N::InsertStmt(_) | N::UpdateStmt(_) | N::DeleteStmt(_) | N::MergeStmt(_) => {
            modifying(node, Why::Write, lists)
        }
        N::CallStmt(_) | N::CreateTableAsStmt(_) => modifying(node, Why::Write, lists),
        N::CreateFunctionStmt(f) => {
            let mut outcome = Outcome::write(Why::Ddl);
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
            let mut outcome = Outcome::write(Why::Utility);
            temp_effects(&walk(node), &mut outcome);
            outcome
        }
    }
}

/// The body of a DO block (its `AS` string).
fn do_body(d: &protobuf::DoStmt) -> Option<&str> {
    d.args.iter().find_map(|arg| match &arg.node {
        Some(N::DefElem(e)) if e.defname == "as" => match e.arg.as_ref()?.node.as_ref()? {
            N::String(s) => Some(s.sval.as_str()),
            _ => None,
        },
        _ => None,
    })
}

/// Whether procedural code may change session settings: a `set_config(`
/// call, or a `SET` that starts a statement (after `;`, `BEGIN`, `THEN`,
/// `ELSE`, `LOOP`, a quote for dynamic SQL, or the start) and is not `SET
/// LOCAL`. Errs towards yes: a false yes pins a session, a false no would let
/// a later read miss a setting.
pub fn body_sets_config(body: &str) -> bool {
    let lower = body.to_ascii_lowercase();
    if lower.contains("set_config") {
        return true;
    }
    let bytes = lower.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while let Some(found) = lower[i..].find("set") {
        let at = i + found;
        i = at + 3;
        let before_ok = at == 0 || !word(bytes[at - 1]);
        let after_ok = bytes.get(at + 3).is_none_or(|b| b.is_ascii_whitespace());
        if !before_ok || !after_ok {
            continue;
        }
        // What precedes the word, skipping white space.
        let head = lower[..at].trim_end();
        let starts_statement = head.is_empty()
            || head.ends_with(';')
            || head.ends_with('\'')
            || head.ends_with('"')
            || ["begin", "then", "else", "loop", "do", "$$"]
                .iter()
                .any(|k| head.ends_with(k));
        if !starts_statement {
            continue;
        }
        let rest = lower[at + 3..].trim_start();
        if rest.starts_with("local ") || rest.starts_with("transaction") {
            continue;
        }
        return true;
    }
    false
}

/// Temp-object pins and names found by a walk (a table created ON COMMIT
/// DROP does not outlive its transaction: no pin).
fn temp_effects(found: &Findings, outcome: &mut Outcome) {
    if !found.temp_relation {
        return;
    }
    if !found.on_commit_drop {
        outcome.effects.push(Effect::Pin(PinCause::TempObject));
    }
    for name in &found.temp_names {
        outcome.effects.push(Effect::TempObject(name.clone()));
    }
}

/// A query that is a read unless something in it writes.
fn query<T: Serialize + ?Sized>(node: &T, lists: &FunctionLists, read_why: Why) -> Outcome {
    let found = walk(node);
    let settled = settle_all(&found.functions, lists);
    let primary_setting = found
        .setting_args
        .iter()
        .any(|a| PRIMARY_SETTINGS.contains(&a.as_str()));
    let primary_relation = found.relations.iter().any(|r| lists.primary_relation(r));
    let why = if found.modifying {
        Why::CteWrite
    } else if found.into {
        Why::SelectInto
    } else if found.locking {
        Why::Locking
    } else if settled.write {
        Why::Function
    } else {
        let mut outcome = Outcome::read(read_why);
        outcome.functions = settled.unknown;
        outcome.relations = dedup(found.relations);
        outcome.primary_only = settled.primary || primary_setting || primary_relation;
        outcome.effects = settled.effects;
        return outcome;
    };
    let mut outcome = if found.modifying || found.into || settled.lasting {
        Outcome::write(why)
    } else {
        // A row lock or a session-only function: the standby refuses the
        // former and the latter ends with the session.
        Outcome::harmless_write(why)
    };
    outcome.functions = settled.unknown;
    outcome.effects = settled.pins.into_iter().map(Effect::Pin).collect();
    outcome.effects.extend(settled.effects);
    if found.into {
        temp_effects(&found, &mut outcome);
    }
    outcome
}

/// A statement that writes: its pins, its EXECUTEs and the user functions
/// it calls (whose bodies may change settings) matter.
fn modifying(node: &N, why: Why, lists: &FunctionLists) -> Outcome {
    let found = walk(node);
    let settled = settle_all(&found.functions, lists);
    let mut outcome = Outcome::write(why);
    outcome.functions = settled.unknown;
    outcome.effects = settled.pins.into_iter().map(Effect::Pin).collect();
    outcome.effects.extend(settled.effects);
    temp_effects(&found, &mut outcome);
    for name in found.executes {
        outcome.effects.push(Effect::Execute { name, runs: true });
    }
    outcome
}

fn dedup(names: Vec<String>) -> Vec<Box<str>> {
    let mut out: Vec<Box<str>> = Vec::with_capacity(names.len());
    for name in names {
        if !out.iter().any(|n| **n == *name) {
            out.push(name.into_boxed_str());
        }
    }
    out
}

/// What a statement's function calls add up to.
#[derive(Default)]
struct SettledCalls {
    /// A write function.
    write: bool,
    /// A write whose effect outlasts the statement.
    lasting: bool,
    /// A read the primary must answer.
    primary: bool,
    /// Names to look up.
    unknown: Vec<Box<str>>,
    pins: Vec<PinCause>,
    /// Effects of particular calls (`pg_advisory_unlock_all()`).
    effects: Vec<Effect>,
}

fn settle_all(functions: &[Vec<String>], lists: &FunctionLists) -> SettledCalls {
    let mut out = SettledCalls::default();
    for parts in functions {
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        match lists.settle(&parts) {
            Settled::Read => {}
            Settled::PrimaryRead => out.primary = true,
            Settled::Write { pin, lasting } => {
                out.write = true;
                out.lasting |= lasting;
                if let Some(pin) = pin {
                    if !out.pins.contains(&pin) {
                        out.pins.push(pin);
                    }
                }
                if parts.last() == Some(&"pg_advisory_unlock_all")
                    && !out.effects.contains(&Effect::AdvisoryUnlockAll)
                {
                    out.effects.push(Effect::AdvisoryUnlockAll);
                }
            }
            Settled::Unknown(name) => {
                if !out.unknown.contains(&name) {
                    out.unknown.push(name);
                }
            }
        }
    }
    out
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
                Outcome::read(Why::Transaction)
            } else {
                Outcome::harmless_write(Why::Transaction)
            };
            outcome.with(Effect::Begin {
                read_only,
                serializable,
            })
        }
        Ok(K::TransStmtCommit) => {
            Outcome::read(Why::Transaction).with(Effect::Commit { chain: t.chain })
        }
        Ok(K::TransStmtRollback) => {
            Outcome::read(Why::Transaction).with(Effect::Rollback { chain: t.chain })
        }
        Ok(K::TransStmtSavepoint | K::TransStmtRelease) => Outcome::read(Why::Transaction),
        Ok(K::TransStmtRollbackTo) => {
            Outcome::read(Why::Transaction).with(Effect::RollbackToSavepoint)
        }
        Ok(K::TransStmtPrepare) => {
            Outcome::write(Why::Transaction).with(Effect::Commit { chain: false })
        }
        _ => Outcome::write(Why::Transaction),
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
                _ => Outcome::harmless_write(Why::PgsplitInvalid),
            }
        }
        (Ok(K::VarSetValue), "pgsplit.min_lsn") => match set_value(&s.args) {
            Some(lsn) => Outcome::local(Effect::MinLsn(Some(lsn))),
            None => Outcome::harmless_write(Why::PgsplitInvalid),
        },
        (Ok(K::VarSetDefault | K::VarReset), "pgsplit.route") => {
            Outcome::local(Effect::Route(RouteMode::Auto))
        }
        (Ok(K::VarSetDefault | K::VarReset), "pgsplit.min_lsn") => {
            Outcome::local(Effect::MinLsn(None))
        }
        (Ok(K::VarSetValue | K::VarSetDefault | K::VarSetCurrent), _) => Outcome::read(Why::Set)
            .with(Effect::Set {
                name,
                local: s.is_local,
                sql: text.to_owned(),
                value: set_value(&s.args).map(|v| v.to_lowercase()),
            }),
        (Ok(K::VarSetMulti), "transaction") => {
            let (read_only, serializable) = transaction_modes(&s.args);
            Outcome::read(Why::Transaction).with(Effect::SetTransaction {
                read_only,
                serializable,
            })
        }
        (Ok(K::VarSetMulti), "session characteristics") => {
            Outcome::read(Why::Set).with(Effect::Pin(PinCause::SessionCharacteristics))
        }
        // SET TRANSACTION SNAPSHOT and anything new.
        (Ok(K::VarSetMulti), _) => {
            Outcome::harmless_write(Why::Transaction).with(Effect::Pin(PinCause::Other))
        }
        (Ok(K::VarReset), _) => Outcome::read(Why::Set).with(Effect::Reset { name }),
        (Ok(K::VarResetAll), _) => Outcome::read(Why::Set).with(Effect::ResetAll),
        _ => Outcome::write(Why::Utility),
    }
}
