//! The read-only port's policy: every request on a replica (the session's
//! own), and a refusal (25006) for what must not run on one, judged by
//! kind: SQL that writes or leaves a lasting effect, a transaction made
//! read-write, a fastpath call of a routine not proven read-only.

use super::replicas::candidates;
use super::*;

/// The read-only port's policy: replicas only; what must not run on one is
/// refused.
pub fn read_only(input: &Input) -> Decision {
    if let Some(decision) = deallocate(input) {
        return decision;
    }
    if let Some(refusal) = refusal(input) {
        return match input.flow {
            Flow::Pipelined { .. } => Decision::Hold,
            _ => Decision::Answer(Answer::Refuse(refusal)),
        };
    }
    if let Some(lookup) = function_call_lookup(input) {
        return match input.flow {
            Flow::Pipelined { .. } => Decision::Hold,
            _ => Decision::Lookup(vec![lookup]),
        };
    }
    match input.flow {
        Flow::InTransaction { .. } | Flow::BatchOpen { .. } | Flow::Described { .. } => {
            return send(To::Current, Reason::Listener)
        }
        Flow::Pipelined { .. } => return send(To::Current, Reason::Listener),
        Flow::Idle | Flow::DeferredBegin => {}
    }
    if input.batch.end == End::Copy {
        return send(To::Current, Reason::Listener);
    }
    if let Some(answer) = local_answer(input) {
        return Decision::Answer(answer);
    }
    // A pinned session stays where its state is; a session-mode one on
    // its own replica.
    if input.session.pins.is_pinned() {
        return send(To::Current, Reason::Pinned(pin_of(input.session)));
    }
    if input.home.is_some() {
        return send(To::Current, Reason::Listener);
    }
    let schedule = &input.snapshot.read_schedule;
    if schedule.is_empty() {
        return match input.policy.no_replica {
            NoReplica::Primary => send(To::ReadOnlyPrimary, Reason::NoReplica),
            NoReplica::Error => Decision::Answer(Answer::NoReplica),
        };
    }
    let floor = Floor {
        committed_before: None,
        wrote_at: None,
        ..input.session.floor
    };
    for i in candidates(input) {
        if floor.is_empty() {
            return send(To::Replica(i), Reason::Listener);
        }
        if Some(i) == input.snapshot.primary || input.positions.check(i, &floor) == Check::Has {
            return Decision::Send(Route {
                to: To::Replica(i),
                reason: Reason::Listener,
                pin: None,
                ryw: Some(if input.waited {
                    RywOutcome::Waited
                } else {
                    RywOutcome::Known
                }),
            });
        }
    }
    if !input.waited && !input.policy.max_wait.is_zero() {
        return Decision::WaitPositions;
    }
    // No replica has the token's commit yet: the primary, read-only.
    Decision::Send(Route {
        to: To::ReadOnlyPrimary,
        reason: Reason::Consistency(RywOutcome::Behind),
        pin: None,
        ryw: Some(RywOutcome::Behind),
    })
}

pub(super) fn pin_of(session: &SessionState) -> PinCause {
    session.pins.causes().next().unwrap_or(PinCause::Other)
}

/// A fastpath call on the read-only port whose function is not known yet.
pub(super) fn function_call_lookup(input: &Input) -> Option<Lookup> {
    input.batch.msgs.iter().find_map(|m| match m.kind {
        Kind::FunctionCall { oid } if input.catalog.function_oid(oid).is_none() => {
            (!input.looked_up).then_some(Lookup::FunctionOid(oid))
        }
        _ => None,
    })
}

/// Whether the read-only port must refuse the batch.
pub(super) fn refusal(input: &Input) -> Option<Refusal> {
    let session = input.session;
    let forbidden_sql = |v: &Verdict| -> Option<Refusal> {
        if v.replica_forbidden {
            return Some(Refusal::Write);
        }
        for effect in &v.effects {
            match effect {
                Effect::Execute { name, runs: true }
                    if session
                        .statements
                        .sql
                        .get(name.as_str())
                        .is_some_and(|p| p.forbidden) =>
                {
                    return Some(Refusal::Write);
                }
                Effect::Begin {
                    read_only: Some(false),
                    ..
                }
                | Effect::SetTransaction {
                    read_only: Some(false),
                    ..
                } => return Some(Refusal::ReadWrite),
                Effect::Set {
                    name,
                    value: Some(value),
                    ..
                } if matches!(
                    name.as_str(),
                    "default_transaction_read_only" | "transaction_read_only"
                ) && matches!(value.as_str(), "off" | "false" | "0" | "no") =>
                {
                    return Some(Refusal::ReadWrite)
                }
                _ => {}
            }
        }
        None
    };
    for msg in &input.batch.msgs {
        let refused = match &msg.kind {
            Kind::Query(v) | Kind::Parse { verdict: v, .. } => forbidden_sql(v),
            Kind::FunctionCall { oid } => match input.catalog.function_oid(*oid) {
                Some(allowed) => (!allowed).then_some(Refusal::FunctionCall),
                None if input.looked_up => Some(Refusal::FunctionCall),
                None => None,
            },
            _ => None,
        };
        if refused.is_some() {
            return refused;
        }
    }
    None
}
