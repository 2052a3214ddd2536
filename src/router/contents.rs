//! What a batch's contents say, before the replicas have a say: whether
//! every message is a proven read, what the catalog must settle first, and
//! what of the session's state keeps a read on the primary.

use super::read_only::pin_of;
use super::replicas::replica_for_read;
use super::*;

/// What the batch's contents say, before the session and replicas have a
/// say.
pub(super) enum Contents {
    /// Every message is a proven read.
    Read,
    /// A read the primary must answer.
    PrimaryRead(Reason),
    /// Something that writes, or may.
    Write(Reason),
    /// Settle these first.
    Lookup(Vec<Lookup>),
}

/// Splits a batch at an idle point (or pipelined): the primary or a replica.
pub(super) fn split(input: &Input) -> Decision {
    let contents = contents(input);
    let pin = hidden_set(input);
    let decision = match contents {
        Contents::Lookup(names) => return Decision::Lookup(names),
        Contents::Write(reason) | Contents::PrimaryRead(reason) => send(To::Primary, reason),
        Contents::Read => match session_keeps_reads_home(input) {
            Some(reason) => send(To::Primary, reason),
            None => match unlogged(input) {
                Err(lookups) => return Decision::Lookup(lookups),
                Ok(true) => send(To::Primary, Reason::Unlogged),
                Ok(false) => replica_for_read(input),
            },
        },
    };
    match (decision, pin) {
        // What the routine sets lives where it runs: at home.
        (Decision::Send(route), Some(pin)) => Decision::Send(Route {
            to: To::Primary,
            reason: if matches!(route.to, To::Replica(_)) {
                Reason::Pinned(pin)
            } else {
                route.reason
            },
            pin: Some(pin),
            ryw: None,
        }),
        (decision, _) => decision,
    }
}

/// Whether a statement's effects let it run on a replica (given the batch
/// is otherwise a read).
pub(super) fn effects_allow_replica(
    verdict: &Verdict,
    session: &SessionState,
) -> Result<(), Reason> {
    for effect in &verdict.effects {
        match effect {
            // Settings are replayed wherever the session goes; a pinned
            // session's go home with its state.
            Effect::Set { .. } | Effect::Reset { .. } if session.pins.is_pinned() => {
                return Err(Reason::Pinned(pin_of(session)))
            }
            Effect::Set { .. }
            | Effect::Reset { .. }
            | Effect::Prepare { .. }
            | Effect::Route(_)
            | Effect::MinLsn(_)
            | Effect::Execute { runs: false, .. }
            | Effect::SetTransaction { .. } => {}
            Effect::Execute { name, runs: true } => match session.statements.sql.get(name.as_str())
            {
                Some(p) if p.read && p.functions.is_empty() => {}
                _ => return Err(Reason::Statement(Why::Execute)),
            },
            Effect::Begin {
                serializable: true, ..
            } => return Err(Reason::Serializable),
            // A transaction declared READ ONLY may run on a replica.
            Effect::Begin {
                read_only: Some(true),
                ..
            } => {}
            Effect::Pin(cause) => return Err(Reason::Pinned(*cause)),
            _ => return Err(Reason::Statement(Why::Session)),
        }
    }
    Ok(())
}

/// Classifies the batch's messages.
pub(super) fn contents(input: &Input) -> Contents {
    let batch = input.batch;
    let session = input.session;
    let mut write: Option<Reason> = None;
    let mut primary: Option<Reason> = None;
    let mut lookups: Vec<Lookup> = Vec::new();
    // Statements parsed in this batch: (name, read?).
    let mut parsed: Vec<(&[u8], bool)> = Vec::new();
    let mut unnamed_here: Option<bool> = None;
    let mut judge = |verdict: &Verdict, lookups: &mut Vec<Lookup>| -> Result<(), Reason> {
        if verdict.access != Access::Read {
            return Err(Reason::Statement(verdict.why));
        }
        effects_allow_replica(verdict, session)?;
        for name in &verdict.functions {
            match input.catalog.function(name) {
                Some(f) if f.read => {}
                Some(_) => return Err(Reason::Function),
                None if input.looked_up => return Err(Reason::Function),
                None => {
                    let l = Lookup::Function(name.clone());
                    if !lookups.contains(&l) {
                        lookups.push(l);
                    }
                }
            }
        }
        if verdict.primary_only {
            primary.get_or_insert(Reason::PrimaryOnly);
        }
        if verdict.hint == Some(RouteMode::Primary) {
            primary.get_or_insert(Reason::Hint);
        }
        Ok(())
    };
    for msg in &batch.msgs {
        let verdict_read = match &msg.kind {
            Kind::Query(v) => Some(judge(v, &mut lookups)),
            Kind::Parse { name, verdict, .. } => {
                let read = judge(verdict, &mut lookups);
                let name = msg.slice(input.bytes, name);
                if name.is_empty() {
                    unnamed_here = Some(read.is_ok());
                } else {
                    parsed.push((name, read.is_ok()));
                }
                Some(read)
            }
            Kind::Bind { statement } => {
                let name = msg.slice(input.bytes, statement);
                let read = if name.is_empty() {
                    unnamed_here.or_else(|| {
                        let u = session.statements.unnamed.as_ref()?;
                        Some(judge(&u.verdict, &mut lookups).is_ok())
                    })
                } else {
                    parsed
                        .iter()
                        .rev()
                        .find(|(n, _)| *n == name)
                        .map(|(_, r)| *r)
                        .or_else(|| {
                            let p = session.statements.named.get(name)?;
                            Some(judge(&p.verdict, &mut lookups).is_ok())
                        })
                };
                match read {
                    Some(true) => None,
                    _ => Some(Err(Reason::Statement(Why::Write))),
                }
            }
            Kind::FunctionCall { .. } => Some(Err(Reason::FunctionCall)),
            Kind::Other if matches!(msg.tag, b'd' | b'c' | b'f') => {
                Some(Err(Reason::Statement(Why::CopyFrom)))
            }
            _ => None,
        };
        if let Some(Err(reason)) = verdict_read {
            write.get_or_insert(reason);
        }
    }
    if let Some(reason) = write {
        // A write may call routines that change settings (see
        // `hidden_set`): the ones not known yet are looked up first, once.
        return match unknown_routines(input) {
            Some(lookups) => Contents::Lookup(lookups),
            None => Contents::Write(reason),
        };
    }
    if !lookups.is_empty() {
        return Contents::Lookup(lookups);
    }
    if batch.end == End::Open {
        return Contents::Write(Reason::LargeBatch);
    }
    match primary {
        Some(reason) => Contents::PrimaryRead(reason),
        None => Contents::Read,
    }
}

