use super::*;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[test]
fn pipelined_extended_batch_owes_one_ready_per_sync() {
    let mut wire = Vec::new();
    for _ in 0..3 {
        wire.extend(msg(b'P', b"\0SELECT 1\0\0\0"));
        wire.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
        wire.extend(msg(b'E', b"\0\0\0\0\0"));
        wire.extend(msg(b'S', b""));
    }
    let mut phase = Phase::Ready(TxStatus::Idle);
    let (n, term) = scan_client(
        &wire,
        1024,
        &mut phase,
        &mut SessionState::Clean,
        &mut false,
    )
    .unwrap();
    assert_eq!((n, term), (wire.len(), false));
    assert_eq!(
        phase,
        Phase::Busy {
            owed: 3,
            last: TxStatus::Idle
        }
    );
    phase.got_ready(TxStatus::Idle);
    phase.got_ready(TxStatus::Idle);
    assert!(!phase.is_idle());
    phase.got_ready(TxStatus::Idle);
    assert!(phase.is_idle());
}

#[test]
fn terminate_stops_forwarding_and_partial_messages_wait() {
    let mut wire = msg(b'Q', b"SELECT 1\0");
    let q = wire.len();
    wire.extend(msg(b'X', b""));
    let mut phase = Phase::Ready(TxStatus::Idle);
    assert_eq!(
        scan_client(
            &wire,
            1024,
            &mut phase,
            &mut SessionState::Clean,
            &mut false
        )
        .unwrap(),
        (q, true)
    );
    let mut phase = Phase::Ready(TxStatus::Idle);
    assert_eq!(
        scan_client(
            &wire[..q - 1],
            1024,
            &mut phase,
            &mut SessionState::Clean,
            &mut false
        )
        .unwrap(),
        (0, false)
    );
}

#[test]
fn garbage_and_oversize_are_protocol_errors() {
    let mut phase = Phase::Ready(TxStatus::Idle);
    assert!(matches!(
        scan_client(
            b"\x01\0\0\0\x04",
            1024,
            &mut phase,
            &mut SessionState::Clean,
            &mut false
        ),
        Err(ProtocolError::UnknownTag { tag: 1 })
    ));
    assert!(matches!(
        scan_client(
            &msg(b'Q', &[b'a'; 2000]),
            1024,
            &mut phase,
            &mut SessionState::Clean,
            &mut false
        ),
        Err(ProtocolError::TooLarge { .. })
    ));
}

#[test]
fn transaction_status_follows_ready_for_query() {
    let mut phase = Phase::Ready(TxStatus::Idle);
    phase.sent_request();
    phase.got_ready(TxStatus::from_byte(b'T'));
    assert_eq!(phase, Phase::Ready(TxStatus::InBlock));
    assert!(!phase.is_idle());
}
