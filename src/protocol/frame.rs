//! Message boundaries, found in place.
//!
//! Two views of the same framing rule (a type byte, then an Int32 length that
//! counts itself but not the type byte):
//!
//! - [`split_frame`] hands out *whole* messages. Used for client traffic, where
//!   pgsplit may need to look inside a Query or Parse and where every declared
//!   length is bounded by `max_message_size` as soon as the header arrives, so a
//!   lying header can never make the caller reserve more than the limit.
//! - [`StreamScanner`] walks server traffic, which may carry rows far larger than
//!   any buffer. It lets the body of most messages stream through in pieces and
//!   only holds back the few message types the caller wants to read whole
//!   (ReadyForQuery, ErrorResponse, ...).
//!
//! Neither copies nor allocates: they return offsets into the caller's buffer.

use super::{ProtocolError, HEADER_LEN};

/// One whole tagged message inside a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub tag: u8,
    /// The message body, without the type byte and the length.
    pub body: &'a [u8],
}

impl Frame<'_> {
    /// Bytes the message occupies on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }
}

/// Reads the header at the front of `buf`: `Ok(None)` if fewer than five bytes
/// are buffered; the total wire length otherwise. Fails if the declared length is
/// below 4 or the message would exceed `max` bytes on the wire.
pub fn peek_header(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, ProtocolError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(ProtocolError::LengthTooSmall { len });
    }
    let wire = len as usize + 1;
    if wire > max {
        return Err(ProtocolError::TooLarge { len, max });
    }
    Ok(Some((buf[0], wire)))
}

/// The first whole message in `buf`, or `Ok(None)` when more bytes are needed.
///
/// The header is validated as soon as it is buffered, so an oversized or
/// malformed length is reported before its body arrives. Never allocates.
pub fn split_frame(buf: &[u8], max: usize) -> Result<Option<Frame<'_>>, ProtocolError> {
    match peek_header(buf, max)? {
        Some((tag, wire)) if buf.len() >= wire => Ok(Some(Frame {
            tag,
            body: &buf[HEADER_LEN..wire],
        })),
        _ => Ok(None),
    }
}

/// How many more bytes `buf` needs before [`split_frame`] can return the message
/// at its front: at least one when the header is incomplete, never more than
/// `max`. Callers use it to size a `reserve` without trusting the peer.
pub fn bytes_wanted(buf: &[u8], max: usize) -> Result<usize, ProtocolError> {
    match peek_header(buf, max)? {
        None => Ok(HEADER_LEN - buf.len()),
        Some((_, wire)) => Ok(wire.saturating_sub(buf.len())),
    }
}

/// Walks a stream of server messages across reads.
///
/// State between calls is only how much of the current message body is still to
/// come, so a multi-gigabyte DataRow passes through a small buffer.
#[derive(Debug, Default, Clone)]
pub struct StreamScanner {
    /// Body bytes of a message whose header was already passed, not yet seen.
    body_left: usize,
}

impl StreamScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// True when the scanner stands at a message boundary.
    pub fn at_boundary(&self) -> bool {
        self.body_left == 0
    }

    /// Scans `buf` (the bytes not yet forwarded) and returns how many leading
    /// bytes may be forwarded now. For each message whose tag satisfies `watch`,
    /// the whole message must be buffered before it is passed; `on_msg` is then
    /// called with its tag and body. Watched messages longer than `max_watched`
    /// are a protocol error. Bytes after the returned count must be kept and
    /// presented again, followed by new ones.
    pub fn scan(
        &mut self,
        buf: &[u8],
        max_watched: usize,
        watch: impl Fn(u8) -> bool,
        mut on_msg: impl FnMut(u8, &[u8]),
    ) -> Result<usize, ProtocolError> {
        let mut pos = 0;
        if self.body_left > 0 {
            let take = self.body_left.min(buf.len());
            self.body_left -= take;
            pos = take;
        }
        while pos < buf.len() {
            let rest = &buf[pos..];
            if rest.len() < HEADER_LEN {
                break;
            }
            let tag = rest[0];
            if watch(tag) {
                match split_frame(rest, max_watched)? {
                    Some(frame) => {
                        on_msg(tag, frame.body);
                        pos += frame.wire_len();
                    }
                    None => break,
                }
            } else {
                let (_, wire) = peek_header(rest, usize::MAX)?.expect("five bytes are buffered");
                let take = wire.min(rest.len());
                self.body_left = wire - take;
                pos += take;
            }
        }
        Ok(pos)
    }
}

#[cfg(test)]
mod tests;
