//! Startup negotiation as newer clients do it: GSSENCRequest and SSLRequest
//! before the StartupMessage, and protocol 3.2 requests.

mod common;
use common::*;
use pgsplit::config::AuthMethod;
use tokio::io::AsyncReadExt;

fn startup(minor: u16, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut params = vec![("user", "app"), ("database", "app")];
    params.extend_from_slice(extra);
    startup_packet(minor, &params)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_then_ssl_then_startup_and_protocol_negotiation() {
    let env = Env::start(
        Setup::default()
            .replicas(0)
            .tweak(|c| c.auth.method = AuthMethod::Trust),
    )
    .await;
    let mut c = RawClient::connect(env.rw).await;
    // GSSENCRequest: answered 'N' (no GSSAPI encryption).
    c.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]).await;
    assert_eq!(c.stream.read_u8().await.unwrap(), b'N');
    // SSLRequest without [tls]: 'N'.
    c.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await;
    assert_eq!(c.stream.read_u8().await.unwrap(), b'N');
    // A 3.2 StartupMessage with a protocol option: NegotiateProtocolVersion
    // for 3.0 naming the option, then a normal login.
    c.send(&startup(
        2,
        &[("_pq_.test_option", "1"), ("application_name", "raw")],
    ))
    .await;
    let (tag, body) = c.recv().await.unwrap();
    assert_eq!(tag, b'v');
    // The newest version as PostgreSQL writes it: 3.0 as 0x00030000.
    assert_eq!(&body[..8], &[0, 3, 0, 0, 0, 0, 0, 1]);
    assert_eq!(&body[8..], b"_pq_.test_option\0");
    let mut saw_key = false;
    loop {
        let (tag, body) = c.recv().await.unwrap();
        match tag {
            b'K' => saw_key = true,
            b'S' => assert!(!body.starts_with(b"_pq_")),
            b'Z' => break,
            b'E' => panic!("login failed: {:?}", error_fields(&body)),
            _ => {}
        }
    }
    assert!(saw_key, "pgsplit sends its own BackendKeyData");
    // A second SSLRequest after startup has no business here.
    let mut c = RawClient::connect(env.rw).await;
    c.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await;
    assert_eq!(c.stream.read_u8().await.unwrap(), b'N');
    c.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await;
    assert_eq!(c.expect_fatal().await.0, "08P01");
    // Replication connections are refused plainly.
    let mut c = RawClient::connect(env.rw).await;
    c.send(&startup(0, &[("replication", "true")])).await;
    assert_eq!(c.expect_fatal().await.0, "0A000");
    // No user at all.
    let mut c = RawClient::connect(env.rw).await;
    c.send(&[0, 0, 0, 9, 0, 3, 0, 0, 0]).await;
    assert_eq!(c.expect_fatal().await.0, "28000");
}
