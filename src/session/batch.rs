//! One client request, framed once: the whole messages from the front of the
//! client buffer up to the one that ends it, with each message's kind, the
//! names it refers to and, for SQL, its verdict. Everything that routes,
//! syncs, rewrites or records a request reads this value; nothing frames the
//! client's bytes a second time.
//!
//! A request ends at a Query, Sync, Flush, FunctionCall or Terminate. COPY
//! data (CopyData, CopyDone, CopyFail) travels as its own batch, forwarded
//! where the COPY runs. Pure: no I/O.

use std::ops::Range;
use std::sync::Arc;

use crate::classify::Verdict;
use crate::protocol::frame::split_frame;
use crate::protocol::{be_i32, cstr, is_frontend_tag, tag, ProtocolError, HEADER_LEN};

/// How a batch ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A simple Query (one request).
    Query,
    /// An extended-protocol Sync (one request).
    Sync,
    /// A Flush: the client waits for output, the extended batch stays open.
    Flush,
    /// A fastpath FunctionCall (one request).
    FunctionCall,
    /// Terminate: the client is leaving.
    Terminate,
    /// COPY data on its way to a running COPY.
    Copy,
    /// No end yet, but the buffered messages passed the high-water mark:
    /// they go now and the batch stays open.
    Open,
}

/// What one message is, as far as pgsplit cares. Ranges are offsets within
/// the message's wire bytes.
#[derive(Debug, Clone)]
pub enum Kind {
    Query(Arc<Verdict>),
    /// `name` is the statement name; `body` the query text, its NUL and the
    /// parameter types (what makes two statements the same).
    Parse {
        name: Range<usize>,
        body: Range<usize>,
        verdict: Arc<Verdict>,
    },
    Bind {
        statement: Range<usize>,
    },
    DescribeStatement {
        name: Range<usize>,
    },
    CloseStatement {
        name: Range<usize>,
    },
    FunctionCall {
        oid: u32,
    },
    /// Describe/Close of a portal, Execute, Sync, Flush, COPY data, Terminate.
    Other,
}

/// One whole message of a batch.
#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u8,
    /// Where it starts within the batch.
    pub at: usize,
    /// Its length on the wire.
    pub len: usize,
    pub kind: Kind,
}

impl Msg {
    /// Its bytes, given the batch's bytes.
    pub fn wire<'a>(&self, batch: &'a [u8]) -> &'a [u8] {
        &batch[self.at..self.at + self.len]
    }

    /// A name range of this message, given the batch's bytes.
    pub fn slice<'a>(&self, batch: &'a [u8], range: &Range<usize>) -> &'a [u8] {
        &batch[self.at + range.start..self.at + range.end]
    }
}

/// See the module doc. Reused from request to request (its message list
/// keeps its capacity).
#[derive(Debug)]
pub struct Batch {
    /// Bytes it spans at the front of the client buffer.
    pub len: usize,
    pub msgs: Vec<Msg>,
    pub end: End,
    /// ReadyForQuery messages it will bring (Query, Sync, FunctionCall).
    pub requests: u32,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            len: 0,
            msgs: Vec::new(),
            end: End::Sync,
            requests: 0,
        }
    }
}

/// Whether `t` is COPY data.
fn is_copy(t: u8) -> bool {
    matches!(t, tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL)
}

impl Batch {
    /// Frames the next batch at the front of `buf` into `self`. Ok(false)
    /// when no complete batch is there yet (and fewer than `high_water`
    /// bytes of whole messages wait). `classify` gives the verdict on a
    /// Query's or Parse's SQL text. Errors on a malformed message or one a
    /// client may not send.
    pub fn frame(
        &mut self,
        buf: &[u8],
        max: usize,
        high_water: usize,
        mut classify: impl FnMut(&[u8]) -> Arc<Verdict>,
    ) -> Result<bool, ProtocolError> {
        self.msgs.clear();
        self.requests = 0;
        self.len = 0;
        let mut pos = 0;
        let copy = buf.first().copied().is_some_and(is_copy);
        while let Some(frame) = split_frame(&buf[pos..], max)? {
            let t = frame.tag;
            if copy != is_copy(t) {
                break;
            }
            if t == tag::PASSWORD {
                return Err(ProtocolError::Unexpected {
                    tag: t,
                    phase: "a session",
                });
            }
            if !is_frontend_tag(t) {
                return Err(ProtocolError::UnknownTag { tag: t });
            }
            let len = frame.wire_len();
            let kind = kind(t, frame.body, &mut classify)?;
            self.msgs.push(Msg {
                tag: t,
                at: pos,
                len,
                kind,
            });
            pos += len;
            let end = match t {
                tag::QUERY => Some(End::Query),
                tag::SYNC => Some(End::Sync),
                tag::FLUSH => Some(End::Flush),
                tag::FUNCTION_CALL => Some(End::FunctionCall),
                tag::TERMINATE => Some(End::Terminate),
                _ => None,
            };
            if matches!(t, tag::QUERY | tag::SYNC | tag::FUNCTION_CALL) {
                self.requests += 1;
            }
            if let Some(end) = end {
                self.end = end;
                self.len = pos;
                return Ok(true);
            }
        }
        if self.msgs.is_empty() {
            return Ok(false);
        }
        if copy {
            self.end = End::Copy;
        } else if pos >= high_water {
            self.end = End::Open;
        } else {
            self.msgs.clear();
            return Ok(false);
        }
        self.len = pos;
        Ok(true)
    }

