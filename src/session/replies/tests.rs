//! The reply tracker, driven as the relay drives it: what is owed is
//! queued, then server messages are stepped one by one with stand-ins taken
//! before each step and after the last. Each case says what the client
//! receives (message tags, stand-ins included), the events the relay hears,
//! and whether anything is still owed.

use super::*;

const PARSE_COMPLETE: u8 = b'1';
const PARAMETER_DESCRIPTION: u8 = b't';

/// A client Parse of the shared statement `id`.
fn parse(id: u64) -> Item {
    Item::Client(Await::Parse {
        statement: Some(id),
    })
}

/// pgsplit's own Parse of the shared statement `id`.
fn own_parse(id: u64) -> Item {
    Item::Own(Await::Parse {
        statement: Some(id),
    })
}

fn client(a: Await) -> Item {
    Item::Client(a)
}

fn own(a: Await) -> Item {
    Item::Own(a)
}

/// What the client received and what the relay heard.
#[derive(Debug, PartialEq, Eq)]
struct Transcript {
    /// Tags of the messages the client gets, in order.
    client: String,
    events: Vec<Event>,
}

/// Tags of encoded stand-ins.
fn tags(encoded: &[u8]) -> String {
    assert_eq!(encoded.len() % 5, 0, "stand-ins have empty bodies");
    encoded
        .chunks(5)
        .map(|m| {
            assert_eq!(&m[1..], [0, 0, 0, 4]);
            m[0] as char
        })
        .collect()
}

/// Queues `owed`, then steps each server message (ReadyForQuery with
/// status `I`).
fn drive(replies: &mut Replies, owed: &[Item], server: &str) -> Transcript {
    for item in owed {
        replies.push(*item);
    }
    let mut out = BytesMut::new();
    let mut client = String::new();
    let mut events = Vec::new();
    for t in server.bytes() {
        replies.standins(&mut out);
        client.push_str(&tags(&out.split()));
        let (action, event) = replies.step(t, b'I');
        if action == Action::Forward {
            client.push(t as char);
        }
        if event != Event::Nothing {
            events.push(event);
        }
    }
    replies.standins(&mut out);
    client.push_str(&tags(&out.split()));
    Transcript { client, events }
}

fn ready() -> Event {
    Event::ClientReady(b'I')
}

/// A name, what is owed, the server's message tags, the tags the client
/// gets, the events, and whether nothing is owed after.
type Case = (
    &'static str,
    Vec<Item>,
    &'static str,
    &'static str,
    Vec<Event>,
    bool,
);

