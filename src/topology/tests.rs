use std::time::{Duration, Instant};

use super::*;

#[test]
fn schedule_follows_weights_exactly() {
    let s = smooth_weighted_schedule(&[(1, 1), (2, 2)]);
    assert_eq!(s.len(), 3);
    assert_eq!(s.iter().filter(|&&i| i == 2).count(), 2);
    // Interleaved, not bunched.
    assert_eq!(
        smooth_weighted_schedule(&[(0, 5), (1, 1)]),
        vec![0, 0, 0, 1, 0, 0]
    );
    assert_eq!(
        smooth_weighted_schedule(&[(0, 1), (1, 1), (2, 2)]),
        vec![2, 0, 1, 2]
    );
    assert!(smooth_weighted_schedule(&[]).is_empty());
    assert_eq!(smooth_weighted_schedule(&[(0, 100), (1, 200)]).len(), 3);
}

fn tracker(in_recovery: bool, timeline: Option<u32>) -> Tracker {
    let mut t = Tracker::default();
    let now = Instant::now();
    let mut primary = WalHistory::default();
    primary.record(9, Some(1), Lsn(100), now, Duration::from_secs(60));
    t.observe(
        Observation::Up {
            reading: Reading {
                in_recovery,
                timeline,
                current_lsn: (!in_recovery).then_some(Lsn(100)),
                replay_lsn: in_recovery.then_some(Lsn(100)),
                receive_lsn: in_recovery.then_some(Lsn(100)),
                ..Reading::default()
            },
            time: ProbeTime {
                sent: now,
                answered: now,
            },
        },
        &primary,
        &HealthConfig::default(),
    );
    t
}

#[test]
fn election_prefers_the_higher_timeline_and_refuses_to_guess() {
    let cfg = HealthConfig::default();
    let e = elect(&[tracker(false, Some(1)), tracker(true, None)], &cfg);
    assert_eq!(e.primary, Some(0));
    // A promoted replica (timeline 2) beats the old primary still running.
    let e = elect(
        &[
            tracker(false, Some(1)),
            tracker(false, Some(2)),
            tracker(true, None),
        ],
        &cfg,
    );
    assert_eq!(e.primary, Some(1));
    assert_eq!(e.claimants, vec![0, 1]);
    // Same timeline or unknown timelines: nobody.
    assert_eq!(
        elect(&[tracker(false, Some(2)), tracker(false, Some(2))], &cfg).primary,
        None
    );
    assert_eq!(
        elect(&[tracker(false, None), tracker(false, None)], &cfg).primary,
        None
    );
    assert_eq!(
        elect(&[tracker(true, None), Tracker::default()], &cfg).primary,
        None
    );
}

fn config(backends: usize) -> Config {
    let mut text = String::new();
    for i in 0..backends {
        text.push_str(&format!(
            "[[backends]]\nname = \"pg{}\"\naddress = \"h:{}\"\nweight = {}\n",
            i + 1,
            i + 1,
            i + 1
        ));
    }
    text.push_str("[[users]]\nname = \"u\"\npassword = \"p\"\n");
    Config::parse(&text).unwrap()
}

/// A probe of a backend at WAL position `lsn`, sent at `at` and answered 1 ms
/// later.
fn probe(in_recovery: bool, timeline: u32, lsn: u64, at: Instant) -> Observation {
    Observation::Up {
        reading: Reading {
            in_recovery,
            timeline: (!in_recovery).then_some(timeline),
            current_lsn: (!in_recovery).then_some(Lsn(lsn)),
            replay_lsn: in_recovery.then_some(Lsn(lsn)),
            receive_lsn: in_recovery.then_some(Lsn(lsn)),
            ..Reading::default()
        },
        time: ProbeTime {
            sent: at,
            answered: at + Duration::from_millis(1),
        },
    }
}

fn up(in_recovery: bool, timeline: u32) -> Observation {
    probe(in_recovery, timeline, 100, Instant::now())
}

