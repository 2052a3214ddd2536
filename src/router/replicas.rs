//! Which replica serves a read: the session's own while it serves, else
//! the next of the weighted schedule, among those that have the session's
//! read-your-writes floor (or may soon: wait, or the primary).

use super::*;

/// The floor a read must meet under the configured mode. A read the
/// session or its comment sends to a replica on purpose (`pgsplit.route =
/// replica`, `/* pgsplit:replica */`) waives its own writes' floor; a
/// causal token still holds.
pub(super) fn floor_for(input: &Input) -> Floor {
    let floor = input.session.floor;
    let waived = input.session.route == Some(RouteMode::Replica)
        || input
            .batch
            .verdicts()
            .any(|v| v.hint == Some(RouteMode::Replica));
    if waived {
        return Floor {
            committed_before: None,
            ..floor
        };
    }
    match input.policy.consistency {
        ConsistencyMode::Lsn => floor,
        // A causal token holds in every mode.
        ConsistencyMode::Window | ConsistencyMode::Off => Floor {
            committed_before: None,
            ..floor
        },
    }
}

/// A replica for a read: the next in the weighted schedule that has what
/// the session must see; else the primary, or a wait for positions.
pub(super) fn replica_for_read(input: &Input) -> Decision {
    let snapshot = input.snapshot;
    let schedule = &snapshot.read_schedule;
    if schedule.is_empty() {
        return send(To::Primary, Reason::NoReplica);
    }
    if input.policy.consistency == ConsistencyMode::Window
        && input
            .session
            .floor
            .wrote_at
            .is_some_and(|at| input.now.saturating_duration_since(at) < input.policy.window)
    {
        return send(To::Primary, Reason::Consistency(RywOutcome::Window));
    }
    let floor = floor_for(input);
    let mut behind = false;
    for i in candidates(input) {
        if floor.is_empty() {
            return send(To::Replica(i), Reason::Read);
        }
        let check = if Some(i) == snapshot.primary {
            Check::Has
        } else {
            input.positions.check(i, &floor)
        };
        match check {
            Check::Has => {
                let ryw = if input.waited {
                    RywOutcome::Waited
                } else {
                    RywOutcome::Known
                };
                return Decision::Send(Route {
                    to: To::Replica(i),
                    reason: Reason::Read,
                    pin: None,
                    ryw: Some(ryw),
                });
            }
            Check::Behind => behind = true,
            Check::Unknown => {}
        }
    }
    if !input.waited && !input.policy.max_wait.is_zero() {
        return Decision::WaitPositions;
    }
    let outcome = if behind {
        RywOutcome::Behind
    } else {
        RywOutcome::Unknown
    };
    Decision::Send(Route {
        to: To::Primary,
        reason: Reason::Consistency(outcome),
        pin: None,
        ryw: Some(outcome),
    })
}

/// Replicas to try for a read, in order: the session's own, while in
/// rotation, then the weighted schedule from the current ticket.
pub(super) fn candidates<'a>(input: &'a Input) -> impl Iterator<Item = usize> + 'a {
    let schedule = &input.snapshot.read_schedule;
    let start = input.ticket % schedule.len().max(1);
    let preferred = input.preferred.filter(|p| schedule.contains(p));
    preferred.into_iter().chain(
        (0..schedule.len())
            .map(move |k| schedule[(start + k) % schedule.len()])
            .filter(move |i| Some(*i) != preferred),
    )
}
