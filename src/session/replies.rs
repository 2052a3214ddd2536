//! What the server owes, in order, for what pgsplit sent it: the client's
//! requests, pgsplit's own messages slipped in before them (a statement the
//! connection lacks, a deferred BEGIN), and the replies pgsplit gives the
//! client itself for messages it did not send (a Parse of a statement the
//! connection already holds, a Close of a shared statement).
//!
//! Most of the time everything owed is plain client requests ([`Item::Pass`]):
//! the relay then only watches ReadyForQuery and ErrorResponse and streams
//! the rest. Around pgsplit's own messages and its stand-in replies, the
//! server's replies are followed message by message: each completes the
//! message at the head of the queue (ParseComplete a Parse, BindComplete a
//! Bind, RowDescription or NoData a Describe, CommandComplete,
//! EmptyQueryResponse or PortalSuspended an Execute, CloseComplete a Close,
//! ReadyForQuery a Sync or Query). An ErrorResponse skips everything up to
//! the next Sync, as the server does, stand-in replies included. Pure.

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};

use crate::protocol::tag;

/// A message whose reply is awaited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Await {
    /// A Parse; `statement` is the shared statement it prepares, if any.
    Parse {
        statement: Option<u64>,
    },
    Bind,
    Describe,
    Execute,
    Close,
    /// Sync, Query or FunctionCall: answered by ReadyForQuery.
    Ready,
}

/// A reply pgsplit gives the client in place of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standin {
    ParseComplete,
    CloseComplete,
}

/// One thing owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// This many client requests, their replies passed on untouched.
    Pass(u32),
    /// A client message, followed one by one.
    Client(Await),
    /// pgsplit's own message: its reply is dropped.
    Own(Await),
    /// Give the client this reply here.
    Standin(Standin),
}

/// What to do with one server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Forward,
    Drop,
}

/// What one server message meant, beyond passing or dropping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Nothing,
    /// A client request is answered (ReadyForQuery with this status byte).
    ClientReady(u8),
    /// pgsplit's own request is answered; `failed` if it reported an error.
    OwnReady {
        failed: bool,
    },
    /// An error came for a client message.
    ClientError,
    /// The server went into COPY FROM STDIN for a client request.
    CopyIn,
    /// An error came for one of pgsplit's own messages inside a client batch
    /// (the client hears it: its batch is skipped up to its Sync).
    OwnError,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct Replies {
    items: VecDeque<Item>,
    /// An error was seen: skipping to the next Sync.
    skipping: bool,
    /// pgsplit's own simple query reported an error.
    own_failed: bool,
    /// Shared statements whose Parse failed or was skipped: the connection
    /// does not hold them (see [`Replies::take_unprepared`]).
    unprepared: Vec<u64>,
    /// Shared statements whose Parse the server completed (see
    /// [`Replies::take_parsed`]).
    parsed: Vec<u64>,
}

impl Replies {
    /// Client requests whose replies pass untouched.
    pub fn pass(&mut self, requests: u32) {
        if requests == 0 {
            return;
        }
        match self.items.back_mut() {
            Some(Item::Pass(n)) => *n += requests,
            _ => self.items.push_back(Item::Pass(requests)),
        }
    }

    pub fn push(&mut self, item: Item) {
        match item {
            Item::Pass(n) => self.pass(n),
            other => self.items.push_back(other),
        }
    }