#[test]
fn snapshots_follow_observations_and_fence_the_old_primary() {
    let topo = Topology::new(&config(3), Counter::default());
    let mut routing = topo.subscribe_routing();
    topo.observe(0, 0, up(false, 1));
    topo.observe(0, 1, up(true, 0));
    assert!(!topo.snapshot().complete);
    topo.observe(0, 2, up(true, 0));
    let s = topo.snapshot();
    assert!(s.complete);
    assert_eq!(s.primary, Some(0));
    // Weights 2 and 3 for pg2 and pg3.
    assert_eq!(s.read_schedule.len(), 5);
    assert!(!s.readable(0));
    assert!(routing.has_changed().unwrap());
    routing.mark_unchanged();

    // pg2 promoted while pg1 still runs: pg2 wins, pg1 is fenced.
    topo.observe(0, 1, up(false, 2));
    let s = topo.snapshot();
    assert_eq!(s.primary, Some(1));
    assert_eq!(s.primaries_seen, 2);
    assert!(s.backends[0].reason.as_deref().unwrap().contains("fenced"));
    assert!(routing.has_changed().unwrap());
    assert_eq!(topo.primary_changes.get(), 1);
    // pg3 serves no read until it is seen replaying pg2's WAL.
    assert_eq!(s.read_schedule, Vec::<usize>::new());
    assert!(s.backends[2]
        .reason
        .as_deref()
        .unwrap()
        .contains("primary changed"));
    topo.observe(0, 2, up(true, 0));
    assert_eq!(topo.snapshot().read_schedule, Vec::<usize>::new());
    let mut probes = 0;
    while topo.snapshot().read_schedule != vec![2] {
        probes += 1;
        assert!(probes <= 5, "pg3 back in rotation after it replays");
        topo.observe(0, 2, probe(true, 0, 100 + probes, Instant::now()));
    }

    // The same probe again changes nothing routing-wise.
    routing.mark_unchanged();
    topo.observe(0, 1, up(false, 2));
    assert!(!routing.has_changed().unwrap());
}

#[test]
fn reconfigure_keeps_history_by_name_and_ignores_old_probes() {
    let topo = Topology::new(&config(3), Counter::default());
    topo.observe(0, 0, up(false, 1));
    topo.observe(0, 1, up(true, 0));
    topo.observe(0, 2, up(true, 0));
    // Drop pg2, keep pg1 and pg3 (now at index 1), add pg4.
    let mut c = config(3);
    c.backends.remove(1);
    c.backends.push(crate::config::Backend {
        name: "pg4".into(),
        address: "h:4".into(),
        weight: 1,
    });
    let generation = topo.reconfigure(&c);
    assert_eq!(generation, 1);
    let s = topo.snapshot();
    assert_eq!(
        s.backends
            .iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>(),
        ["pg1", "pg3", "pg4"]
    );
    assert_eq!(s.primary, Some(0));
    assert!(s.backends[1].in_rotation, "pg3 keeps its state");
    assert!(!s.complete, "pg4 is not probed yet");
    // A probe of the old list reporting for index 1 (was pg2) changes nothing.
    topo.observe(
        0,
        1,
        Observation::Down {
            error: "old probe".into(),
        },
    );
    assert!(topo.snapshot().backends[1].last_error.is_none());
    topo.observe(1, 2, up(true, 0));
    assert!(topo.snapshot().complete);
}

