use super::*;
use crate::classify::Classifier;

fn msg(t: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![t];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', format!("{sql}\0").as_bytes())
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    msg(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
}

fn bind(portal: &str, statement: &str) -> Vec<u8> {
    msg(
        b'B',
        format!("{portal}\0{statement}\0\0\0\0\0\0\0").as_bytes(),
    )
}

fn frame(buf: &[u8], high_water: usize) -> Result<Option<Batch>, ProtocolError> {
    let c = Classifier::new(&[], &[], 0);
    let mut b = Batch::default();
    let done = b.frame(buf, 1 << 20, high_water, |sql| {
        Arc::new(c.classify_uncached(std::str::from_utf8(sql).unwrap()))
    })?;
    Ok(done.then_some(b))
}

#[test]
fn a_query_is_one_request() {
    let mut buf = query("SELECT 1");
    buf.extend(query("INSERT INTO t VALUES (1)"));
    let b = frame(&buf, 1 << 20).unwrap().unwrap();
    assert_eq!((b.end, b.requests, b.msgs.len()), (End::Query, 1, 1));
    assert_eq!(b.len, query("SELECT 1").len());
    assert!(b.single_query().is_some());
}

#[test]
fn an_extended_batch_ends_at_its_sync_and_names_its_statements() {
    let mut buf = parse("s1", "SELECT $1");
    buf.extend(bind("", "s1"));
    buf.extend(msg(b'D', b"Ss1\0"));
    buf.extend(msg(b'E', b"\0\0\0\0\0"));
    buf.extend(msg(b'C', b"Sold\0"));
    let partial = frame(&buf, 1 << 20).unwrap();
    assert!(partial.is_none(), "no Sync yet: wait");
    buf.extend(msg(b'S', b""));
    let b = frame(&buf, 1 << 20).unwrap().unwrap();
    assert_eq!(
        (b.end, b.requests, b.msgs.len(), b.len),
        (End::Sync, 1, 6, buf.len())
    );
    let names: Vec<&[u8]> = b
        .msgs
        .iter()
        .filter_map(|m| match &m.kind {
            Kind::Parse { name, .. }
            | Kind::Bind { statement: name }
            | Kind::DescribeStatement { name }
            | Kind::CloseStatement { name } => Some(m.slice(&buf, name)),
            _ => None,
        })
        .collect();
    assert_eq!(names, [&b"s1"[..], b"s1", b"s1", b"old"]);
    let Kind::Parse { body, verdict, .. } = &b.msgs[0].kind else {
        panic!("a Parse")
    };
    assert_eq!(b.msgs[0].slice(&buf, body), b"SELECT $1\0\0\0");
    assert_eq!(verdict.access, crate::classify::Access::Read);
}

#[test]
fn a_flush_ends_a_batch_that_stays_open() {
    let mut buf = parse("", "SELECT 1");
    buf.extend(msg(b'H', b""));
    let b = frame(&buf, 1 << 20).unwrap().unwrap();
    assert_eq!((b.end, b.requests), (End::Flush, 0));
}

#[test]
fn copy_data_is_its_own_batch() {
    let mut buf = msg(b'd', b"1\n");
    buf.extend(msg(b'd', b"2\n"));
    buf.extend(msg(b'c', b""));
    buf.extend(msg(b'S', b""));
    let b = frame(&buf, 1 << 20).unwrap().unwrap();
    assert_eq!((b.end, b.msgs.len(), b.requests), (End::Copy, 3, 0));
    let rest = frame(&buf[b.len..], 1 << 20).unwrap().unwrap();
    assert_eq!((rest.end, rest.requests), (End::Sync, 1));
}

#[test]
fn a_large_open_batch_goes_at_the_high_water_mark() {
    let mut buf = parse("", &"x".repeat(100));
    buf.extend(bind("", ""));
    assert!(frame(&buf, 1 << 20).unwrap().is_none());
    let b = frame(&buf, 64).unwrap().unwrap();
    assert_eq!((b.end, b.msgs.len(), b.len), (End::Open, 2, buf.len()));
}

#[test]
fn what_a_client_may_not_send_is_refused() {
    assert!(matches!(
        frame(&msg(b'p', b"secret\0"), 1 << 20),
        Err(ProtocolError::Unexpected { .. })
    ));
    assert!(matches!(
        frame(&msg(b'Z', b"I"), 1 << 20),
        Err(ProtocolError::UnknownTag { tag: b'Z' })
    ));
    assert!(matches!(
        frame(&msg(b'P', b"no nul"), 1 << 20),
        Err(ProtocolError::Malformed { .. })
    ));
    assert!(matches!(
        frame(&msg(b'D', b"X\0"), 1 << 20),
        Err(ProtocolError::Malformed { .. })
    ));
}

#[test]
fn terminate_ends_the_session() {
    let b = frame(&msg(b'X', b""), 1 << 20).unwrap().unwrap();
    assert!(b.is_terminate());
    let b = frame(&msg(b'F', &[0, 0, 3, 232, 0, 0, 0, 0, 0, 0]), 1 << 20)
        .unwrap()
        .unwrap();
    assert!(matches!(b.msgs[0].kind, Kind::FunctionCall { oid: 1000 }));
    assert_eq!((b.end, b.requests), (End::FunctionCall, 1));
}
