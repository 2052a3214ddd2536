#!/usr/bin/env python3
"""psycopg 3 through pgsplit: the driver used as-is, only the port changes.

Reads PGSPLIT_RW_PORT and PGSPLIT_RO_PORT (host 127.0.0.1, user/password app,
database app). Prints one line per check; on the first failure prints what
went wrong and exits 1. Exits 2 if psycopg is not installed.

Set DRIVER_CHECKS_KEEP_GOING=1 to run every check and report all failures
(handy when investigating); set DRIVER_CHECKS_ONLY=name,name to run a subset.
"""

import contextlib
import os
import sys
import threading
import time
import traceback

try:
    import psycopg
    from psycopg import errors, sql
except ImportError as exc:  # pragma: no cover - depends on the machine
    print(
        f"psycopg is not installed ({exc}); install it with "
        "`pip install -r tests/drivers/requirements.txt` "
        "(or run tests/drivers/install.sh)",
        file=sys.stderr,
    )
    sys.exit(2)

HOST = "127.0.0.1"
CHECK_TIMEOUT = float(os.environ.get("DRIVER_CHECK_TIMEOUT", "60"))
P = "drv_py_"  # prefix of every object this script creates


class CheckFailed(Exception):
    pass


def expect(cond, message):
    if not cond:
        raise CheckFailed(message)


def port(var):
    value = os.environ.get(var)
    if not value:
        print(f"{var} is not set", file=sys.stderr)
        sys.exit(2)
    return int(value)


RW = port("PGSPLIT_RW_PORT")
RO = port("PGSPLIT_RO_PORT")


def conninfo(p, **extra):
    base = f"host={HOST} port={p} user=app password=app dbname=app connect_timeout=10"
    return " ".join([base] + [f"{k}={v}" for k, v in extra.items()])


def connect(p, autocommit=True, **kwargs):
    return psycopg.connect(conninfo(p), autocommit=autocommit, **kwargs)


def sqlstate_of(fn):
    """Runs fn, which must raise a psycopg error; returns (sqlstate, error)."""
    try:
        fn()
    except psycopg.Error as e:
        return e.sqlstate, e
    raise CheckFailed("the statement succeeded but an error was expected")


