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

fn replica(replay: u64, age_ms: f64, paused: bool) -> Observation {
    Observation::Up(Reading {
        in_recovery: true,
        receive_lsn: Some(Lsn(replay)),
        replay_lsn: Some(Lsn(replay)),
        replay_age_ms: Some(age_ms),
        replay_paused: paused,
        ..Reading::default()
    })
}

#[test]
fn a_caught_up_replica_enters_at_once_and_idle_primary_is_not_lag() {
    let mut t = Tracker::default();
    // Caught up with the primary; last replayed commit long ago (idle primary).
    assert!(t
        .observe(replica(5000, 60_000.0, false), Some(Lsn(5000)), &cfg())
        .is_some());
    assert!(t.in_rotation);
    assert_eq!(t.lag_ms, Some(0));
    assert_eq!(t.lag_bytes, Some(0));
}

#[test]
fn lag_takes_it_out_and_it_needs_rise_good_probes_under_the_fraction() {
    let c = cfg();
    let mut t = Tracker::default();
    t.observe(replica(5000, 0.0, false), Some(Lsn(5000)), &c);
    let msg = t
        .observe(replica(5000, 0.0, false), Some(Lsn(7000)), &c)
        .unwrap();
    assert!(msg.contains("max_lag_bytes"), "{msg}");
    assert!(!t.in_rotation);
    // Under the threshold but above threshold * fraction: still out.
    assert!(t
        .observe(replica(6300, 10.0, false), Some(Lsn(7000)), &c)
        .is_none());
    assert!(!t.in_rotation);
    // Two good probes under the fraction bring it back.
    assert!(t
        .observe(replica(7000, 10.0, false), Some(Lsn(7100)), &c)
        .is_none());
    assert!(!t.in_rotation);
    assert!(t
        .observe(replica(7100, 10.0, false), Some(Lsn(7100)), &c)
        .is_some());
    assert!(t.in_rotation);
}

#[test]
fn time_lag_counts_only_with_wal_left_and_paused_replay_is_out() {
    let c = cfg();
    let mut t = Tracker::default();
    t.observe(replica(5000, 0.0, false), Some(Lsn(5000)), &c);
    // 200 bytes behind, last replay 2 s ago: time lag.
    t.observe(replica(5000, 2000.0, false), Some(Lsn(5200)), &c);
    assert!(!t.in_rotation);
    assert!(t.reason.as_deref().unwrap().contains("max_lag_ms"));
    let mut t = Tracker::default();
    t.observe(replica(5000, 0.0, false), Some(Lsn(5000)), &c);
    t.observe(replica(5000, 10.0, true), Some(Lsn(5010)), &c);
    assert!(!t.in_rotation);
    assert!(t.reason.as_deref().unwrap().contains("paused"));
    // Paused but nothing to replay: fine.
    let mut t = Tracker::default();
    t.observe(replica(5000, 10.0, true), Some(Lsn(5000)), &c);
    assert!(t.in_rotation);
}

#[test]
fn fall_failures_in_a_row_make_it_down() {
    let c = cfg();
    let mut t = Tracker::default();
    t.observe(replica(1, 0.0, false), Some(Lsn(1)), &c);
    let down = || Observation::Down {
        error: "connection refused".into(),
    };
    t.observe(down(), None, &c);
    t.observe(down(), None, &c);
    assert!(t.is_up(&c) && t.in_rotation);
    assert!(t.observe(down(), None, &c).is_some());
    assert!(!t.is_up(&c) && !t.in_rotation);
    assert!(t.reason.as_deref().unwrap().contains("connection refused"));
    // Back up: it was seen before, so it serves rise probes of probation.
    t.observe(replica(1, 0.0, false), Some(Lsn(1)), &c);
    assert!(!t.in_rotation);
    t.observe(replica(1, 0.0, false), Some(Lsn(1)), &c);
    assert!(t.in_rotation);
}
