//! The read-write port's policy: each request outside a transaction goes to
//! a replica when it is a proven read and nothing the session holds says
//! otherwise, else to the primary; a transaction stays where it began (a
//! plain BEGIN is answered and deferred, so a `SET TRANSACTION READ ONLY`
//! may take it to a replica).

use super::contents::{hidden_set, session_keeps_reads_home, split, unknown_routines};
use super::replicas::replica_for_read;
use super::*;

/// The read-write port's policy.
pub fn read_write(input: &Input) -> Decision {
    if let Some(decision) = deallocate(input) {
        return decision;
    }
    match input.flow {
        Flow::InTransaction { failed, .. } => return in_transaction(input, failed),
        Flow::BatchOpen { .. } => return send(To::Current, Reason::Batch),
        Flow::Described { on } => return described(input, on),
        _ => {}
    }
    if input.batch.end == End::Copy {
        return send(To::Current, Reason::Batch);
    }
    if input.retry {
        return send(To::Primary, Reason::Retried);
    }
    if input.flow == Flow::DeferredBegin {
        return begin_target(input);
    }
    if let Some(answer) = local_answer(input) {
        // Its answer must follow the replies still due.
        return match input.flow {
            Flow::Pipelined { .. } => Decision::Hold,
            _ => Decision::Answer(answer),
        };
    }
    let decision = split(input);
    match (input.flow, &decision) {
        (Flow::Pipelined { on }, Decision::Send(route)) => {
            let same = match (route.to, on) {
                (To::Primary, On::Primary) => true,
                (To::Replica(_), On::Replica(_)) => route.reason == Reason::Read,
                _ => false,
            };
            if same {
                Decision::Send(Route {
                    to: To::Current,
                    ..*route
                })
            } else {
                Decision::Hold
            }
        }
        (Flow::Pipelined { .. }, Decision::WaitPositions | Decision::Lookup(_)) => Decision::Hold,
        _ => decision,
    }
}

/// Inside a transaction everything runs where it began; a routine that
/// changes settings still pins the session (looked up first when unknown:
/// the lookup runs inside the transaction, on its connection).
pub(super) fn in_transaction(input: &Input, failed: bool) -> Decision {
    if !failed {
        if let Some(lookups) = unknown_routines(input) {
            return Decision::Lookup(lookups);
        }
    }
    Decision::Send(Route {
        to: To::Current,
        reason: Reason::Transaction,
        pin: hidden_set(input),
        ryw: None,
    })
}

/// The next part of a batch opened by statements only: it stays where the
/// batch began when it may run there (the primary runs anything; a replica
/// a read); otherwise the batch is closed first.
pub(super) fn described(input: &Input, on: On) -> Decision {
    if input.batch.end == End::Copy {
        return send(To::Current, Reason::Batch);
    }
    if on == On::Primary {
        // Whatever the router would say, the primary serves it; a routine
        // that changes settings still pins.
        return match split(input) {
            Decision::Send(route) => Decision::Send(Route {
                to: To::Current,
                reason: Reason::Batch,
                ..route
            }),
            // Lookups run at idle points.
            _ => Decision::Settle,
        };
    }
    match split(input) {
        Decision::Send(route)
            if matches!(route.to, To::Replica(_)) && route.reason == Reason::Read =>
        {
            Decision::Send(Route {
                to: To::Current,
                ..route
            })
        }
        _ => Decision::Settle,
    }
}

/// After a deferred BEGIN: a transaction that starts `SET TRANSACTION READ
/// ONLY` (not SERIALIZABLE) may run on a replica; COMMIT/ROLLBACK of nothing
/// is answered; anything else runs on the primary.
pub(super) fn begin_target(input: &Input) -> Decision {
    if let Some(verdict) = input.batch.single_query() {
        if verdict.statements == 1 {
            match verdict.effects.first() {
                Some(Effect::Commit { chain: false }) => {
                    return Decision::Answer(Answer::EndDeferred { commit: true })
                }
                Some(Effect::Rollback { chain: false }) => {
                    return Decision::Answer(Answer::EndDeferred { commit: false })
                }
                _ => {}
            }
        }
        let read_only = matches!(
            verdict.effects.first(),
            Some(Effect::SetTransaction {
                read_only: Some(true),
                serializable: false
            })
        );
        if read_only && verdict.hint != Some(RouteMode::Primary) {
            if let Some(reason) = session_keeps_reads_home(input) {
                return send(To::Primary, reason);
            }
            return match replica_for_read(input) {
                Decision::Send(route) if matches!(route.to, To::Replica(_)) => {
                    Decision::Send(Route {
                        reason: Reason::Transaction,
                        ..route
                    })
                }
                other => other,
            };
        }
    }
    send(To::Primary, Reason::Transaction)
}