def eventually(what, cond, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return
        except psycopg.Error:
            pass
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


# --------------------------------------------------------------------------
# checks


def check_connect_and_simple_query():
    with connect(RW) as conn:
        expect(conn.info.backend_pid != 0, "no BackendKeyData pid")
        expect(
            conn.info.parameter_status("server_version"),
            "no server_version ParameterStatus",
        )
        cur = conn.execute("SELECT 1 AS one, 'two' AS two")
        expect(cur.fetchall() == [(1, "two")], "SELECT 1 returned wrong rows")
        # No parameters: psycopg uses the simple query protocol, which can carry
        # several statements in one Query message. On the read-write port a
        # question about the server itself is the primary's: the message goes
        # there, and says it is not in recovery.
        cur = conn.execute("SELECT 1; SELECT 2, 3; SELECT pg_is_in_recovery()")
        sets = [cur.fetchall()]
        while cur.nextset():
            sets.append(cur.fetchall())
        expect(
            sets == [[(1,)], [(2, 3)], [(False,)]],
            f"multi-statement Query returned {sets}",
        )
        conn.execute("SET application_name = 'drv_py_check'")
        expect(
            conn.info.parameter_status("application_name") == "drv_py_check",
            "ParameterStatus for application_name not relayed",
        )


def check_schema():
    with connect(RW) as conn:
        conn.execute(
            f"DROP TABLE IF EXISTS {P}items, {P}copy, {P}tx, {P}uniq"
        )
        conn.execute(f"CREATE TABLE {P}items (id int PRIMARY KEY, name text, n bigint)")
        conn.execute(f"CREATE TABLE {P}copy (id int, name text, score float8, tag bytea)")
        conn.execute(f"CREATE TABLE {P}tx (id int)")
        conn.execute(f"CREATE TABLE {P}uniq (id int PRIMARY KEY)")


def check_parameterized_queries():
    with connect(RW) as conn:
        cur = conn.cursor()
        for i in range(1, 6):
            cur.execute(
                f"INSERT INTO {P}items (id, name, n) VALUES (%s, %s, %s)",
                (i, f"name {i}", i * 1000000000000),
            )
        cur.execute(f"SELECT name, n FROM {P}items WHERE id = %s", (3,))
        expect(
            cur.fetchone() == ("name 3", 3000000000000), "parameterized SELECT wrong"
        )
        # binary parameters and results
        bcur = conn.cursor(binary=True)
        bcur.execute(
            "SELECT %b::int8 + 1, %b::text || '!', %b::bytea", (41, "hi", b"\x00\xff")
        )
        expect(
            bcur.fetchone() == (42, "hi!", b"\x00\xff"),
            "binary-format round trip wrong",
        )
        # A parameter larger than pgsplit's read buffer.
        big = "x" * (3 * 1024 * 1024)
        cur.execute("SELECT length(%s::text)", (big,))
        expect(cur.fetchone() == (len(big),), "3 MiB parameter mangled")
        # executemany (psycopg pipelines it under the hood)
        cur.executemany(
            f"INSERT INTO {P}items (id, name, n) VALUES (%s, %s, %s)",
            [(i, f"name {i}", i) for i in range(6, 56)],
        )
        cur.execute(f"SELECT count(*), sum(id) FROM {P}items")
        expect(cur.fetchone() == (55, sum(range(1, 56))), "executemany lost rows")


def prepared_names(conn):
    rows = conn.execute(
        "SELECT name, statement FROM pg_prepared_statements ORDER BY name"
    ).fetchall()
    return rows


def check_prepare_true():
    with connect(RW) as conn:
        q = f"SELECT name FROM {P}items WHERE id = %s"
        for i in (1, 2, 3, 4):
            row = conn.execute(q, (i,), prepare=True).fetchone()
            expect(row == (f"name {i}",), f"prepared run {i} returned {row}")
        stmts = prepared_names(conn)
        expect(
            any(f"{P}items WHERE id = $1" in s for _, s in stmts),
            f"statement not prepared on the server; pg_prepared_statements={stmts}",
        )


def check_prepare_threshold_zero():
    with connect(RW, prepare_threshold=0) as conn:
        for i in range(1, 8):
            row = conn.execute(
                f"SELECT id, n FROM {P}items WHERE id = %s AND n >= %s", (i, 0)
            ).fetchone()
            expect(row is not None and row[0] == i, f"run {i} returned {row}")
        stmts = prepared_names(conn)
        expect(
            any("AND n >= $2" in s for _, s in stmts),
            f"prepare_threshold=0 did not prepare; pg_prepared_statements={stmts}",
        )
        # a prepared statement in a transaction, then deallocation
        with conn.transaction():
            conn.execute(f"UPDATE {P}items SET n = n + %s WHERE id = %s", (1, 1))
        conn.execute("DEALLOCATE ALL")
        row = conn.execute(f"SELECT n FROM {P}items WHERE id = %s", (1,)).fetchone()
        expect(row == (1000000000001,), f"after DEALLOCATE ALL got {row}")


def check_pipeline():
    with connect(RW) as conn:
        with conn.pipeline() as p:
            c1 = conn.execute("SELECT 1")
            c2 = conn.execute(f"INSERT INTO {P}items VALUES (%s, %s, %s) RETURNING id", (100, "p", 1))
            c3 = conn.execute(f"SELECT count(*) FROM {P}items WHERE id >= %s", (100,))
            c4 = conn.execute("SELECT %s::text", ("pipelined",))
            p.sync()
            c5 = conn.execute("SELECT generate_series(1, 1000)")
        expect(c1.fetchone() == (1,), "pipeline result 1")
        expect(c2.fetchone() == (100,), "pipeline result 2 (INSERT RETURNING)")
        expect(c3.fetchone() == (1,), "pipeline result 3 did not see the insert")
        expect(c4.fetchone() == ("pipelined",), "pipeline result 4")
        expect(len(c5.fetchall()) == 1000, "pipeline result 5 rows")
        # An error inside a pipeline aborts the rest of it; the connection
        # stays usable afterwards.
        caught = None
        try:
            with conn.pipeline():
                conn.execute("SELECT 1")
                conn.execute(f"INSERT INTO {P}items VALUES (%s, 'dup', 0)", (100,))
                conn.execute("SELECT 2")
        except errors.UniqueViolation as e:
            caught = e
        expect(caught is not None, "error in pipeline was not raised")
        expect(caught.sqlstate == "23505", f"pipeline error sqlstate {caught.sqlstate}")
        expect(conn.execute("SELECT 'after'").fetchone() == ("after",), "unusable after pipeline error")
        # many statements in flight before anything is read
        with conn.pipeline():
            curs = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(200)]
        got = [c.fetchone()[0] for c in curs]
        expect(got == [i * 2 for i in range(200)], "200-statement pipeline results wrong")


