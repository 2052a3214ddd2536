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
    t.observe(
        Observation::Up(Reading {
            in_recovery,
            timeline,
            current_lsn: (!in_recovery).then_some(Lsn(100)),
            replay_lsn: in_recovery.then_some(Lsn(100)),
            receive_lsn: in_recovery.then_some(Lsn(100)),
            ..Reading::default()
        }),
        Some(Lsn(100)),
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

fn up(in_recovery: bool, timeline: u32) -> Observation {
    Observation::Up(Reading {
        in_recovery,
        timeline: (!in_recovery).then_some(timeline),
        current_lsn: (!in_recovery).then_some(Lsn(100)),
        replay_lsn: in_recovery.then_some(Lsn(100)),
        receive_lsn: in_recovery.then_some(Lsn(100)),
        ..Reading::default()
    })
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
    assert_eq!(s.read_schedule, vec![2]);
    assert!(routing.has_changed().unwrap());
    assert_eq!(topo.primary_changes.get(), 1);

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
