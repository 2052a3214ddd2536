//! Async helpers over [`crate::protocol`] for the cold paths: startup,
//! authentication and logging in to servers, where messages are read one at a
//! time with exact reads (so nothing is read past a TLS switch). The hot path
//! does not use these; see `session`.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::{frame, ProtocolError, HEADER_LEN};

/// Failure reading or writing one message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Reads one whole tagged message into `buf` (which is cleared first) and
/// returns its type byte; the body is `buf[..]`. The declared length is checked
/// against `max` before the body is reserved.
pub async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<u8, WireError> {
    let mut header = [0u8; HEADER_LEN];
    read_exact(stream, &mut header).await?;
    let (tag, wire) = frame::peek_header(&header, max)?.expect("header is complete");
    buf.clear();
    buf.resize(wire - HEADER_LEN, 0);
    read_exact(stream, &mut buf[..]).await?;
    Ok(tag)
}

/// `read_exact` that reports a clean EOF as [`WireError::Closed`].
pub async fn read_exact<S: AsyncRead + Unpin>(
    stream: &mut S,
    out: &mut [u8],
) -> Result<(), WireError> {
    match stream.read_exact(out).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(WireError::Closed),
        Err(e) => Err(WireError::Io(e)),
    }
}

/// Writes `buf` whole, flushes, and clears it.
pub async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<(), WireError> {
    stream.write_all(buf).await?;
    stream.flush().await?;
    buf.clear();
    Ok(())
}