def check_copy():
    rows = [(i, f"name {i}\twith tab", i / 4, bytes([i % 256, 0, 255])) for i in range(20000)]
    with connect(RW) as conn:
        cur = conn.cursor()
        with cur.copy(f"COPY {P}copy (id, name, score, tag) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        expect(cur.rowcount == len(rows), f"COPY FROM reported {cur.rowcount} rows")
        cur.execute(f"SELECT count(*), sum(id), sum(length(name)) FROM {P}copy")
        expect(
            cur.fetchone()
            == (len(rows), sum(r[0] for r in rows), sum(len(r[1]) for r in rows)),
            "COPY FROM STDIN stored wrong data",
        )
        # raw text block
        with cur.copy(f"COPY {P}copy (id, name) FROM STDIN") as copy:
            copy.write(b"-1\traw one\n-2\traw two\n")
        cur.execute(f"SELECT name FROM {P}copy WHERE id < 0 ORDER BY id DESC")
        expect(cur.fetchall() == [("raw one",), ("raw two",)], "raw COPY block wrong")
        # COPY TO STDOUT, rows parsed by the driver
        with cur.copy(
            f"COPY (SELECT id, name, score, tag FROM {P}copy WHERE id >= 0 ORDER BY id) TO STDOUT"
        ) as copy:
            copy.set_types(["int4", "text", "float8", "bytea"])
            out = list(copy.rows())
        expect(len(out) == len(rows), f"COPY TO returned {len(out)} rows")
        expect(out[0] == rows[0] and out[-1] == rows[-1] and out == rows, "COPY TO data differs")
        # binary COPY both ways
        with cur.copy(f"COPY (SELECT id, tag FROM {P}copy WHERE id BETWEEN 0 AND 9 ORDER BY id) TO STDOUT (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "bytea"])
            bin_rows = list(copy.rows())
        expect(bin_rows == [(r[0], r[3]) for r in rows[:10]], "binary COPY TO wrong")
        with cur.copy(f"COPY {P}copy (id, tag) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "bytea"])
            for r in bin_rows:
                copy.write_row((r[0] + 100000, r[1]))
        cur.execute(f"SELECT count(*) FROM {P}copy WHERE id >= 100000")
        expect(cur.fetchone() == (10,), "binary COPY FROM wrong")
        # a COPY the client aborts: psycopg sends CopyFail, the server's
        # 57014 answer is absorbed and the client's own exception re-raised
        class GiveUp(Exception):
            pass

        try:
            with cur.copy(f"COPY {P}copy (id) FROM STDIN") as copy:
                copy.write_row((1,))
                raise GiveUp()
        except GiveUp:
            pass
        expect(conn.execute("SELECT 1").fetchone() == (1,), "unusable after CopyFail")
        # bad data: the server's error arrives while the client is still sending
        def bad_copy():
            with cur.copy(f"COPY {P}copy (id) FROM STDIN") as copy:
                copy.write(b"1\nnot a number\n")
                for _ in range(200):
                    copy.write(b"2\n" * 1000)
        state, err = sqlstate_of(bad_copy)
        expect(state == "22P02", f"bad COPY data gave {state}: {err}")
        expect(conn.execute("SELECT 1").fetchone() == (1,), "unusable after failed COPY")
        cur.execute(f"SELECT count(*) FROM {P}copy")
        expect(cur.fetchone() == (len(rows) + 2 + 10,), "aborted COPY left rows behind")


def wait_until_running(p, server_port, marker, timeout=15.0):
    """Waits until a statement containing `marker` is active on the server
    listening on `server_port`, watching it through pgsplit's port `p` (on the
    read-only port, connections are opened until one lands on that server).
    A cancel sent before the server has read the query would be lost, which
    would make the check flaky rather than wrong."""
    deadline = time.monotonic() + timeout
    for _ in range(30):
        watcher = connect(p)
        if watcher.execute("/* pgsplit:primary */ SELECT inet_server_port()").fetchone()[0] == server_port:
            break
        watcher.close()
    else:
        raise CheckFailed(f"no connection through port {p} reached server port {server_port}")
    with watcher:
        while time.monotonic() < deadline:
            row = watcher.execute(
                "/* pgsplit:primary */ SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE %s AND pid <> pg_backend_pid()",
                (f"%{marker}%",),
            ).fetchone()
            if row[0] > 0:
                return
            time.sleep(0.05)
    raise CheckFailed(f"statement {marker} never showed up as running")


def cancel_sleep(conn, p, method="cancel_safe"):
    """Runs pg_sleep(30) on conn (through pgsplit port p), cancels it from
    another thread with `method` once it runs; returns (error, seconds from
    the cancel to the error)."""
    # On the read-write port each read borrows a replica connection from the
    # pool, so two reads may land on different replicas: the hint keeps both
    # on the primary (on the read-only port it changes nothing).
    server_port = conn.execute("/* pgsplit:primary */ SELECT inet_server_port()").fetchone()[0]
    marker = f"drv_py_cancel_{os.getpid()}_{time.monotonic_ns()}"
    result = {}

    def canceller():
        try:
            wait_until_running(p, server_port, marker)
            result["sent"] = time.monotonic()
            if method == "cancel_safe":
                conn.cancel_safe(timeout=10)
            else:
                conn.cancel()
        except Exception as e:  # reported below
            result["error"] = f"{type(e).__name__}: {e}"

    t = threading.Thread(target=canceller, daemon=True)
    t.start()
    err = None
    try:
        conn.execute(f"/* pgsplit:primary */ SELECT pg_sleep(30) /* {marker} */")
    except psycopg.Error as e:
        err = e
    done = time.monotonic()
    t.join(20)
    expect("error" not in result, f"{method}() failed: {result.get('error')}")
    expect(err is not None, "pg_sleep(30) ran to its end: the cancel had no effect")
    expect(err.sqlstate == "57014", f"cancel gave sqlstate {err.sqlstate}: {err}")
    expect(isinstance(err, errors.QueryCanceled), f"wrong class {type(err)}")
    return err, done - result["sent"]


def run_cancel(method):
    with connect(RW) as conn:
        _, took = cancel_sleep(conn, RW, method)
        expect(took < 5, f"the query ended {took:.1f}s after the cancel")
        expect(conn.execute("SELECT 'still here'").fetchone() == ("still here",), "unusable after cancel")
        return f"cancelled {took:.2f}s after the request"


def check_cancel():
    return run_cancel("cancel")


def check_cancel_safe():
    return run_cancel("cancel_safe")


def check_cancel_in_transaction():
    # Cancel inside an explicit transaction on the read-only port: the block
    # goes to failed state and ROLLBACK recovers it.
    with connect(RO, autocommit=False) as conn:
        _, took = cancel_sleep(conn, RO)
        expect(took < 5, f"the query ended {took:.1f}s after the cancel")
        expect(
            conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR,
            f"transaction status {conn.info.transaction_status!r}",
        )
        conn.rollback()
        expect(conn.execute("SELECT 1").fetchone() == (1,), "unusable after rollback")


def check_listen_notify():
    with connect(RW) as listener, connect(RW) as sender:
        listener.execute(f"LISTEN {P}chan")
        sender.execute(f"NOTIFY {P}chan, 'hello from psycopg'")
        sender.execute("SELECT pg_notify(%s, %s)", (f"{P}chan", "second payload"))
        got = [
            (n.channel, n.payload)
            for n in listener.notifies(timeout=10, stop_after=2)
        ]
        expect(
            got == [(f"{P}chan", "hello from psycopg"), (f"{P}chan", "second payload")],
            f"notifications received: {got}",
        )
        # A notification sent while the listener is idle arrives without the
        # listener sending anything first.
        sender.execute(f"NOTIFY {P}chan, 'while idle'")
        got = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
        expect(got == ["while idle"], f"idle notification: {got}")
        listener.execute(f"UNLISTEN {P}chan")


def check_transaction_rollback():
    with connect(RW, autocommit=False) as conn:
        conn.execute(f"INSERT INTO {P}tx VALUES (1)")
        conn.commit()
        conn.execute(f"INSERT INTO {P}tx VALUES (2)")
        expect(
            conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS,
            "not in a transaction",
        )
        conn.rollback()
        with conn.transaction():
            conn.execute(f"INSERT INTO {P}tx VALUES (3)")
            with conn.transaction():  # SAVEPOINT
                conn.execute(f"INSERT INTO {P}tx VALUES (4)")
                raise psycopg.Rollback()  # ROLLBACK TO SAVEPOINT
        conn.commit()
        # Read in this session: read-your-writes holds within a session;
        # another session may read a replica that has not replayed it yet.
        ids = [r[0] for r in conn.execute(f"SELECT id FROM {P}tx ORDER BY id")]
        conn.rollback()
        expect(ids == [1, 3], f"after commit/rollback/savepoint table holds {ids}")


def check_errors():
    with connect(RW) as conn:
        conn.execute(f"INSERT INTO {P}uniq VALUES (1)")
        state, err = sqlstate_of(lambda: conn.execute(f"INSERT INTO {P}uniq VALUES (%s)", (1,)))
        expect(state == "23505", f"duplicate key gave {state}")
        expect(isinstance(err, errors.UniqueViolation), f"wrong class {type(err)}")
        expect(err.diag.constraint_name == f"{P}uniq_pkey", f"constraint {err.diag.constraint_name}")
        expect(conn.execute("SELECT 1").fetchone() == (1,), "unusable after 23505")
        state, _ = sqlstate_of(lambda: conn.execute("SELECT 1/0"))
        expect(state == "22012", f"division by zero gave {state}")
        state, _ = sqlstate_of(lambda: conn.execute("SELEC 1"))
        expect(state == "42601", f"syntax error gave {state}")
        state, _ = sqlstate_of(lambda: conn.execute(f"SELECT * FROM {P}missing WHERE x = %s", (1,)))
        expect(state == "42P01", f"missing table gave {state}")
        # error inside a transaction: 25P02 until rollback
    with connect(RW, autocommit=False) as conn:
        state, _ = sqlstate_of(lambda: conn.execute(f"INSERT INTO {P}uniq VALUES (1)"))
        expect(state == "23505", f"duplicate key in tx gave {state}")
        state, _ = sqlstate_of(lambda: conn.execute("SELECT 1"))
        expect(state == "25P02", f"statement in failed tx gave {state}")
        conn.rollback()
        expect(conn.execute("SELECT 2").fetchone() == (2,), "unusable after rollback")
        conn.rollback()
        # a notice passes through
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'drv_py notice'; END $$")
        expect(notices == ["drv_py notice"], f"notices: {notices}")
        conn.rollback()


def check_large_result():
    with connect(RW) as conn:
        cur = conn.execute("SELECT g, repeat('y', 100) FROM generate_series(1, 200000) g")
        n = 0
        total = 0
        for g, s in cur:
            n += 1
            total += g
            if len(s) != 100:
                raise CheckFailed("row payload mangled")
        expect(n == 200000 and total == 200000 * 200001 // 2, f"got {n} rows")
        # one row bigger than pgsplit's buffers
        row = conn.execute("SELECT repeat('z', 5 * 1024 * 1024)").fetchone()
        expect(len(row[0]) == 5 * 1024 * 1024, "5 MiB value mangled")
        # server-side cursor (named portal, fetched in batches)
    with connect(RW, autocommit=False) as conn:
        with conn.cursor(name="drv_py_portal") as cur:
            cur.itersize = 333
            cur.execute("SELECT g FROM generate_series(1, 5000) g")
            expect(sum(r[0] for r in cur) == 5000 * 5001 // 2, "server-side cursor rows")
        conn.commit()


def check_read_only_port():
    with connect(RO) as conn:
        expect(
            conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,),
            "read-only port did not reach a replica",
        )
        # Wait for the table (created through the read-write port) to reach
        # the replica, so the INSERT below fails for being read-only and not
        # for a missing table.
        eventually(
            f"{P}items on the replica",
            lambda: conn.execute(f"SELECT count(*) FROM {P}items WHERE id = %s", (1,)).fetchone() == (1,),
        )
        state, err = sqlstate_of(lambda: conn.execute(f"INSERT INTO {P}items VALUES (%s, 'ro', 0)", (9999,)))
        expect(state == "25006", f"INSERT on read-only port gave {state}: {err}")
        expect(isinstance(err, errors.ReadOnlySqlTransaction), f"wrong class {type(err)}")
        state, _ = sqlstate_of(lambda: conn.execute(f"CREATE TABLE {P}nope (x int)"))
        expect(state == "25006", f"CREATE TABLE on read-only port gave {state}")
        # prepared statements and a pipeline work there too
        for i in (1, 2, 3):
            row = conn.execute(f"SELECT name FROM {P}items WHERE id = %s", (i,), prepare=True).fetchone()
            expect(row == (f"name {i}",), f"prepared read on replica returned {row}")
        with conn.pipeline():
            c1 = conn.execute("SELECT pg_is_in_recovery()")
            c2 = conn.execute(f"SELECT count(*) FROM {P}items WHERE id <= %s", (5,))
        expect(c1.fetchone() == (True,) and c2.fetchone() == (5,), "pipeline on replica")
        with conn.cursor() as cur:
            with cur.copy(f"COPY (SELECT id FROM {P}items WHERE id <= 3 ORDER BY id) TO STDOUT") as copy:
                data = b"".join(bytes(b) for b in copy)
        expect(data == b"1\n2\n3\n", f"COPY TO on replica: {data!r}")
        state, _ = sqlstate_of(lambda: conn.execute(f"INSERT INTO {P}uniq VALUES (%s)", (1,)))
        expect(state == "25006", f"second read-only error gave {state}")
        expect(conn.execute("SELECT 1").fetchone() == (1,), "unusable after 25006")


def count_deallocations(conn):
    """Records the names of the prepared statements psycopg deallocates on
    conn (protocol Close or SQL DEALLOCATE, whichever it uses)."""
    expect(hasattr(conn, "_deallocate"), "psycopg has no Connection._deallocate any more: update this check")
    deallocate = conn._deallocate
    names = []

    def counting(name):
        names.append(name)
        return deallocate(name)

    conn._deallocate = counting
    return names


def cache_overflow(p, table):
    """prepare_threshold=0 (every statement prepared on its first run) and a
    cache of 5 (prepared_max): 12 distinct statements cycled in autocommit and
    in transactions overflow the cache again and again; psycopg deallocates
    each statement it evicts and prepares it again on its next use.

    On the read-write port the session creates {P}table itself, then reads
    and writes it; every read must see its own writes. On the read-only port
    it only reads (once the table reached the replica), and checks the rows'
    ids: another replica may lag behind on the values."""
    writes = p == RW
    with connect(p, prepare_threshold=0) as conn:
        conn.prepared_max = 5
        evicted = count_deallocations(conn)
        rows = lambda: dict(conn.execute(f"SELECT id, n FROM {P}{table} ORDER BY id").fetchall())
        if writes:
            conn.execute(f"DROP TABLE IF EXISTS {P}{table}")
            conn.execute(f"CREATE TABLE {P}{table} (id int PRIMARY KEY, n bigint)")
            conn.execute(f"INSERT INTO {P}{table} SELECT g, g FROM generate_series(1, 10) g")
        else:
            eventually(f"{P}{table} on the replica", lambda: len(rows()) == 10)
        expected = rows()
        expect(len(expected) == 10, f"{P}{table} holds {expected}")
        runs = 0
        for rnd in range(6):
            in_tx = rnd % 2 == 1
            with conn.transaction() if in_tx else contextlib.nullcontext():
                for k in range(12):
                    id = 1 + (k + rnd) % 10
                    if writes and k % 3 == 2:
                        cur = conn.execute(
                            f"UPDATE {P}{table} SET n = n + %s WHERE id = %s AND {k} = {k}", (k, id)
                        )
                        expect(cur.rowcount == 1, f"write {k} in round {rnd} touched {cur.rowcount} rows")
                        expected[id] += k
                    else:
                        row = conn.execute(f"SELECT id, n, {k} FROM {P}{table} WHERE id = %s", (id,)).fetchone()
                        want = (id, expected[id], k)
                        expect(
                            row is not None and (row == want if writes else (row[0], row[2]) == (id, k)),
                            f"read {k} in round {rnd} of row {id}: {row}, expected {want}",
                        )
                    runs += 1
        expect(len(evicted) >= 30, f"only {len(evicted)} statements evicted: the cache did not overflow")
        return f"{runs} runs, {len(evicted)} evictions"


def run_cache_overflow(table):
    try:
        where = "read-write port"
        rw = cache_overflow(RW, table)
        where = "read-only port"
        ro = cache_overflow(RO, table)
    except psycopg.Error as e:
        raise CheckFailed(f"on the {where}: {type(e).__name__}: {e} (SQLSTATE {e.sqlstate})") from e
    return f"read-write port: {rw}; read-only port: {ro}"


def check_cache_overflow_close():
    if not psycopg.capabilities.has_send_close_prepared():
        return f"skipped (libpq {psycopg.pq.version()} < 17 has no protocol-level Close)"
    return run_cache_overflow("evict_close")


def check_cache_overflow_deallocate():
    # psycopg deallocates with SQL `DEALLOCATE name` when its libpq is older
    # than 17 (no PQsendClosePrepared). The binary wheel bundles a newer
    # libpq, so the check makes psycopg take that path, as it does with
    # PSYCOPG_IMPL=python over a system libpq 15.
    from psycopg import _connection_base

    expect(
        hasattr(_connection_base, "_HAS_SEND_CLOSE"),
        "psycopg no longer has _connection_base._HAS_SEND_CLOSE: update this check",
    )
    had = _connection_base._HAS_SEND_CLOSE
    _connection_base._HAS_SEND_CLOSE = False
    try:
        return run_cache_overflow("evict_sql")
    finally:
        _connection_base._HAS_SEND_CLOSE = had


def check_two_phase_commit():
    """tpc_begin / tpc_prepare on one connection; a new connection lists the
    prepared transaction with tpc_recover() and commits it (or rolls it back)
    with tpc_commit(xid) / tpc_rollback(xid). The recovering connection is in
    autocommit or not (then psycopg wraps the query in a transaction): a
    transaction manager may use either. Needs max_prepared_transactions > 0
    on every node (a replica's pg_prepared_xacts is empty)."""
    with connect(RW) as conn:
        mpt = int(conn.execute("SHOW max_prepared_transactions").fetchone()[0])
        expect(mpt > 0, "max_prepared_transactions is 0: the cluster cannot prepare transactions")
        conn.execute(f"DROP TABLE IF EXISTS {P}tpc")
        conn.execute(f"CREATE TABLE {P}tpc (id int)")
    tag = f"{P}{os.getpid()}_{time.monotonic_ns()}"
    made = []
    try:
        for id, outcome, autocommit in ((1, "commit", False), (2, "rollback", True), (3, "commit", True)):
            # Not `with`: leaving the block would commit(), which psycopg
            # refuses for a two-phase transaction. The prepared transaction
            # outlives the connection.
            conn = connect(RW, autocommit=False)
            try:
                xid = conn.xid(42, f"{tag}_{id}", "branch")
                made.append(str(xid))
                conn.tpc_begin(xid)
                conn.execute(f"INSERT INTO {P}tpc VALUES (%s)", (id,))
                conn.tpc_prepare()
            finally:
                conn.close()
            with connect(RW) as other:
                seen = other.execute(f"SELECT count(*) FROM {P}tpc WHERE id = %s", (id,)).fetchone()[0]
                expect(seen == 0, f"row {id} is visible while its transaction is only prepared")
            with connect(RW, autocommit=autocommit) as conn:
                found = [x for x in conn.tpc_recover() if x.gtrid == f"{tag}_{id}"]
                expect(
                    len(found) == 1 and found[0].format_id == 42 and found[0].bqual == "branch",
                    f"tpc_recover() on a new connection (autocommit={autocommit}) did not list "
                    f"the prepared transaction: {found}",
                )
                if outcome == "commit":
                    conn.tpc_commit(found[0])
                else:
                    conn.tpc_rollback(found[0])
                # Asked on the session that committed: it must see its own commit.
                seen = conn.execute(f"SELECT count(*) FROM {P}tpc WHERE id = %s", (id,)).fetchone()[0]
                want = 1 if outcome == "commit" else 0
                expect(seen == want, f"after tpc_{outcome} row {id} is seen {seen} times, expected {want}")
        with connect(RW, autocommit=False) as conn:
            left = [x for x in conn.tpc_recover() if x.gtrid.startswith(tag)]
            expect(not left, f"prepared transactions left after commit/rollback: {left}")
    finally:
        # A prepared transaction outlives its session and holds its locks:
        # never leave one behind for the later checks.
        with connect(RW) as conn:
            for (gid,) in conn.execute(
                "/* pgsplit:primary */ SELECT gid FROM pg_prepared_xacts WHERE gid = ANY(%s)", (made,)
            ).fetchall():
                conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))


def check_protocol_negotiation():
    # libpq 18 can ask for protocol 3.2; pgsplit must negotiate it down.
    if psycopg.pq.version() < 180000:
        return "skipped (libpq < 18)"
    with psycopg.connect(conninfo(RW, max_protocol_version="latest"), autocommit=True) as conn:
        expect(conn.execute("SELECT 1").fetchone() == (1,), "query after negotiation")
        cancel_sleep(conn, RW)


def check_startup_parameters():
    extra = "application_name=drv_py_app options='-c statement_timeout=4321'"
    with psycopg.connect(conninfo(RW) + " " + extra, autocommit=True) as conn:
        got = conn.execute(
            "SELECT current_setting('statement_timeout'), current_setting('application_name'), current_user, current_database()"
        ).fetchone()
        expect(got == ("4321ms", "drv_py_app", "app", "app"), f"startup parameters: {got}")


def check_server_ends_idle_session():
    """The server ends an idle session (idle_session_timeout). Without pgsplit
    the client gets the FATAL (57P05) and reconnects, and the driver forgets
    what it had prepared. A proxy may instead attach a new server connection,
    but then the session's state (SET values, prepared statements, LISTEN)
    must still be there: losing it silently breaks the driver."""
    q = f"SELECT name FROM {P}items WHERE id = %s"
    with connect(RW) as watcher:
        conn = connect(RW)
        try:
            expect(conn.execute(q, (1,), prepare=True).fetchone() == ("name 1",), "prepared run")
            conn.execute("SET statement_timeout = '4242ms'")
            conn.execute(f"LISTEN {P}idle_chan")
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            conn.execute("SET idle_session_timeout = '300ms'")
            deadline = time.monotonic() + 15
            while watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()[0]:
                expect(time.monotonic() < deadline, "the server never ended the idle session")
                time.sleep(0.05)
            try:
                row = conn.execute(q, (2,), prepare=True).fetchone()
            except psycopg.OperationalError as e:
                # As without pgsplit: the session ended and the client knows it.
                expect(conn.closed, f"error but connection not closed: {e}")
                return f"client told the session ended ({e.sqlstate})"
            except psycopg.Error as e:
                raise CheckFailed(
                    "pgsplit replaced the server connection without telling the client and the "
                    f"session's prepared statement was lost: {type(e).__name__}: {e} (SQLSTATE {e.sqlstate})"
                )
            expect(row == ("name 2",), f"prepared run after the server left returned {row}")
            lost = []
            setting = conn.execute("SHOW statement_timeout").fetchone()[0]
            if setting != "4242ms":
                lost.append(f"SET statement_timeout (now {setting})")
            watcher.execute(f"NOTIFY {P}idle_chan, 'after'")
            if not list(conn.notifies(timeout=3, stop_after=1)):
                lost.append("LISTEN")
            expect(
                not lost,
                "pgsplit replaced the server connection without telling the client; "
                f"session state lost: {', '.join(lost)}",
            )
            return "session state survived"
        finally:
            conn.close()


def check_large_pipelined_statements():
    # Several big statements in flight at once: the server answers the first
    # while the client is still sending the next ones. A relay that stops
    # reading the server while its write to the server is blocked deadlocks
    # here (the server does not read while it is blocked writing).
    size = 8 * 1000 * 1000
    big = "x" * size
    with connect(RW) as conn:
        start = time.monotonic()
        with conn.pipeline():
            curs = [conn.execute("SELECT %s::text", (big,)) for _ in range(4)]
        lengths = [len(c.fetchone()[0]) for c in curs]
        expect(lengths == [size] * 4, f"lengths {lengths}")
        return f"4 x 8 MB echoed in {time.monotonic() - start:.2f}s"


def check_many_connections():
    conns = [connect(RW if i % 2 == 0 else RO) for i in range(10)]
    try:
        for i, c in enumerate(conns):
            expect(c.execute("SELECT %s::int", (i,)).fetchone() == (i,), f"connection {i}")
    finally:
        for c in conns:
            c.close()


CHECKS = [
    ("connect and simple query", check_connect_and_simple_query),
    ("create tables", check_schema),
    ("parameterized queries", check_parameterized_queries),
    ("prepared statements (prepare=True)", check_prepare_true),
    ("prepared statements (prepare_threshold=0)", check_prepare_threshold_zero),
    ("pipeline mode", check_pipeline),
    ("COPY FROM STDIN / TO STDOUT", check_copy),
    ("cancel (conn.cancel)", check_cancel),
    ("cancel (conn.cancel_safe)", check_cancel_safe),
    ("cancel in a transaction on the read-only port", check_cancel_in_transaction),
    ("LISTEN/NOTIFY", check_listen_notify),
    ("transaction rollback and savepoint", check_transaction_rollback),
    ("errors keep their SQLSTATE", check_errors),
    ("large results", check_large_result),
    ("read-only port", check_read_only_port),
    ("prepared-statement cache overflow (protocol Close)", check_cache_overflow_close),
    ("prepared-statement cache overflow (SQL DEALLOCATE, as with libpq < 17)", check_cache_overflow_deallocate),
    ("two-phase commit with recovery (tpc_recover)", check_two_phase_commit),
    ("startup parameters", check_startup_parameters),
    ("server ends an idle session", check_server_ends_idle_session),
    ("many connections", check_many_connections),
    ("protocol version negotiation (max_protocol_version=latest)", check_protocol_negotiation),
    # Last: a hang ends the run.
    ("large pipelined statements (4 x 8 MB each way)", check_large_pipelined_statements, 30),
]


def main():
    keep_going = os.environ.get("DRIVER_CHECKS_KEEP_GOING") == "1"
    only = [s.strip() for s in os.environ.get("DRIVER_CHECKS_ONLY", "").split(",") if s.strip()]
    print(f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()}, {psycopg.pq.__impl__}); rw={RW} ro={RO}")
    failed = []
    for name, fn, *limit in CHECKS:
        limit = limit[0] if limit else CHECK_TIMEOUT
        if only and not any(o in name for o in only):
            continue
        # A check that hangs is a failure too: report it and stop.
        def on_timeout(name=name, limit=limit):
            print(f"FAIL {name}: no answer within {limit:.0f}s (hung)", flush=True)
            os._exit(1)

        watchdog = threading.Timer(limit, on_timeout)
        watchdog.daemon = True
        watchdog.start()
        start = time.monotonic()
        try:
            note = fn()
        except Exception as e:
            watchdog.cancel()
            detail = f"{type(e).__name__}: {e}"
            if isinstance(e, psycopg.Error) and e.sqlstate:
                detail += f" (SQLSTATE {e.sqlstate})"
            print(f"FAIL {name}: {detail}", flush=True)
            if not isinstance(e, CheckFailed):
                traceback.print_exc()
            failed.append(name)
            if not keep_going:
                sys.exit(1)
            continue
        watchdog.cancel()
        suffix = f" - {note}" if note else ""
        print(f"ok   {name} ({time.monotonic() - start:.2f}s){suffix}", flush=True)
    if failed:
        print(f"{len(failed)} check(s) failed: {', '.join(failed)}")
        sys.exit(1)
    print("all psycopg checks passed")


if __name__ == "__main__":
    main()
