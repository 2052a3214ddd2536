//! Per-session routing through both ports, checked by where statements ran.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_port_reaches_the_primary_and_read_only_port_a_replica() {
    let env = Env::start(Setup::default()).await;
    let rw = env.connect(env.rw).await;
    let row = rw
        .query_one("SELECT inet_server_port(), pg_is_in_recovery()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), i32::from(env.primary_port()));
    assert!(!row.get::<_, bool>(1));

    let ro = env.connect(env.ro).await;
    let row = ro
        .query_one("SELECT inet_server_port(), pg_is_in_recovery()", &[])
        .await
        .unwrap();
    let port = row.get::<_, i32>(0) as u16;
    assert!(
        env.replica_ports().contains(&port),
        "read-only port answered from {port}"
    );
    assert!(row.get::<_, bool>(1));

    let err = ro
        .batch_execute("CREATE TABLE nope(x int)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "25006", "{err}");
}