/// Instants as milliseconds after one origin.
fn ms(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

#[test]
fn an_idle_primary_then_a_write_keeps_caught_up_replicas_in_rotation() {
    let mut c = config(2);
    c.health.max_lag_ms = 1000;
    let topo = Topology::new(&c, Counter::default());
    let t0 = Instant::now();
    // Probes every 500 ms for a minute; nothing is written.
    for i in 0..120 {
        topo.observe(0, 0, probe(false, 1, 5000, ms(t0, i * 500)));
        topo.observe(0, 1, probe(true, 0, 5000, ms(t0, i * 500 + 2)));
    }
    // A write: the primary's probe sees it, and the replica's probe, sent
    // 2 ms later, has not replayed it yet. Then it has.
    topo.observe(0, 0, probe(false, 1, 5100, ms(t0, 60_000)));
    topo.observe(0, 1, probe(true, 0, 5000, ms(t0, 60_002)));
    let s = topo.snapshot();
    assert!(s.readable(1), "{:?}", s.backends[1]);
    assert_eq!(s.backends[1].lag_bytes, Some(100));
    // Dated from the primary's answer (1 ms after its send) to the replica's
    // send: 1 ms, where the age of its last transaction would be a minute.
    assert_eq!(s.backends[1].lag_ms, Some(1));
    topo.observe(0, 1, probe(true, 0, 5100, ms(t0, 60_500)));
    assert_eq!(topo.snapshot().backends[1].lag_ms, Some(0));
    // It stops replaying there while the primary moves on: the lag counts
    // from the first probe that saw the primary past it.
    for i in 1..=4 {
        topo.observe(
            0,
            0,
            probe(false, 1, 5100 + i * 100, ms(t0, 60_500 + i * 500)),
        );
    }
    topo.observe(0, 1, probe(true, 0, 5100, ms(t0, 62_600)));
    let s = topo.snapshot();
    assert_eq!(s.backends[1].lag_ms, Some(62_600 - 61_001));
    assert!(!s.readable(1));
    assert!(s.backends[1]
        .reason
        .as_deref()
        .unwrap()
        .contains("max_lag_ms"));
}

#[test]
fn a_new_primary_starts_a_new_history() {
    let mut c = config(3);
    c.health.fall = 1;
    let topo = Topology::new(&c, Counter::default());
    let t0 = Instant::now();
    // pg1 passes 3500 at 1 s and is at 5000 by 10 s.
    topo.observe(0, 0, probe(false, 1, 3000, ms(t0, 0)));
    topo.observe(0, 0, probe(false, 1, 4000, ms(t0, 1000)));
    topo.observe(0, 0, probe(false, 1, 5000, ms(t0, 10_000)));
    topo.observe(0, 2, probe(true, 0, 3500, ms(t0, 10_100)));
    assert_eq!(topo.snapshot().backends[2].lag_ms, Some(9099));
    // pg1 dies; pg2 is promoted from 3400 and is seen at 3600 on timeline 2.
    topo.observe(
        0,
        0,
        Observation::Down {
            error: "gone".into(),
        },
    );
    let s = topo.snapshot();
    assert_eq!(s.primary, None);
    // No primary: nothing to date a position by.
    topo.observe(0, 2, probe(true, 0, 3500, ms(t0, 11_000)));
    assert_eq!(topo.snapshot().backends[2].lag_ms, None);
    topo.observe(0, 1, probe(false, 2, 3600, ms(t0, 20_000)));
    assert_eq!(topo.snapshot().primary, Some(1));
    // pg3 at 3500 on the new timeline: behind pg2 since pgsplit first saw
    // it (20 s), not since pg1 passed 3500 (1 s).
    topo.observe(0, 2, probe(true, 0, 3500, ms(t0, 20_200)));
    assert_eq!(topo.snapshot().backends[2].lag_ms, Some(199));
    topo.observe(0, 2, probe(true, 0, 3600, ms(t0, 20_700)));
    assert_eq!(topo.snapshot().backends[2].lag_ms, Some(0));
}

#[test]
fn reconfigure_keeps_the_primary_history_under_its_new_index() {
    let topo = Topology::new(&config(3), Counter::default());
    let t0 = Instant::now();
    // pg2 is the primary and passes 150 at 1 s; pg3 stays at 150.
    topo.observe(0, 1, probe(false, 1, 100, ms(t0, 0)));
    topo.observe(0, 1, probe(false, 1, 200, ms(t0, 1000)));
    // Drop pg1: pg2 and pg3 move to indexes 0 and 1.
    let mut c = config(3);
    c.backends.remove(0);
    let generation = topo.reconfigure(&c);
    assert_eq!(topo.snapshot().primary, Some(0));
    topo.observe(generation, 1, probe(true, 0, 150, ms(t0, 3000)));
    assert_eq!(topo.snapshot().backends[1].lag_ms, Some(1999));
    // Drop pg2, the primary: its history goes with it.
    c.backends.remove(0);
    let generation = topo.reconfigure(&c);
    topo.observe(generation, 0, probe(true, 0, 150, ms(t0, 4000)));
    assert_eq!(topo.snapshot().backends[0].lag_ms, None);
}

#[test]
fn a_drained_replica_leaves_rotation_until_undrained_and_the_events_say_so() {
    let topo = Topology::new(&config(3), Counter::default());
    topo.observe(0, 0, up(false, 1));
    topo.observe(0, 1, up(true, 0));
    topo.observe(0, 2, up(true, 0));
    assert_eq!(topo.snapshot().read_schedule.len(), 5, "weights 2 and 3");
    let mut routing = topo.subscribe_routing();
    routing.mark_unchanged();

    assert!(topo.set_drained("pg2", true).unwrap());
    assert!(routing.has_changed().unwrap(), "sessions hear of it");
    let s = topo.snapshot();
    assert_eq!(s.read_schedule, vec![2]);
    assert!(s.backends[1].drained && !s.backends[1].in_rotation);
    assert_eq!(s.backends[1].reason.as_deref(), Some(events::DRAINED));
    // Good probes do not bring it back, nor does draining it again.
    topo.observe(0, 1, up(true, 0));
    assert!(!topo.snapshot().readable(1));
    assert!(!topo.set_drained("pg2", true).unwrap());
    // A reload that keeps it keeps the flag.
    topo.reconfigure(&config(3));
    topo.observe(1, 1, up(true, 0));
    assert!(topo.snapshot().backends[1].drained);

    assert!(topo.set_drained("pg2", false).unwrap());
    assert!(topo.snapshot().readable(1));
    let e = topo.set_drained("nope", true).unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("pg1, pg2, pg3"), "{e}");

    let kinds: Vec<events::EventKind> = topo.events(100).iter().map(|e| e.kind).collect();
    use events::EventKind::*;
    assert_eq!(kinds.iter().filter(|k| **k == Up).count(), 3, "{kinds:?}");
    assert!(kinds.contains(&Primary), "{kinds:?}");
    let tail: Vec<_> = kinds
        .iter()
        .copied()
        .filter(|k| matches!(k, Drained | Undrained | Reload))
        .collect();
    assert_eq!(tail, [Drained, Reload, Undrained], "{kinds:?}");
    let last = topo.events(1);
    assert_eq!(last[0].backend.as_deref(), Some("pg2"));
    assert!(
        last[0].detail.contains("back in read rotation"),
        "{:?}",
        last[0]
    );
}