/// Routines the batch calls that the catalog does not know yet (none once
/// looked up: what stays unknown counts as not changing settings).
pub(super) fn unknown_routines(input: &Input) -> Option<Vec<Lookup>> {
    if input.looked_up {
        return None;
    }
    let mut lookups: Vec<Lookup> = Vec::new();
    for name in input.batch.verdicts().flat_map(|v| v.functions.iter()) {
        let l = Lookup::Function(name.clone());
        if input.catalog.function(name).is_none() && !lookups.contains(&l) {
            lookups.push(l);
        }
    }
    (!lookups.is_empty()).then_some(lookups)
}

/// Whether a routine the batch calls changes settings (as far as the
/// catalog knows).
pub(super) fn hidden_set(input: &Input) -> Option<PinCause> {
    input
        .batch
        .verdicts()
        .flat_map(|v| v.functions.iter())
        .any(|name| input.catalog.function(name).is_some_and(|f| f.sets_config))
        .then_some(PinCause::HiddenSet)
}

/// Whether something of the session keeps a read on the primary: a pin
/// that does not allow reads elsewhere, a read that may see its temp
/// objects, `pgsplit.route = primary`, a SERIALIZABLE default.
pub(super) fn session_keeps_reads_home(input: &Input) -> Option<Reason> {
    let s = input.session;
    if let Some(cause) = s.pins.causes().find(|c| !c.allows_replica_reads()) {
        return Some(Reason::Pinned(cause));
    }
    if s.route == Some(RouteMode::Primary) {
        return Some(Reason::Hint);
    }
    if s.isolation.serializable() {
        return Some(Reason::Serializable);
    }
    if s.pins.has(PinCause::TempObject) {
        let user_functions = input.batch.verdicts().any(|v| !v.functions.is_empty());
        if user_functions || may_see_temp(input) {
            return Some(Reason::Pinned(PinCause::TempObject));
        }
    }
    // A cursor lives where it was declared (WITH HOLD: at home).
    if input
        .batch
        .verdicts()
        .any(|v| v.why == Why::Cursor && s.pins.has(PinCause::HoldCursor))
    {
        return Some(Reason::Pinned(PinCause::HoldCursor));
    }
    None
}

/// Whether any SQL the batch runs may name one of the session's temp
/// objects: its own text, and the statements it binds or EXECUTEs.
pub(super) fn may_see_temp(input: &Input) -> bool {
    let s = input.session;
    if s.may_see_temp(input.bytes) {
        return true;
    }
    for msg in &input.batch.msgs {
        let text: Option<&[u8]> = match &msg.kind {
            Kind::Bind { statement } | Kind::DescribeStatement { name: statement } => {
                let name = msg.slice(input.bytes, statement);
                if name.is_empty() {
                    s.statements.unnamed.as_ref().map(|u| &u.parse[..])
                } else {
                    s.statements.named.get(name).map(|p| &p.key.body[..])
                }
            }
            _ => None,
        };
        if text.is_some_and(|t| s.may_see_temp(t)) {
            return true;
        }
    }
    input.batch.verdicts().any(|v| {
        v.effects.iter().any(|e| match e {
            Effect::Execute { name, .. } => s
                .statements
                .sql
                .get(name.as_str())
                .is_some_and(|p| s.may_see_temp(p.text.as_bytes())),
            _ => false,
        })
    })
}

/// Whether the read names an unlogged relation (a standby cannot read one).
/// Err: relations to look up first.
pub(super) fn unlogged(input: &Input) -> Result<bool, Vec<Lookup>> {
    let mut lookups = Vec::new();
    for name in input.batch.verdicts().flat_map(|v| v.relations.iter()) {
        match input.catalog.relation_unlogged(name) {
            Some(true) => return Ok(true),
            Some(false) => {}
            None if input.looked_up => {}
            None => {
                let l = Lookup::Relation(name.clone());
                if !lookups.contains(&l) {
                    lookups.push(l);
                }
            }
        }
    }
    if lookups.is_empty() {
        Ok(false)
    } else {
        Err(lookups)
    }
}
