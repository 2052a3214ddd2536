use super::*;

const H: Duration = Duration::from_secs(60);

/// A history of (lsn, ms after `t0`) samples from backend 0 on timeline 1.
fn history(t0: Instant, samples: &[(u64, u64)]) -> WalHistory {
    let mut h = WalHistory::default();
    for &(lsn, ms) in samples {
        h.record(0, Some(1), Lsn(lsn), ms_after(t0, ms), H);
    }
    h
}

fn ms_after(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

fn lag_ms(h: &WalHistory, t0: Instant, replay: u64, read_ms: u64) -> Option<u64> {
    h.time_lag(Lsn(replay), ms_after(t0, read_ms))
        .map(|d| d.as_millis() as u64)
}

#[test]
fn time_lag_is_the_time_since_the_primary_passed_the_replay_position() {
    let t0 = Instant::now();
    // Probes every 500 ms: idle at 100 from 0 to 60 s, a write seen at
    // 60.5 s (200), more at 61 s (300).
    let mut samples: Vec<(u64, u64)> = (0..=120).map(|i| (100, i * 500)).collect();
    let idle = history(t0, &samples);
    assert_eq!(
        idle.len(),
        1,
        "a position seen again keeps its first instant"
    );
    // Caught up, however long the primary has been idle: no lag.
    assert_eq!(lag_ms(&idle, t0, 100, 60_100), Some(0));
    samples.extend([(200, 60_500), (300, 61_000), (300, 61_500)]);
    let h = history(t0, &samples);
    assert_eq!(h.len(), 3);
    // (replay, read at ms, lag ms)
    let table = [
        // Caught up.
        (300, 61_600, 0),
        // Ahead of pgsplit's last look at the primary: no lag either.
        (400, 61_600, 0),
        // At the idle position after the write: counted from the sample
        // that saw the write, not from the start of the idle spell.
        (100, 60_600, 100),
        (150, 60_600, 100),
        (199, 60_600, 100),
        // At 200 the primary was there at 60.5 s and past it at 61 s.
        (200, 61_200, 200),
        (250, 61_200, 200),
        // Read before the sample that passed it was taken: zero, not negative.
        (250, 60_900, 0),
        // Stuck (paused) at 200: the lag grows with the reading's time.
        (200, 65_000, 4000),
        (200, 90_000, 29_000),
        // Below the oldest sample: only known to be since then.
        (50, 61_200, 61_200),
    ];
    for (replay, read_ms, want) in table {
        assert_eq!(
            lag_ms(&h, t0, replay, read_ms),
            Some(want),
            "replay {replay} read at {read_ms} ms"
        );
    }
    assert_eq!(WalHistory::default().time_lag(Lsn(1), t0), None);
}

#[test]
fn a_replica_replaying_within_milliseconds_shows_at_most_that() {
    let t0 = Instant::now();
    // The primary writes 1 byte per ms, probed every 500 ms.
    let samples: Vec<(u64, u64)> = (0..20).map(|i| (i * 500, i * 500)).collect();
    let h = history(t0, &samples);
    for read_ms in (600..9_500).step_by(37) {
        // The replica is 3 ms behind the primary when its probe reads.
        let replay = read_ms - 3;
        let lag = lag_ms(&h, t0, replay, read_ms).unwrap();
        assert!(lag <= 3, "read at {read_ms}: {lag} ms");
    }
}

#[test]
fn another_primary_timeline_or_an_earlier_position_starts_over() {
    let t0 = Instant::now();
    let at = |ms| ms_after(t0, ms);
    let mut h = history(t0, &[(100, 0), (200, 1000)]);
    assert_eq!(h.source(), Some(0));
    // Backend 1, promoted: its positions are not the old primary's.
    h.record(1, Some(2), Lsn(150), at(5000), H);
    assert_eq!(
        (h.source(), h.len(), h.latest()),
        (Some(1), 1, Some(Lsn(150)))
    );
    // A replica at 120 (below it, on the old history) counts from 5 s.
    assert_eq!(lag_ms(&h, t0, 120, 5200), Some(200));
    // Same backend, new timeline.
    h.record(1, Some(3), Lsn(160), at(6000), H);
    assert_eq!(lag_ms(&h, t0, 150, 6100), Some(100));
    // Same backend and timeline, position went back (restored).
    h.record(1, Some(3), Lsn(10), at(7000), H);
    assert_eq!((h.len(), h.latest()), (1, Some(Lsn(10))));
    h.reindex(Some(4));
    assert_eq!(h.source(), Some(4));
    h.reindex(None);
    assert!(h.is_empty() && h.source().is_none());
}

#[test]
fn old_samples_go_but_lags_past_the_horizon_stay_past_it() {
    let t0 = Instant::now();
    // Writes every second for 200 s: 4 s before each write seen at i s.
    let samples: Vec<(u64, u64)> = (0..200).map(|i| (i * 10, i * 1000)).collect();
    let h = history(t0, &samples);
    // The samples of the last 60 s, and the one just before them.
    assert_eq!(h.len(), 62);
    let now = 200_000;
    // Within the horizon: exact.
    assert_eq!(lag_ms(&h, t0, 1985, now), Some(1000));
    assert_eq!(lag_ms(&h, t0, 1405, now), Some(59_000));
    // Far past it: still at least the horizon.
    let far = lag_ms(&h, t0, 5, now).unwrap();
    assert!(far > H.as_millis() as u64, "{far}");
}

#[test]
fn fast_probes_are_merged_so_the_history_stays_bounded_and_sound() {
    let t0 = Instant::now();
    let mut h = WalHistory::default();
    // A new position every millisecond for 3 minutes.
    for ms in 0..180_000u64 {
        h.record(0, Some(1), Lsn(ms + 1), ms_after(t0, ms), H);
    }
    let bound = 2 * SAMPLES_PER_HORIZON as usize + 3;
    assert!(h.len() <= bound, "{} samples", h.len());
    // Still covers the horizon, and a merged sample only ever makes the
    // lag smaller than the truth, by at most the spacing.
    let spacing = (H / SAMPLES_PER_HORIZON).as_millis() as u64 + 1;
    let now = 180_000;
    for behind in [1u64, 10, 100, 1000, 5000, 30_000, 59_000] {
        // The primary passed position `now - behind` at `now - behind`.
        let lag = lag_ms(&h, t0, now - behind, now).unwrap();
        assert!(
            lag <= behind && behind - lag <= spacing,
            "{behind} ms behind: reported {lag}"
        );
    }
}
