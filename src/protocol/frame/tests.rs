use super::*;
use proptest::prelude::*;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[test]
fn splits_a_query_from_a_real_session() {
    // psql's `SELECT 1;` followed by the start of the next message.
    let mut wire = msg(b'Q', b"SELECT 1;\0");
    wire.extend_from_slice(b"X\0\0");
    let frame = split_frame(&wire, 1024).unwrap().unwrap();
    assert_eq!(frame.tag, b'Q');
    assert_eq!(frame.body, b"SELECT 1;\0");
    assert_eq!(frame.wire_len(), 15);
    assert_eq!(split_frame(&wire[15..], 1024).unwrap(), None);
}

#[test]
fn rejects_lengths_below_four() {
    let wire = [b'Q', 0, 0, 0, 3];
    assert_eq!(
        split_frame(&wire, 1024),
        Err(ProtocolError::LengthTooSmall { len: 3 })
    );
}

#[test]
fn rejects_oversized_before_the_body_arrives() {
    let wire = [b'Q', 0x7f, 0xff, 0xff, 0xff];
    assert!(matches!(
        split_frame(&wire, 1 << 20),
        Err(ProtocolError::TooLarge { .. })
    ));
    assert!(bytes_wanted(&wire, 1 << 20).is_err());
}

#[test]
fn bytes_wanted_counts_header_then_body() {
    let wire = msg(b'Q', b"SELECT 1;\0");
    assert_eq!(bytes_wanted(&wire[..2], 100).unwrap(), 3);
    assert_eq!(bytes_wanted(&wire[..7], 100).unwrap(), wire.len() - 7);
    assert_eq!(bytes_wanted(&wire, 100).unwrap(), 0);
}

#[test]
fn scanner_streams_large_rows_and_holds_ready_for_query() {
    let mut wire = msg(b'D', &[7u8; 100]);
    wire.extend(msg(b'Z', b"I"));
    let mut sc = StreamScanner::new();
    let mut seen = Vec::new();
    // Only part of the row is buffered: it may pass, the scanner remembers the rest.
    let n = sc
        .scan(
            &wire[..50],
            64,
            |t| t == b'Z',
            |t, b| seen.push((t, b.to_vec())),
        )
        .unwrap();
    assert_eq!(n, 50);
    assert!(!sc.at_boundary());
    // The rest of the row and half of ReadyForQuery: the row's tail passes, Z waits.
    let n = sc
        .scan(
            &wire[50..108],
            64,
            |t| t == b'Z',
            |t, b| seen.push((t, b.to_vec())),
        )
        .unwrap();
    assert_eq!(n, 55);
    assert!(seen.is_empty());
    let n = sc
        .scan(
            &wire[105..],
            64,
            |t| t == b'Z',
            |t, b| seen.push((t, b.to_vec())),
        )
        .unwrap();
    assert_eq!(n, 6);
    assert_eq!(seen, vec![(b'Z', b"I".to_vec())]);
    assert!(sc.at_boundary());
}

#[test]
fn scanner_rejects_oversized_watched_message() {
    let wire = msg(b'E', &[1u8; 200]);
    let mut sc = StreamScanner::new();
    assert!(sc.scan(&wire, 64, |t| t == b'E', |_, _| {}).is_err());
}

fn arb_messages() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    let tag = prop::sample::select(b"QPBEDCHSXdcfZTKA".to_vec());
    prop::collection::vec((tag, prop::collection::vec(any::<u8>(), 0..300)), 0..40)
}

proptest! {
    /// Messages concatenated and cut at arbitrary points come out of the
    /// whole-message splitter exactly as they went in.
    #[test]
    fn split_frame_reassembles_any_chunking(
        msgs in arb_messages(),
        cuts in prop::collection::vec(1usize..64, 1..200),
    ) {
        let wire: Vec<u8> = msgs.iter().flat_map(|(t, b)| msg(*t, b)).collect();
        let mut buf = bytes::BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        let mut cut = cuts.iter().cycle();
        while fed < wire.len() || !buf.is_empty() {
            if fed < wire.len() {
                let n = (*cut.next().unwrap()).min(wire.len() - fed);
                buf.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
            }
            while let Some(frame) = split_frame(&buf, 1024).unwrap() {
                out.push((frame.tag, frame.body.to_vec()));
                let n = frame.wire_len();
                let _ = buf.split_to(n);
            }
            if fed == wire.len() { prop_assert!(buf.is_empty()); break; }
        }
        prop_assert_eq!(out, msgs);
    }

    /// The stream scanner forwards every byte exactly once, in order, and reports
    /// each watched message whole, whatever the read boundaries.
    #[test]
    fn scanner_forwards_everything_once(
        msgs in arb_messages(),
        cuts in prop::collection::vec(1usize..64, 1..200),
    ) {
        let watched = |t: u8| t == b'Z' || t == b'E';
        let wire: Vec<u8> = msgs.iter().flat_map(|(t, b)| msg(*t, b)).collect();
        let mut sc = StreamScanner::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut forwarded = Vec::new();
        let mut seen = Vec::new();
        let mut fed = 0;
        let mut cut = cuts.iter().cycle();
        while fed < wire.len() {
            let n = (*cut.next().unwrap()).min(wire.len() - fed);
            pending.extend_from_slice(&wire[fed..fed + n]);
            fed += n;
            let k = sc.scan(&pending, 1024, watched, |t, b| seen.push((t, b.to_vec()))).unwrap();
            forwarded.extend_from_slice(&pending[..k]);
            pending.drain(..k);
        }
        prop_assert!(pending.is_empty());
        prop_assert_eq!(forwarded, wire);
        let expected: Vec<_> = msgs.into_iter().filter(|(t, _)| watched(*t)).collect();
        prop_assert_eq!(seen, expected);
    }

    /// Arbitrary bytes never panic the framer, and what it asks to reserve is
    /// bounded by the limit whatever the length field says.
    #[test]
    fn no_length_field_panics_or_overreserves(bytes in prop::collection::vec(any::<u8>(), 0..64), max in 5usize..4096) {
        if let Ok(n) = bytes_wanted(&bytes, max) {
            prop_assert!(n <= max);
        }
        let _ = split_frame(&bytes, max);
        let mut sc = StreamScanner::new();
        let _ = sc.scan(&bytes, max, |t| t == b'Z', |_, _| {});
    }
}
