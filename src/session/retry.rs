//! The safety net for a read a standby cannot serve: a request the router
//! sent to a replica and that the replica refuses because it is a standby
//! runs once more on the primary, provided nothing but metadata reached the
//! client and no transaction was left open. The refusals are the standby's
//! own: 25006 (a write behind a STABLE label), 0A000 (an unlogged or
//! temporary relation, SERIALIZABLE), 55000 (a WAL function that needs the
//! primary: "recovery is in progress"), 40001 (a query cancelled by a
//! conflict with recovery) and XX000 (an OID a standby cannot assign, as
//! `lo_creat` asks). On the primary the same request either works or fails
//! the same way, for the client to hear.
//!
//! Only a batch that is one request (one Query, or extended messages up to one
//! Sync) sent at an idle point is armed; a copy of its bytes is kept in a
//! buffer reused across requests. While armed, the replica's replies are held
//! back until the first decisive message: a row, a COPY, ReadyForQuery or an
//! error other than 25006 lets everything through; a 25006 holds on until
//! ReadyForQuery, and if that says the session is idle again, the replies are
//! dropped and the batch goes to the primary.

use crate::protocol::frame::split_frame;
use crate::protocol::{message, tag};

use super::relay::Net as Retry;

/// SQLSTATEs a standby raises because it is one.
pub const STANDBY_REFUSALS: &[&str] = &["25006", "0A000", "55000", "40001", "XX000"];

/// What the held replies say.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// Not enough yet.
    Wait,
    /// Let them through (and stop watching).
    Release,
    /// The first `len` bytes are the refused request's whole answer, ending
    /// idle: drop them and run the request on the primary.
    Rerun { len: usize },
    /// A standby refusal was seen; keep holding until ReadyForQuery.
    Refused,
}

/// Looks at the held replies `buf` (from the first byte of the request's
/// answer) in state `state`.
pub fn inspect(state: Retry, buf: &[u8], max: usize) -> Held {
    let mut pos = 0;
    let mut refused = state == Retry::Refused;
    loop {
        let frame = match split_frame(&buf[pos..], max) {
            Ok(Some(frame)) => frame,
            Ok(None) => return if refused { Held::Refused } else { Held::Wait },
            // The relay's own scanner reports a broken stream.
            Err(_) => return Held::Release,
        };
        pos += frame.wire_len();
        match frame.tag {
            tag::READY_FOR_QUERY if refused => {
                return if frame.body.first() == Some(&b'I') {
                    Held::Rerun { len: pos }
                } else {
                    Held::Release
                };
            }
            tag::ERROR_RESPONSE if !refused => {
                let code = message::ErrorFields::parse(frame.body).map(|f| f.code);
                if !code.is_ok_and(|c| STANDBY_REFUSALS.contains(&c)) {
                    return Held::Release;
                }
                refused = true;
            }
            tag::DATA_ROW
            | tag::COPY_IN_RESPONSE
            | tag::COPY_OUT_RESPONSE
            | tag::COPY_BOTH_RESPONSE
            | tag::READY_FOR_QUERY
                if !refused =>
            {
                return Held::Release
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode::{self, Severity};
    use bytes::BytesMut;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn refused() -> Vec<u8> {
        let mut out = BytesMut::new();
        encode::error_response(
            &mut out,
            Severity::Error,
            "25006",
            "cannot execute INSERT in a read-only transaction",
        );
        out.to_vec()
    }

    #[test]
    fn rows_release_and_refusals_rerun() {
        let describe = frame(b'T', b"\0\0");
        assert_eq!(inspect(Retry::Armed, &describe, 1024), Held::Wait);
        let mut rows = describe.clone();
        rows.extend(frame(b'D', b"\0\0"));
        assert_eq!(inspect(Retry::Armed, &rows, 1024), Held::Release);

        let mut answer = describe.clone();
        answer.extend(refused());
        assert_eq!(inspect(Retry::Armed, &answer, 1024), Held::Refused);
        answer.extend(frame(b'Z', b"I"));
        assert_eq!(
            inspect(Retry::Armed, &answer, 1024),
            Held::Rerun { len: answer.len() }
        );
        // The refusal left a transaction open: the client hears it.
        let mut in_tx = refused();
        in_tx.extend(frame(b'Z', b"E"));
        assert_eq!(inspect(Retry::Armed, &in_tx, 1024), Held::Release);
    }

    #[test]
    fn standby_refusals_rerun_and_other_errors_pass() {
        for code in STANDBY_REFUSALS {
            let mut out = BytesMut::new();
            encode::error_response(&mut out, Severity::Error, code, "a standby says no");
            out.extend(frame(b'Z', b"I"));
            assert_eq!(
                inspect(Retry::Armed, &out, 1024),
                Held::Rerun { len: out.len() },
                "{code}"
            );
        }
    }

    #[test]
    fn other_errors_and_partial_frames() {
        let mut out = BytesMut::new();
        encode::error_response(&mut out, Severity::Error, "42P01", "no such table");
        assert_eq!(inspect(Retry::Armed, &out, 1024), Held::Release);
        let whole = refused();
        assert_eq!(
            inspect(Retry::Armed, &whole[..whole.len() - 1], 1024),
            Held::Wait
        );
        assert_eq!(inspect(Retry::Refused, b"", 1024), Held::Refused);
    }
}
