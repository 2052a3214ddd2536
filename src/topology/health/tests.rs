use std::time::Duration;

use super::*;

fn cfg() -> HealthConfig {
    HealthConfig {
        fall: 3,
        rise: 2,
        max_lag_bytes: 1000,
        max_lag_ms: 1000,
        readmit_fraction: 0.5,
        ..HealthConfig::default()
    }
}

/// Instants as milliseconds after one origin.
struct Clock(Instant);

impl Clock {
    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }

    /// A replica probe sent at `ms` that read `replay` (received as much).
    fn replica(&self, replay: u64, ms: u64, paused: bool) -> Observation {
        Observation::Up {
            reading: Reading {
                in_recovery: true,
                receive_lsn: Some(Lsn(replay)),
                replay_lsn: Some(Lsn(replay)),
                replay_paused: paused,
                ..Reading::default()
            },
            time: ProbeTime {
                sent: self.at(ms),
                answered: self.at(ms + 1),
            },
        }
    }

    /// The primary's history: (lsn, ms) samples.
    fn primary(&self, samples: &[(u64, u64)]) -> WalHistory {
        let mut h = WalHistory::default();
        for &(lsn, ms) in samples {
            h.record(0, Some(1), Lsn(lsn), self.at(ms), Duration::from_secs(60));
        }
        h
    }
}

#[test]
fn a_caught_up_replica_enters_at_once_and_idle_primary_is_not_lag() {
    let c = Clock(Instant::now());
    let mut t = Tracker::default();
    // Caught up with a primary idle at 5000 for a minute.
    let idle = c.primary(&[(5000, 0), (5000, 60_000)]);
    assert!(t
        .observe(c.replica(5000, 60_100, false), &idle, &cfg())
        .is_some());
    assert!(t.in_rotation);
    assert_eq!(t.lag_ms, Some(0));
    assert_eq!(t.lag_bytes, Some(0));
}

#[test]
fn after_an_idle_spell_the_first_write_is_lag_only_from_when_it_was_seen() {
    let c = Clock(Instant::now());
    let mut t = Tracker::default();
    let mut samples: Vec<(u64, u64)> = (0..=120).map(|i| (5000, i * 500)).collect();
    t.observe(c.replica(5000, 100, false), &c.primary(&samples), &cfg());
    // A write after a minute of quiet; the primary's probe sees it at 60.5 s,
    // the replica's probe (sent at 60.55 s) has not replayed it yet.
    samples.push((5100, 60_500));
    let h = c.primary(&samples);
    assert!(t
        .observe(c.replica(5000, 60_550, false), &h, &cfg())
        .is_none());
    assert!(t.in_rotation);
    assert_eq!((t.lag_bytes, t.lag_ms), (Some(100), Some(50)));
    // Replayed by its next probe.
    t.observe(c.replica(5100, 61_000, false), &h, &cfg());
    assert_eq!((t.lag_bytes, t.lag_ms), (Some(0), Some(0)));
}

#[test]
fn lag_takes_it_out_and_it_needs_rise_good_probes_under_the_fraction() {
    let c = Clock(Instant::now());
    let cfg = cfg();
    let mut t = Tracker::default();
    t.observe(c.replica(5000, 0, false), &c.primary(&[(5000, 0)]), &cfg);
    let h = c.primary(&[(5000, 0), (7000, 100)]);
    let msg = t.observe(c.replica(5000, 200, false), &h, &cfg).unwrap();
    assert!(msg.contains("max_lag_bytes"), "{msg}");
    assert!(!t.in_rotation);
    // Under the threshold but above threshold * fraction: still out.
    assert!(t.observe(c.replica(6300, 300, false), &h, &cfg).is_none());
    assert!(!t.in_rotation);
    // Two good probes under the fraction bring it back.
    let h = c.primary(&[(5000, 0), (7000, 100), (7100, 400)]);
    assert!(t.observe(c.replica(7000, 450, false), &h, &cfg).is_none());
    assert!(!t.in_rotation);
    assert!(t.observe(c.replica(7100, 500, false), &h, &cfg).is_some());
    assert!(t.in_rotation);
}

#[test]
fn time_lag_grows_from_when_the_primary_passed_the_replica_and_takes_it_out() {
    let c = Clock(Instant::now());
    let cfg = cfg();
    let mut t = Tracker::default();
    let h = c.primary(&[(5000, 0), (5200, 10_000)]);
    t.observe(c.replica(5000, 9_900, false), &h, &cfg);
    assert!(t.in_rotation);
    // Stuck at 5000 (not paused: e.g. a slow or delayed apply). Its last
    // replayed transaction is 10 s old, but the lag counts from 10 s.
    for (sent, lag) in [(10_400, 400), (10_900, 900), (11_000, 1000)] {
        t.observe(c.replica(5000, sent, false), &h, &cfg);
        assert_eq!(t.lag_ms, Some(lag));
        assert!(t.in_rotation, "at {lag} ms, not over max_lag_ms");
    }
    let msg = t.observe(c.replica(5000, 11_400, false), &h, &cfg).unwrap();
    assert!(msg.contains("lag 1400 ms over max_lag_ms 1000"), "{msg}");
    assert!(!t.in_rotation);
}