    /// Statements the connection turned out not to hold, since last asked.
    pub fn take_unprepared(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.unprepared)
    }

    /// Statements the server reported parsed, since last asked.
    pub fn take_parsed(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.parsed)
    }

    /// Forgets everything owed (the connection is gone).
    pub fn clear(&mut self) {
        *self = Replies::default();
    }

    /// Nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// ReadyForQuery messages still owed to the client.
    pub fn client_requests(&self) -> u32 {
        self.items
            .iter()
            .map(|i| match i {
                Item::Pass(n) => *n,
                Item::Client(Await::Ready) => 1,
                _ => 0,
            })
            .sum()
    }

    /// Whether the next server message must be looked at whole (the head is
    /// not plain passing). Messages of a plain head need only ReadyForQuery
    /// and ErrorResponse looked at.
    pub fn tracking(&self) -> bool {
        !matches!(self.items.front(), Some(Item::Pass(_)) | None)
    }

    /// Whether, under the current head, a message of tag `t` must be read
    /// whole before it is passed on (`tracking` or not).
    pub fn watches(&self, t: u8) -> bool {
        if self.tracking() {
            // Rows and COPY data can be huge and complete nothing.
            t != tag::DATA_ROW && t != tag::COPY_DATA
        } else {
            matches!(
                t,
                tag::READY_FOR_QUERY | tag::ERROR_RESPONSE | tag::COPY_IN_RESPONSE
            )
        }
    }

    /// What to do with a streamed (not watched) message under the current
    /// head.
    pub fn streamed(&self) -> Action {
        match self.items.front() {
            Some(Item::Own(_)) => Action::Drop,
            _ => Action::Forward,
        }
    }

    /// Takes the stand-in replies now at the head of the queue into `out`
    /// (encoded): every reply before them is in. Call after queueing a
    /// batch and after every [`Replies::step`], so a stand-in never waits
    /// for a server message that will not come (a Flush after a Parse the
    /// connection already held).
    pub fn standins(&mut self, out: &mut BytesMut) {
        while let Some(Item::Standin(s)) = self.items.front() {
            if !self.skipping {
                let t = match s {
                    Standin::ParseComplete => b'1',
                    Standin::CloseComplete => b'3',
                };
                out.put_u8(t);
                out.put_i32(4);
            }
            self.items.pop_front();
        }
    }

    /// Accounts for one whole server message of tag `t` (`status` is a
    /// ReadyForQuery's status byte). Stand-ins at the head must have been
    /// taken with [`Replies::standins`].
    pub fn step(&mut self, t: u8, status: u8) -> (Action, Event) {
        // Messages the server sends whenever it likes.
        if t == tag::NOTIFICATION_RESPONSE {
            return (Action::Forward, Event::Nothing);
        }
        let Some(head) = self.items.front_mut() else {
            // Nothing owed: an idle server's notice or goodbye.
            return (Action::Forward, Event::Nothing);
        };
        match *head {
            Item::Pass(n) => {
                let event = match t {
                    tag::COPY_IN_RESPONSE => Event::CopyIn,
                    tag::READY_FOR_QUERY => {
                        if n <= 1 {
                            self.items.pop_front();
                        } else {
                            *head = Item::Pass(n - 1);
                        }
                        // An error's skip ends at a Sync, plain ones too.
                        self.skipping = false;
                        Event::ClientReady(status)
                    }
                    tag::ERROR_RESPONSE => Event::ClientError,
                    _ => Event::Nothing,
                };
                (Action::Forward, event)
            }
            Item::Standin(_) => unreachable!("stand-ins are taken before a step"),
            Item::Client(a) => self.step_await(a, t, status, Action::Forward),
            Item::Own(a) => self.step_await(a, t, status, Action::Drop),
        }
    }

    fn step_await(&mut self, a: Await, t: u8, status: u8, action: Action) -> (Action, Event) {
        let own = action == Action::Drop;
        if t == tag::READY_FOR_QUERY {
            // A ReadyForQuery ends the request at the head and whatever the
            // error skipped before it.
            while let Some(item) = self.items.front() {
                match item {
                    Item::Client(Await::Ready) | Item::Own(Await::Ready) => break,
                    // A plain request's own Sync.
                    Item::Pass(_) => return self.step(t, status),
                    _ if self.skipping => {
                        self.items.pop_front();
                    }
                    _ => break,
                }
            }
            let head = self.items.pop_front();
            self.skipping = false;
            let failed = std::mem::take(&mut self.own_failed);
            return match head {
                Some(Item::Own(Await::Ready)) => (Action::Drop, Event::OwnReady { failed }),
                _ => (Action::Forward, Event::ClientReady(status)),
            };
        }
        if t == tag::ERROR_RESPONSE {
            if a == Await::Ready {
                // An error inside a simple query: its ReadyForQuery follows.
                if own {
                    self.own_failed = true;
                    return (Action::Drop, Event::Nothing);
                }
                return (Action::Forward, Event::ClientError);
            }
            // The server skips the rest of the batch up to its Sync: so do
            // we. Statements whose Parse failed or was skipped are not on
            // the connection.
            while let Some(item) = self.items.front() {
                match *item {
                    // A plain request (a Sync sent after a Flush) ends
                    // the skip with its own ReadyForQuery.
                    Item::Client(Await::Ready) | Item::Own(Await::Ready) | Item::Pass(_) => break,
                    Item::Client(Await::Parse {
                        statement: Some(id),
                    })
                    | Item::Own(Await::Parse {
                        statement: Some(id),
                    }) => self.unprepared.push(id),
                    _ => {}
                }
                self.items.pop_front();
            }
            self.skipping = true;
            // The client hears every error of its batch, ours included.
            let event = if own {
                Event::OwnError
            } else {
                Event::ClientError
            };
            return (Action::Forward, event);
        }
        let completes = match a {
            Await::Parse { .. } => t == tag::PARSE_COMPLETE,
            Await::Bind => t == tag::BIND_COMPLETE,
            Await::Close => t == tag::CLOSE_COMPLETE,
            Await::Describe => t == tag::ROW_DESCRIPTION || t == tag::NO_DATA,
            Await::Execute => matches!(
                t,
                tag::COMMAND_COMPLETE | tag::EMPTY_QUERY_RESPONSE | tag::PORTAL_SUSPENDED
            ),
            Await::Ready => false,
        };
        if completes {
            if let Some(
                Item::Client(Await::Parse {
                    statement: Some(id),
                })
                | Item::Own(Await::Parse {
                    statement: Some(id),
                }),
            ) = self.items.pop_front()
            {
                self.parsed.push(id);
            }
        }
        let event = if t == tag::COPY_IN_RESPONSE && !own {
            Event::CopyIn
        } else {
            Event::Nothing
        };
        (action, event)
    }
}

#[cfg(test)]
mod tests;
