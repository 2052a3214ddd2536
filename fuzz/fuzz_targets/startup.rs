//! Startup and SSL/GSS/cancel negotiation, then SCRAM: a client's first
//! bytes as the session reads them. Each packet's length is checked by
//! `startup::body_len` before its body is taken, `Negotiation::next` says
//! what the session does with it (run twice: with and without a
//! certificate to offer), and on a StartupMessage what the session reads
//! from the parameters is read the same way (user, database, protocol
//! options, `pgsplit.min_lsn`, the pool key). The bytes after the
//! StartupMessage are the client's SASL messages for SCRAM-SHA-256.
//!
//! The TLS handshake itself and the socket reads are I/O (rustls and
//! tokio): the session drives them between these pure steps, so they are
//! not fuzzed here.

#![no_main]

use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgsplit::auth::scram::{self, ScramKeys, ScramServer};
use pgsplit::pool::Login;
use pgsplit::protocol::frame::split_frame;
use pgsplit::protocol::startup::{self, Negotiation, StartupParams, Step, PROTOCOL_3_0};
use pgsplit::protocol::{encode, message, tag};

/// pgsplit's limit on an authentication message from a client.
const MAX_AUTH_MESSAGE: usize = 8192;

fn keys() -> &'static ScramKeys {
    static KEYS: OnceLock<ScramKeys> = OnceLock::new();
    KEYS.get_or_init(|| ScramKeys::derive(b"app"))
}

/// What the session reads from a StartupMessage before it logs in.
fn read_params(params: StartupParams) {
    let Some(user) = params.user().map(str::to_owned) else {
        return;
    };
    let database = params.database().unwrap_or(&user).to_owned();
    let options: Vec<&str> = params.protocol_options().collect();
    let mut out = BytesMut::new();
    if params.minor > 0 || !options.is_empty() {
        encode::negotiate_protocol_version(&mut out, PROTOCOL_3_0, options.into_iter());
    }
    if let Some(v) = params.get("pgsplit.min_lsn") {
        let _ = v.parse::<pgsplit::topology::lsn::Lsn>();
    }
    let mut server_params = vec![("user".to_owned(), user), ("database".to_owned(), database)];
    server_params.extend(params.params.into_iter().filter(|(k, _)| {
        !matches!(k.as_str(), "user" | "database" | "replication")
            && !k.starts_with("_pq_.")
            && !k.starts_with("pgsplit.")
    }));
    let login = Login::new(server_params, false);
    let _ = login.read_only();
    let mut startup = BytesMut::new();
    encode::startup_message(
        &mut startup,
        login.params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
}

/// Channel binding data as a TLS connection would give it.
const END_POINT: &[u8] = &[0x5a; 32];

/// The SASL exchange on the bytes after the StartupMessage; `tls` says
/// whether the client is on TLS (channel binding offered).
fn scram(mut rest: &[u8], tls: bool) {
    let mut next = || -> Option<&[u8]> {
        let frame = split_frame(rest, MAX_AUTH_MESSAGE).ok()??;
        rest = &rest[frame.wire_len()..];
        (frame.tag == tag::PASSWORD).then_some(frame.body)
    };
    let Some(initial) = next() else { return };
    let Ok((mechanism, client_first)) = message::sasl_initial_response(initial) else {
        return;
    };
    let binding = tls.then_some(END_POINT);
    let _ = scram::mechanisms(binding);
    let Ok((exchange, _server_first)) =
        ScramServer::start(keys(), mechanism, client_first, binding)
    else {
        return;
    };
    if let Some(client_final) = next() {
        let _ = exchange.finish(client_final, "app");
    }
}

/// Negotiates over `data` as the session would; the bytes after the
/// StartupMessage, if one came.
fn negotiate(mut data: &[u8], tls: bool) -> Option<(StartupParams, &[u8])> {
    let mut negotiation = Negotiation::default();
    let mut encrypted = false;
    loop {
        let prefix: [u8; 4] = data.get(..4)?.try_into().ok()?;
        let len = startup::body_len(prefix).ok()?;
        assert!(len <= startup::MAX_STARTUP_LEN);
        let body = data.get(4..4 + len)?;
        data = &data[4 + len..];
        match negotiation.next(body, tls, encrypted).ok()? {
            Step::Ssl { accept } => {
                assert!(accept == tls);
                encrypted |= accept;
            }
            Step::RefuseGss => {}
            Step::Cancel(key) => {
                let _ = encode::cancel_request(key);
                return None;
            }
            Step::Startup(params) => return Some((params, data)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for tls in [false, true] {
        if let Some((params, rest)) = negotiate(data, tls) {
            read_params(params);
            scram(rest, tls);
        }
    }
});
