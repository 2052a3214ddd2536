//! The hot path: bytes between a logged-in client and its server connection.
//!
//! Client bytes are split into whole messages (bounded by `max_message_size`)
//! so pgsplit can see Terminate and count requests; server bytes stream through
//! a [`StreamScanner`] that only holds back ReadyForQuery and ErrorResponse.
//! Each read is forwarded with one write of the complete messages it contains:
//! no message is decoded, re-encoded or allocated for.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::error::SessionError;
use super::stream::ClientStream;
use crate::metrics::ListenerMetrics;
use crate::pool::ServerConn;
use crate::protocol::frame::{bytes_wanted, split_frame, StreamScanner};
use crate::protocol::{is_frontend_tag, message, tag, ProtocolError};

/// Read size for each side; buffers grow beyond it only for a large client
/// message (up to the limit) or a large watched server message.
const READ_SIZE: usize = 16 * 1024;

/// Transaction status from the last ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InBlock,
    Failed,
}

impl TxStatus {
    fn from_byte(b: u8) -> TxStatus {
        match b {
            b'T' => TxStatus::InBlock,
            b'E' => TxStatus::Failed,
            _ => TxStatus::Idle,
        }
    }
}

/// Where the conversation with the server stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing owed: the server's last word was ReadyForQuery.
    Ready(TxStatus),
    /// `owed` ReadyForQuery messages are still to come (one per Query, Sync or
    /// FunctionCall sent), or extended-protocol messages await their Sync.
    Busy { owed: u32, last: TxStatus },
}

impl Phase {
    fn sent_request(&mut self) {
        *self = match *self {
            Phase::Ready(last) => Phase::Busy { owed: 1, last },
            Phase::Busy { owed, last } => Phase::Busy {
                owed: owed + 1,
                last,
            },
        }
    }

    fn sent_unsynced(&mut self) {
        if let Phase::Ready(last) = *self {
            *self = Phase::Busy { owed: 0, last };
        }
    }

    fn got_ready(&mut self, status: TxStatus) {
        *self = match *self {
            Phase::Busy { owed, .. } if owed > 1 => Phase::Busy {
                owed: owed - 1,
                last: status,
            },
            _ => Phase::Ready(status),
        }
    }

    /// At an idle point: no request outstanding and no transaction open.
    pub fn is_idle(self) -> bool {
        self == Phase::Ready(TxStatus::Idle)
    }
}

/// How a relay ended without error.
#[derive(Debug)]
pub enum Outcome {
    /// The client sent Terminate.
    Terminated,
    /// The client closed its socket; `busy` if a query was running.
    ClientGone { busy: bool },
    /// pgsplit is shutting down and the session reached an idle point.
    Shutdown,
}

/// A relay error, and whether the client can still be sent an ErrorResponse
/// (only at a message boundary of the server stream).
#[derive(Debug)]
pub struct Failure {
    pub error: SessionError,
    pub can_tell: bool,
}

pub struct Relay<'a> {
    pub client: &'a mut ClientStream,
    pub server: &'a mut ServerConn,
    pub metrics: &'a ListenerMetrics,
    pub max_message: usize,
    pub shutdown: CancellationToken,
}

