use super::*;

fn at(base: Instant, ms: u64) -> Instant {
    base + Duration::from_millis(ms)
}

#[test]
fn a_commit_is_covered_only_by_a_reading_that_started_after_it() {
    let p = Positions::default();
    let t0 = Instant::now();
    let floor = Floor {
        committed_before: Some(at(t0, 10)),
        ..Floor::default()
    };
    p.record_primary("pg1", at(t0, 5), Lsn(100));
    p.record_replay("pg2", Lsn(500));
    // The only reading started before the commit: it proves nothing.
    assert_eq!(p.check("pg2", None, &floor), Check::Unknown);
    p.record_primary("pg1", at(t0, 12), Lsn(200));
    assert_eq!(p.check("pg2", None, &floor), Check::Has);
    assert_eq!(p.check("pg3", None, &floor), Check::Unknown);
    assert_eq!(p.check("pg3", Some(Lsn(150)), &floor), Check::Behind);
    assert_eq!(p.check("pg3", Some(Lsn(200)), &floor), Check::Has);
    // The first reading after the commit is the tightest.
    p.record_primary("pg1", at(t0, 20), Lsn(900));
    assert_eq!(p.check("pg3", Some(Lsn(200)), &floor), Check::Has);
}

#[test]
fn tokens_compare_lsns_and_both_floors_must_hold() {
    let p = Positions::default();
    let t0 = Instant::now();
    p.record_replay("pg2", Lsn(300));
    let token = Floor {
        lsn: Some(Lsn(250)),
        ..Floor::default()
    };
    assert_eq!(p.check("pg2", None, &token), Check::Has);
    let both = Floor {
        lsn: Some(Lsn(250)),
        committed_before: Some(t0),
        ..Floor::default()
    };
    assert_eq!(p.check("pg2", None, &both), Check::Unknown);
    p.record_primary("pg1", at(t0, 1), Lsn(400));
    assert_eq!(p.check("pg2", None, &both), Check::Behind);
    assert_eq!(p.check("pg2", None, &Floor::default()), Check::Has);
}

#[test]
fn a_new_primary_drops_the_old_readings() {
    let p = Positions::default();
    let t0 = Instant::now();
    p.record_primary("pg1", at(t0, 1), Lsn(100));
    p.record_replay("pg2", Lsn(100));
    let floor = Floor {
        committed_before: Some(t0),
        ..Floor::default()
    };
    assert_eq!(p.check("pg2", None, &floor), Check::Has);
    p.follow_primary("pg3");
    assert_eq!(p.check("pg2", None, &floor), Check::Unknown);
}

#[test]
fn wishes_last_until_the_replicas_have_what_was_asked() {
    let p = Positions::default();
    let t0 = Instant::now();
    let names = vec!["pg2".to_string(), "pg3".to_string()];
    let floor = Floor {
        committed_before: Some(t0),
        ..Floor::default()
    };
    assert_eq!(p.wants(&names), (false, vec![]));
    p.want(&floor);
    // A primary reading after the commit, and both replicas.
    assert_eq!(p.wants(&names), (true, names.clone()));
    p.record_primary("pg1", at(t0, 1), Lsn(50));
    assert_eq!(p.wants(&names), (false, names.clone()));
    p.record_replay("pg2", Lsn(50));
    assert_eq!(p.wants(&names), (false, vec!["pg3".to_string()]));
    p.record_replay("pg3", Lsn(60));
    // Satisfied: nothing more to poll.
    assert_eq!(p.wants(&names), (false, vec![]));
    // A token aims higher.
    p.want(&Floor {
        lsn: Some(Lsn(55)),
        ..Floor::default()
    });
    assert_eq!(p.wants(&names), (false, vec!["pg2".to_string()]));
}

#[tokio::test]
async fn primary_after_waits_for_a_fresh_reading() {
    let p = Arc::new(Positions::default());
    let t = Instant::now();
    let waiter = tokio::spawn({
        let p = p.clone();
        async move { p.primary_after(t, Duration::from_secs(5)).await }
    });
    tokio::task::yield_now().await;
    p.record_primary("pg1", t - Duration::from_millis(1), Lsn(1));
    p.record_primary("pg1", t + Duration::from_millis(1), Lsn(7));
    assert_eq!(waiter.await.unwrap(), Some(Lsn(7)));
    assert_eq!(
        p.primary_after(
            Instant::now() + Duration::from_secs(1),
            Duration::from_millis(20)
        )
        .await,
        None
    );
}