#[test]
fn replies_reach_the_client_in_order_with_their_events() {
    use Await::{Bind, Close, Describe, Execute, Ready};
    let cases: Vec<Case> = vec![
        (
            "plain requests pass untouched",
            vec![Item::Pass(2)],
            "TDCZTDCZ",
            "TDCZTDCZ",
            vec![ready(), ready()],
            true,
        ),
        (
            "an error in a plain request",
            vec![Item::Pass(1)],
            "EZ",
            "EZ",
            vec![Event::ClientError, ready()],
            true,
        ),
        (
            "COPY FROM STDIN in a plain request",
            vec![Item::Pass(1)],
            "G",
            "G",
            vec![Event::CopyIn],
            false,
        ),
        (
            "pgsplit's own query is dropped",
            vec![own(Ready), Item::Pass(1)],
            "CZTDCZ",
            "TDCZ",
            vec![Event::OwnReady { failed: false }, ready()],
            true,
        ),
        (
            "pgsplit's own query fails, silently",
            vec![own(Ready), Item::Pass(1)],
            "EZCZ",
            "CZ",
            vec![Event::OwnReady { failed: true }, ready()],
            true,
        ),
        (
            "a failure of pgsplit's own query is its own",
            vec![own(Ready), own(Ready), Item::Pass(1)],
            "EZCZCZ",
            "CZ",
            vec![
                Event::OwnReady { failed: true },
                Event::OwnReady { failed: false },
                ready(),
            ],
            true,
        ),
        (
            "an extended batch, followed message by message",
            vec![
                parse(1),
                client(Bind),
                client(Describe),
                client(Execute),
                client(Ready),
            ],
            "12TDDCZ",
            "12TDDCZ",
            vec![ready()],
            true,
        ),
        (
            "a stand-in ParseComplete first",
            vec![
                Item::Standin(Standin::ParseComplete),
                client(Bind),
                client(Execute),
                client(Ready),
            ],
            "2CZ",
            "12CZ",
            vec![ready()],
            true,
        ),
        (
            "a stand-in waits for the reply before it",
            vec![
                parse(1),
                Item::Standin(Standin::ParseComplete),
                client(Bind),
                client(Execute),
                client(Ready),
            ],
            "12CZ",
            "112CZ",
            vec![ready()],
            true,
        ),
        (
            "a stand-in CloseComplete",
            vec![Item::Standin(Standin::CloseComplete), client(Ready)],
            "Z",
            "3Z",
            vec![ready()],
            true,
        ),
        (
            "pgsplit's own Parse before the client's Bind",
            vec![own_parse(1), client(Bind), client(Execute), client(Ready)],
            "12CZ",
            "2CZ",
            vec![ready()],
            true,
        ),
        (
            "pgsplit's own Close of an evicted statement",
            vec![own(Close), parse(2), client(Ready)],
            "31Z",
            "1Z",
            vec![ready()],
            true,
        ),
        (
            "an error skips the batch up to its Sync, stand-ins too",
            vec![
                parse(1),
                Item::Standin(Standin::ParseComplete),
                client(Bind),
                client(Execute),
                client(Ready),
            ],
            "EZ",
            "EZ",
            vec![Event::ClientError, ready()],
            true,
        ),
        (
            "an error in pgsplit's own Parse reaches the client",
            vec![own_parse(1), client(Bind), client(Execute), client(Ready)],
            "EZ",
            "EZ",
            vec![Event::OwnError, ready()],
            true,
        ),
        (
            "an error in a simple query inside a followed batch",
            vec![client(Ready)],
            "CEZ",
            "CEZ",
            vec![Event::ClientError, ready()],
            true,
        ),
        (
            "after an error's Sync, stand-ins go again",
            vec![
                parse(1),
                client(Ready),
                Item::Standin(Standin::ParseComplete),
                client(Bind),
                client(Ready),
            ],
            "EZ2Z",
            "EZ12Z",
            vec![Event::ClientError, ready(), ready()],
            true,
        ),
        (
            "an error skips only its own batch",
            vec![
                parse(1),
                client(Bind),
                client(Ready),
                parse(2),
                client(Ready),
            ],
            "EZ1Z",
            "EZ1Z",
            vec![Event::ClientError, ready(), ready()],
            true,
        ),
        (
            "a Describe ends at RowDescription, not ParameterDescription",
            vec![
                client(Describe),
                Item::Standin(Standin::CloseComplete),
                client(Ready),
            ],
            "tTZ",
            "tT3Z",
            vec![ready()],
            true,
        ),
        (
            "a Describe ends at NoData",
            vec![
                client(Describe),
                Item::Standin(Standin::CloseComplete),
                client(Ready),
            ],
            "nZ",
            "n3Z",
            vec![ready()],
            true,
        ),
        (
            "an Execute ends at CommandComplete, EmptyQueryResponse or PortalSuspended",
            vec![
                client(Execute),
                Item::Standin(Standin::CloseComplete),
                client(Execute),
                Item::Standin(Standin::CloseComplete),
                client(Execute),
                Item::Standin(Standin::CloseComplete),
                client(Ready),
            ],
            "DDCIDsZ",
            "DDC3I3Ds3Z",
            vec![ready()],
            true,
        ),
        (
            "notices and notifications complete nothing",
            vec![
                Item::Client(Await::Parse { statement: None }),
                Item::Standin(Standin::CloseComplete),
                client(Ready),
            ],
            "NA1Z",
            "NA13Z",
            vec![ready()],
            true,
        ),
        (
            "a notification under pgsplit's own query reaches the client",
            vec![own(Ready), Item::Pass(1)],
            "ACZZ",
            "AZ",
            vec![Event::OwnReady { failed: false }, ready()],
            true,
        ),
        (
            "a notice for pgsplit's own query is dropped",
            vec![own(Ready)],
            "NCZ",
            "",
            vec![Event::OwnReady { failed: false }],
            true,
        ),
        (
            "COPY FROM STDIN in a followed batch",
            vec![
                Item::Client(Await::Parse { statement: None }),
                client(Bind),
                client(Execute),
                client(Ready),
            ],
            "12G",
            "12G",
            vec![Event::CopyIn],
            false,
        ),
        (
            "nothing owed: an idle server's notice or goodbye passes",
            vec![],
            "NE",
            "NE",
            vec![],
            true,
        ),
        (
            "a batch ending in a Flush: its stand-ins go after the last reply",
            vec![parse(1), Item::Standin(Standin::CloseComplete)],
            "1",
            "13",
            vec![],
            true,
        ),
        (
            "stand-ins alone go before any reply",
            vec![
                Item::Standin(Standin::ParseComplete),
                Item::Standin(Standin::CloseComplete),
            ],
            "",
            "13",
            vec![],
            true,
        ),
    ];
    let n = cases.len();
    let mut failures = Vec::new();
    for (name, owed, server, client, events, done) in cases {
        let mut replies = Replies::default();
        let got = drive(&mut replies, &owed, server);
        let want = Transcript {
            client: client.into(),
            events,
        };
        if got != want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
        if replies.is_empty() != done {
            failures.push(format!("{name}: want nothing owed = {done}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn ready_for_query_carries_its_status() {
    for owed in [Item::Pass(1), client(Await::Ready)] {
        let mut replies = Replies::default();
        replies.push(owed);
        assert_eq!(
            replies.step(tag::READY_FOR_QUERY, b'T'),
            (Action::Forward, Event::ClientReady(b'T')),
            "{owed:?}"
        );
    }
}

#[test]
fn plain_requests_are_counted_together() {
    let mut replies = Replies::default();
    replies.pass(0);
    assert!(replies.is_empty(), "no request, nothing owed");
    replies.pass(1);
    replies.push(Item::Pass(2));
    assert_eq!(replies.items, [Item::Pass(3)]);
    replies.push(own(Await::Ready));
    replies.push(client(Await::Ready));
    replies.pass(1);
    assert_eq!(
        replies.client_requests(),
        5,
        "pgsplit's own are not counted"
    );
    replies.clear();
    assert!(replies.is_empty());
    assert_eq!(replies.client_requests(), 0);
}

#[test]
fn only_a_plain_head_lets_messages_stream_unread() {
    let mut replies = Replies::default();
    assert!(!replies.tracking());
    replies.pass(1);
    assert!(!replies.tracking());
    let watched: Vec<u8> = b"ZEGTDCdN12"
        .iter()
        .copied()
        .filter(|t| replies.watches(*t))
        .collect();
    assert_eq!(watched, b"ZEG", "a plain head watches only these");
    assert_eq!(replies.streamed(), Action::Forward);
    let mut replies = Replies::default();
    replies.push(own(Await::Ready));
    assert!(replies.tracking());
    let watched: Vec<u8> = b"ZEGTDCdN12"
        .iter()
        .copied()
        .filter(|t| replies.watches(*t))
        .collect();
    assert_eq!(watched, b"ZEGTCN12", "rows and COPY data stream");
    assert_eq!(replies.streamed(), Action::Drop, "rows of pgsplit's own");
    let mut replies = Replies::default();
    replies.push(client(Await::Execute));
    assert!(replies.tracking());
    assert_eq!(replies.streamed(), Action::Forward);
}

#[test]
fn statements_whose_parse_failed_or_was_skipped_are_unprepared() {
    let mut replies = Replies::default();
    drive(
        &mut replies,
        &[
            own_parse(1),
            parse(2),
            Item::Client(Await::Parse { statement: None }),
            client(Await::Bind),
            parse(3),
            client(Await::Ready),
            parse(4),
            client(Await::Ready),
        ],
        "1E",
    );
    assert_eq!(replies.take_unprepared(), [2, 3], "1 was prepared");
    assert!(replies.take_unprepared().is_empty(), "taken once");
    assert_eq!(replies.take_parsed(), [1], "the server parsed 1");
    drive(&mut replies, &[], "Z1Z");
    assert!(replies.take_unprepared().is_empty(), "4 was prepared");
    assert_eq!(replies.take_parsed(), [4], "and then 4");
    assert!(replies.take_parsed().is_empty(), "taken once");
    assert!(replies.is_empty());
}

#[test]
fn an_error_in_a_simple_query_skips_nothing() {
    let mut replies = Replies::default();
    let t = drive(
        &mut replies,
        &[
            client(Await::Ready),
            parse(1),
            Item::Standin(Standin::CloseComplete),
            client(Await::Ready),
        ],
        "EZ1Z",
    );
    assert_eq!(t.client, "EZ13Z");
    assert!(replies.take_unprepared().is_empty());
}

#[test]
fn clear_forgets_what_was_owed_and_the_skip() {
    let mut replies = Replies::default();
    drive(&mut replies, &[parse(1), client(Await::Ready)], "E");
    replies.clear();
    assert!(replies.is_empty());
    assert!(replies.take_unprepared().is_empty());
    let t = drive(
        &mut replies,
        &[Item::Standin(Standin::CloseComplete), client(Await::Ready)],
        "Z",
    );
    assert_eq!(t.client, "3Z", "a new connection skips nothing");
}

#[test]
fn copy_in_for_pgsplit_s_own_message_is_not_the_client_s() {
    let mut replies = Replies::default();
    replies.push(own(Await::Execute));
    assert_eq!(
        replies.step(tag::COPY_IN_RESPONSE, 0),
        (Action::Drop, Event::Nothing)
    );
}

#[test]
fn stand_ins_are_encoded_as_empty_messages() {
    let mut replies = Replies::default();
    replies.push(Item::Standin(Standin::ParseComplete));
    replies.push(Item::Standin(Standin::CloseComplete));
    let mut out = BytesMut::new();
    replies.standins(&mut out);
    assert_eq!(&out[..], [PARSE_COMPLETE, 0, 0, 0, 4, b'3', 0, 0, 0, 4]);
    assert!(replies.is_empty());
    let mut again = BytesMut::new();
    replies.standins(&mut again);
    assert!(again.is_empty(), "given once");
}

#[test]
fn a_parameter_description_is_passed_without_completing() {
    let mut replies = Replies::default();
    replies.push(client(Await::Describe));
    assert_eq!(
        replies.step(PARAMETER_DESCRIPTION, 0),
        (Action::Forward, Event::Nothing)
    );
    assert!(replies.tracking(), "the Describe still waits");
}

/// A batch that ends in a Flush leaves its items without a Sync; the
/// client's next batch may be plain (a lone Sync, an unnamed Parse/Bind).
/// When the server reports an error for the first batch, the skip pops
/// the plain item too, so the ReadyForQuery that answers its Sync finds
/// nothing owed: the relay never hears `ClientReady` and keeps the request
/// in flight.
#[test]
fn an_error_before_a_plain_request_still_reports_its_ready_for_query() {
    let mut replies = Replies::default();
    replies.push(parse(7));
    replies.pass(1);
    let t = drive(&mut replies, &[], "EZ");
    assert_eq!(t.events, [Event::ClientError, ready()]);
    assert!(replies.is_empty());
}

/// Same start: an error for a batch that ended in a Flush, then the client
/// sends its Sync, which goes as a plain request. Its ReadyForQuery passes
/// under a plain head, which never ends the skip, so every later stand-in
/// is dropped: the client waits for a ParseComplete or CloseComplete that
/// never comes.
#[test]
fn stand_ins_go_again_after_an_error_answered_by_a_plain_sync() {
    let mut replies = Replies::default();
    let t = drive(&mut replies, &[parse(7), client(Await::Describe)], "E");
    assert_eq!(t.events, [Event::ClientError]);
    replies.pass(1);
    let t = drive(&mut replies, &[], "Z");
    assert_eq!(t.events, [ready()]);
    let t = drive(
        &mut replies,
        &[
            Item::Standin(Standin::ParseComplete),
            client(Await::Bind),
            client(Await::Ready),
        ],
        "2Z",
    );
    assert_eq!(t.client, "12Z");
}