#[test]
fn paused_replay_with_wal_waiting_is_out_and_its_lag_keeps_growing() {
    let c = Clock(Instant::now());
    let cfg = cfg();
    let mut t = Tracker::default();
    let h = c.primary(&[(5000, 0), (5010, 1000)]);
    t.observe(c.replica(5000, 1050, false), &h, &cfg);
    assert!(t.in_rotation);
    t.observe(c.replica(5000, 1100, true), &h, &cfg);
    assert!(!t.in_rotation);
    assert!(t.reason.as_deref().unwrap().contains("paused"));
    let mut last = t.lag_ms.unwrap();
    for sent in [1600, 2100, 5100] {
        t.observe(c.replica(5000, sent, true), &h, &cfg);
        let lag = t.lag_ms.unwrap();
        assert_eq!(lag, sent - 1000);
        assert!(lag > last);
        last = lag;
    }
    // Paused but nothing to replay: fine.
    let mut t = Tracker::default();
    let h = c.primary(&[(5000, 0)]);
    t.observe(c.replica(5000, 10_000, true), &h, &cfg);
    assert!(t.in_rotation);
    assert_eq!(t.lag_ms, Some(0));
}

#[test]
fn without_a_primary_time_lag_is_unknown_and_bytes_count_against_what_was_received() {
    let c = Clock(Instant::now());
    let mut t = Tracker::default();
    let mut obs = c.replica(5000, 0, false);
    if let Observation::Up { reading, .. } = &mut obs {
        reading.receive_lsn = Some(Lsn(5300));
    }
    t.observe(obs, &WalHistory::default(), &cfg());
    assert_eq!((t.lag_bytes, t.lag_ms), (Some(300), None));
    assert!(t.in_rotation);
}

#[test]
fn fall_failures_in_a_row_make_it_down() {
    let c = Clock(Instant::now());
    let cfg = cfg();
    let h = c.primary(&[(1, 0)]);
    let mut t = Tracker::default();
    t.observe(c.replica(1, 0, false), &h, &cfg);
    let down = || Observation::Down {
        error: "connection refused".into(),
    };
    t.observe(down(), &h, &cfg);
    t.observe(down(), &h, &cfg);
    assert!(t.is_up(&cfg) && t.in_rotation);
    assert!(t.observe(down(), &h, &cfg).is_some());
    assert!(!t.is_up(&cfg) && !t.in_rotation);
    assert!(t.reason.as_deref().unwrap().contains("connection refused"));
    // Back up: it was seen before, so it serves rise probes of probation.
    t.observe(c.replica(1, 2000, false), &h, &cfg);
    assert!(!t.in_rotation);
    t.observe(c.replica(1, 2500, false), &h, &cfg);
    assert!(t.in_rotation);
}

#[test]
fn after_a_failover_a_replica_serves_once_seen_replaying_the_new_primarys_wal() {
    let c = Clock(Instant::now());
    let mut t = Tracker::default();
    let old = c.primary(&[(5000, 0)]);
    t.observe(c.replica(5000, 100, false), &old, &cfg());
    assert!(t.in_rotation);
    assert_eq!(t.following, Following::Yes { primary: 0 });

    // Backend 1 is elected: the replica waits, whatever its lag says.
    t.primary_changed(1);
    assert!(!t.in_rotation);
    let mut new = WalHistory::default();
    new.record(1, Some(2), Lsn(4990), c.at(200), Duration::from_secs(60));
    t.observe(c.replica(5000, 300, false), &new, &cfg());
    assert!(!t.in_rotation, "still where it was: {:?}", t.reason);
    assert!(t.reason.as_deref().unwrap().contains("primary changed"));

    // It replays past where it stood: it follows, then earns its way back.
    new.record(1, Some(2), Lsn(5100), c.at(400), Duration::from_secs(60));
    t.observe(c.replica(5100, 500, false), &new, &cfg());
    assert_eq!(t.following, Following::Yes { primary: 1 });
    t.observe(c.replica(5100, 1000, false), &new, &cfg());
    assert!(t.in_rotation);
}

#[test]
fn a_replica_left_on_a_failed_primarys_timeline_never_serves() {
    let c = Clock(Instant::now());
    let mut t = Tracker::default();
    t.observe(
        c.replica(5200, 100, false),
        &c.primary(&[(5200, 0)]),
        &cfg(),
    );
    t.primary_changed(1);
    // The new primary took over at 5000 and wrote up to 5150: the old
    // replica, stuck at 5200, looks ahead of it and must not count as
    // caught up.
    let mut new = WalHistory::default();
    for (i, lsn) in [5000u64, 5100, 5150].into_iter().enumerate() {
        new.record(
            1,
            Some(2),
            Lsn(lsn),
            c.at(200 + 500 * i as u64),
            Duration::from_secs(60),
        );
        t.observe(c.replica(5200, 300 + 500 * i as u64, false), &new, &cfg());
        assert!(!t.in_rotation, "probe {i}");
    }
    assert_eq!(
        t.following,
        Following::Pending {
            primary: 1,
            at: Lsn(5200)
        }
    );
}

#[test]
fn a_replica_first_seen_with_a_primary_is_taken_as_following_it() {
    let c = Clock(Instant::now());
    let mut t = Tracker::default();
    t.observe(c.replica(5000, 100, false), &WalHistory::default(), &cfg());
    assert_eq!(t.following, Following::Unknown);
    t.observe(
        c.replica(5000, 600, false),
        &c.primary(&[(5000, 500)]),
        &cfg(),
    );
    assert_eq!(t.following, Following::Yes { primary: 0 });
    assert!(t.in_rotation);
}