impl Relay<'_> {
    /// Runs until the client leaves, the server is lost, or shutdown finds the
    /// session idle.
    pub async fn run(self) -> Result<Outcome, Failure> {
        let Relay {
            client,
            server,
            metrics,
            max_message,
            shutdown,
        } = self;
        let mut client_buf = BytesMut::with_capacity(READ_SIZE);
        let mut server_buf = BytesMut::with_capacity(READ_SIZE);
        let mut scanner = StreamScanner::new();
        let mut phase = Phase::Ready(TxStatus::Idle);
        let mut server_fatal = false;
        let mut draining = false;
        let fail = |error: SessionError, scanner: &StreamScanner| Failure {
            error,
            can_tell: scanner.at_boundary(),
        };

        loop {
            // Room for the rest of a partial client message (bounded by the
            // limit, checked on its header) or for a normal read.
            let wanted =
                bytes_wanted(&client_buf, max_message).map_err(|e| fail(e.into(), &scanner))?;
            client_buf.reserve(wanted.max(READ_SIZE));
            server_buf.reserve(READ_SIZE);

            tokio::select! {
                read = client.read_buf(&mut client_buf) => {
                    let n = read.map_err(|e| fail(SessionError::ClientIo(e), &scanner))?;
                    if n == 0 {
                        return Ok(Outcome::ClientGone { busy: !phase.is_idle() });
                    }
                    let (forward, terminate) =
                        scan_client(&client_buf, max_message, &mut phase).map_err(|e| fail(e.into(), &scanner))?;
                    if forward > 0 {
                        server
                            .stream
                            .write_all(&client_buf[..forward])
                            .await
                            .map_err(|_| fail(lost(server), &scanner))?;
                        metrics.bytes_to_server.inc_by(forward as u64);
                        client_buf.advance(forward);
                    }
                    if terminate {
                        return Ok(Outcome::Terminated);
                    }
                }
                read = server.stream.read_buf(&mut server_buf) => {
                    let n = read.unwrap_or(0);
                    if n == 0 {
                        let error = lost(server);
                        return Err(Failure { error, can_tell: scanner.at_boundary() && !server_fatal });
                    }
                    let forward = scanner
                        .scan(
                            &server_buf,
                            max_message,
                            |t| t == tag::READY_FOR_QUERY || t == tag::ERROR_RESPONSE,
                            |t, body| match t {
                                tag::READY_FOR_QUERY => {
                                    phase.got_ready(TxStatus::from_byte(body.first().copied().unwrap_or(b'I')))
                                }
                                _ => server_fatal |= message::error_is_fatal(body),
                            },
                        )
                        .map_err(|_| Failure { error: lost(server), can_tell: false })?;
                    if forward > 0 {
                        client
                            .write_all(&server_buf[..forward])
                            .await
                            .map_err(|e| fail(SessionError::ClientIo(e), &scanner))?;
                        client.flush().await.map_err(|e| fail(SessionError::ClientIo(e), &scanner))?;
                        metrics.bytes_to_client.inc_by(forward as u64);
                        server_buf.advance(forward);
                    }
                    if draining && phase.is_idle() {
                        return Ok(Outcome::Shutdown);
                    }
                }
                _ = shutdown.cancelled(), if !draining => {
                    if phase.is_idle() {
                        return Ok(Outcome::Shutdown);
                    }
                    // Let the transaction finish; close at the next idle point.
                    draining = true;
                }
            }
        }
    }
}

fn lost(server: &ServerConn) -> SessionError {
    SessionError::ServerLost {
        backend: server.name.clone(),
        address: server.addr.to_string(),
    }
}

/// Walks the whole client messages at the front of `buf`: returns how many
/// bytes to forward and whether a Terminate follows them. Counts requests into
/// `phase`. Rejects message types a client may not send after startup.
fn scan_client(buf: &[u8], max: usize, phase: &mut Phase) -> Result<(usize, bool), ProtocolError> {
    let mut pos = 0;
    while let Some(frame) = split_frame(&buf[pos..], max)? {
        match frame.tag {
            tag::TERMINATE => return Ok((pos, true)),
            tag::QUERY | tag::SYNC | tag::FUNCTION_CALL => phase.sent_request(),
            tag::PASSWORD => {
                return Err(ProtocolError::Unexpected {
                    tag: frame.tag,
                    phase: "a session",
                })
            }
            t if is_frontend_tag(t) => phase.sent_unsynced(),
            t => return Err(ProtocolError::UnknownTag { tag: t }),
        }
        pos += frame.wire_len();
    }
    Ok((pos, false))
}

#[cfg(test)]
mod tests {
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
        let (n, term) = scan_client(&wire, 1024, &mut phase).unwrap();
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
        assert_eq!(scan_client(&wire, 1024, &mut phase).unwrap(), (q, true));
        let mut phase = Phase::Ready(TxStatus::Idle);
        assert_eq!(
            scan_client(&wire[..q - 1], 1024, &mut phase).unwrap(),
            (0, false)
        );
    }

    #[test]
    fn garbage_and_oversize_are_protocol_errors() {
        let mut phase = Phase::Ready(TxStatus::Idle);
        assert!(matches!(
            scan_client(b"\x01\0\0\0\x04", 1024, &mut phase),
            Err(ProtocolError::UnknownTag { tag: 1 })
        ));
        assert!(matches!(
            scan_client(&msg(b'Q', &[b'a'; 2000]), 1024, &mut phase),
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
}
