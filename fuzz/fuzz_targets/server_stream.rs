//! The server side: arbitrary server bytes through the stream scanner
//! (`protocol::frame::StreamScanner`, which streams most messages in pieces
//! and holds back the ones the caller reads whole), the reply tracker
//! (`session::replies::Replies::step`, deciding for each message whether
//! the client hears it and what it completes), the safety net's look at
//! held replies (`session::retry::inspect`) and the views over the server
//! messages pgsplit reads (`protocol::message`).
//!
//! Input: one byte `n`, then `n` (at most 15) bytes naming what pgsplit
//! sent and so what the server owes (plain client requests, followed
//! client messages, pgsplit's own messages, stand-ins), one byte giving the
//! size of the reads the bytes arrive in, then the server's bytes.

#![no_main]

use std::cell::RefCell;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgsplit::protocol::frame::StreamScanner;
use pgsplit::protocol::{message, tag};
use pgsplit::session::relay::Net;
use pgsplit::session::replies::{Await, Item, Replies, Standin};
use pgsplit::session::retry;
use pgsplit_fuzz::MAX_MESSAGE;

fn item(op: u8) -> Item {
    let statement = Some(u64::from(op >> 4));
    match op % 16 {
        0 => Item::Pass(1),
        1 => Item::Pass(u32::from(op >> 4) + 1),
        2 => Item::Client(Await::Parse { statement }),
        3 => Item::Client(Await::Parse { statement: None }),
        4 => Item::Client(Await::Bind),
        5 => Item::Client(Await::Describe),
        6 => Item::Client(Await::Execute),
        7 => Item::Client(Await::Close),
        8 => Item::Client(Await::Ready),
        9 => Item::Own(Await::Parse { statement }),
        10 => Item::Own(Await::Describe),
        11 => Item::Own(Await::Close),
        12 => Item::Own(Await::Ready),
        13 => Item::Standin(Standin::ParseComplete),
        14 => Item::Standin(Standin::CloseComplete),
        _ => Item::Own(Await::Execute),
    }
}

/// Reads a watched message the way pgsplit does where it reads one.
fn look_inside(t: u8, body: &[u8]) {
    match t {
        tag::ERROR_RESPONSE | tag::NOTICE_RESPONSE => {
            let _ = message::error_is_fatal(body);
            let _ = message::ErrorFields::parse(body);
        }
        tag::PARAMETER_STATUS => {
            let _ = message::parameter_status(body);
        }
        tag::BACKEND_KEY_DATA => {
            let _ = message::backend_key_data(body);
        }
        tag::DATA_ROW => {
            let _ = message::data_row_text(body);
        }
        tag::AUTHENTICATION => {
            let _ = message::AuthRequest::parse(body);
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (ops, rest) = rest.split_at(n);
    let Some((&read_size, server)) = rest.split_first() else {
        return;
    };
    let replies = RefCell::new(Replies::default());
    let mut standins = BytesMut::new();
    for &op in ops {
        replies.borrow_mut().push(item(op));
    }
    replies.borrow_mut().standins(&mut standins);

    for net in [Net::Armed, Net::Refused] {
        match retry::inspect(net, server, MAX_MESSAGE) {
            retry::Held::Rerun { len } => assert!(len <= server.len()),
            retry::Held::Wait | retry::Held::Release | retry::Held::Refused => {}
        }
    }

    let mut scanner = StreamScanner::new();
    let mut pending: Vec<u8> = Vec::new();
    let chunk = usize::from(read_size).max(1);
    for piece in server.chunks(chunk) {
        pending.extend_from_slice(piece);
        let scanned = scanner.scan(
            &pending,
            MAX_MESSAGE,
            |t| replies.borrow().watches(t),
            |t, body| {
                look_inside(t, body);
                let status = if t == tag::READY_FOR_QUERY {
                    body.first().copied().unwrap_or(b'I')
                } else {
                    0
                };
                let mut r = replies.borrow_mut();
                r.standins(&mut standins);
                let _ = r.step(t, status);
                let _ = r.take_unprepared();
                r.standins(&mut standins);
            },
        );
        match scanned {
            Ok(forward) => {
                assert!(forward <= pending.len());
                if !replies.borrow().tracking() {
                    let _ = replies.borrow().streamed();
                }
                pending.drain(..forward);
            }
            Err(_) => return,
        }
        // Whatever the server sent, what is owed never grows.
        let _ = replies.borrow().client_requests();
    }
    // Stand-ins are whole five-byte messages.
    assert_eq!(standins.len() % 5, 0);
});