    /// The batch is a single simple Query: its verdict.
    pub fn single_query(&self) -> Option<&Arc<Verdict>> {
        match &self.msgs[..] {
            [Msg {
                kind: Kind::Query(v),
                ..
            }] => Some(v),
            _ => None,
        }
    }

    /// The batch is a named Parse and its Sync, nothing else (what libpq's
    /// PQprepare sends): that Parse.
    pub fn lone_named_parse(&self) -> Option<&Msg> {
        match &self.msgs[..] {
            [parse @ Msg {
                kind: Kind::Parse { name, .. },
                ..
            }, sync]
                if !name.is_empty() && sync.tag == tag::SYNC =>
            {
                Some(parse)
            }
            _ => None,
        }
    }

    /// Verdicts of its SQL (Queries and Parses), in order.
    pub fn verdicts(&self) -> impl Iterator<Item = &Arc<Verdict>> {
        self.msgs.iter().filter_map(|m| match &m.kind {
            Kind::Query(v) | Kind::Parse { verdict: v, .. } => Some(v),
            _ => None,
        })
    }

    /// Whether it only parses, describes or closes statements (and
    /// flushes): nothing that binds or runs a portal.
    pub fn only_statements(&self) -> bool {
        self.msgs.iter().all(|m| match m.kind {
            Kind::Parse { .. } | Kind::DescribeStatement { .. } | Kind::CloseStatement { .. } => {
                true
            }
            _ => m.tag == tag::FLUSH,
        })
    }

    /// Whether it carries only the Terminate.
    pub fn is_terminate(&self) -> bool {
        self.end == End::Terminate && self.msgs.len() == 1
    }
}

fn malformed(what: &'static str) -> ProtocolError {
    ProtocolError::Malformed { what }
}

/// The range of a NUL-terminated name starting at `from` in `body`, as an
/// offset range within the message (header included), and where it ends.
fn name_at(body: &[u8], from: usize, what: &'static str) -> Result<Range<usize>, ProtocolError> {
    let (name, _) = cstr(body.get(from..).ok_or(malformed(what))?).ok_or(malformed(what))?;
    let start = HEADER_LEN + from;
    Ok(start..start + name.len())
}

fn kind(
    t: u8,
    body: &[u8],
    classify: &mut impl FnMut(&[u8]) -> Arc<Verdict>,
) -> Result<Kind, ProtocolError> {
    Ok(match t {
        tag::QUERY => {
            let (sql, _) = cstr(body).ok_or(malformed("Query"))?;
            Kind::Query(classify(sql))
        }
        tag::PARSE => {
            let name = name_at(body, 0, "Parse")?;
            let after = name.end - HEADER_LEN + 1;
            let (sql, _) = cstr(&body[after..]).ok_or(malformed("Parse"))?;
            Kind::Parse {
                body: HEADER_LEN + after..HEADER_LEN + body.len(),
                name,
                verdict: classify(sql),
            }
        }
        tag::BIND => {
            let portal = name_at(body, 0, "Bind")?;
            let statement = name_at(body, portal.end - HEADER_LEN + 1, "Bind")?;
            Kind::Bind { statement }
        }
        tag::DESCRIBE | tag::CLOSE => match body.first() {
            Some(b'S') => {
                let name = name_at(body, 1, "Describe or Close")?;
                if t == tag::DESCRIBE {
                    Kind::DescribeStatement { name }
                } else {
                    Kind::CloseStatement { name }
                }
            }
            Some(b'P') => Kind::Other,
            _ => return Err(malformed("Describe or Close")),
        },
        tag::FUNCTION_CALL => {
            if body.len() < 4 {
                return Err(malformed("FunctionCall"));
            }
            Kind::FunctionCall {
                oid: be_i32(body, 0) as u32,
            }
        }
        _ => Kind::Other,
    })
}

#[cfg(test)]
mod tests;
