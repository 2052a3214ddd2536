#!/usr/bin/env python3
"""asyncpg through pgsplit: the driver used as-is, only the port changes.

asyncpg prepares every statement that has parameters under a name of its own
(__asyncpg_stmt_N__) and keeps it in its statement cache (100 entries by
default, kept so here), closing statements it evicts; it also prepares the
type introspection query it runs for a type it does not know. A pooling proxy
must keep all of these working across transactions and server connections.

Reads PGSPLIT_RW_PORT and PGSPLIT_RO_PORT (host 127.0.0.1, user/password app,
database app). Prints one line per check; on the first failure prints what
went wrong and exits 1. Exits 2 if asyncpg is not installed.

Set DRIVER_CHECKS_KEEP_GOING=1 to run every check and report all failures
(handy when investigating); set DRIVER_CHECKS_ONLY=name,name to run a subset.
"""

import asyncio
import io
import os
import sys
import time
import traceback

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - depends on the machine
    print(
        f"asyncpg is not installed ({exc}); install it with "
        "`pip install -r tests/drivers/requirements.txt` "
        "(or run tests/drivers/install.sh)",
        file=sys.stderr,
    )
    sys.exit(2)

HOST = "127.0.0.1"
CHECK_TIMEOUT = float(os.environ.get("DRIVER_CHECK_TIMEOUT", "60"))
P = "drv_apg_"  # prefix of every object this script creates


class CheckFailed(Exception):
    pass


class Rollback(Exception):
    """Raised inside `async with conn.transaction()` to roll it back."""


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


async def connect(p, **kwargs):
    # The statement cache keeps its default size (100): it is what is tested.
    return await asyncpg.connect(
        host=HOST, port=p, user="app", password="app", database="app", timeout=10, **kwargs
    )


class connected:
    """async with connected(port) as conn: ... (closed on the way out)."""

    def __init__(self, p, **kwargs):
        self.p, self.kwargs = p, kwargs

    async def __aenter__(self):
        self.conn = await connect(self.p, **self.kwargs)
        return self.conn

    async def __aexit__(self, *exc):
        await self.conn.close(timeout=5)


async def failure(coro):
    """Awaits coro, which must raise a PostgreSQL error; returns it."""
    try:
        await coro
    except asyncpg.PostgresError as e:
        return e
    raise CheckFailed("the statement succeeded but an error was expected")


async def within(seconds, what, aw):
    """Awaits aw; a CheckFailed naming `what` if it takes longer than `seconds`."""
    try:
        return await asyncio.wait_for(aw, seconds)
    except asyncio.TimeoutError:
        raise CheckFailed(f"no {what} within {seconds}s") from None


async def eventually(what, cond, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await cond():
                return
        except asyncpg.PostgresError:
            pass
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------
# checks


async def check_schema():
    async with connected(RW) as conn:
        await conn.execute(
            f"DROP TABLE IF EXISTS {P}items, {P}copy, {P}uniq; DROP TYPE IF EXISTS {P}mood"
        )
        await conn.execute(f"CREATE TYPE {P}mood AS ENUM ('sad', 'ok', 'happy')")
        await conn.execute(
            f"CREATE TABLE {P}items (id int PRIMARY KEY, name text, n bigint, mood {P}mood)"
        )
        await conn.execute(f"CREATE TABLE {P}copy (id int, name text, score float8, tag bytea)")
        await conn.execute(f"CREATE TABLE {P}uniq (id int PRIMARY KEY)")
        await conn.executemany(
            f"INSERT INTO {P}items (id, name, n, mood) VALUES ($1, $2, $3, $4)",
            [(i, f"name {i}", i, ("sad", "ok", "happy")[i % 3]) for i in range(1, 51)],
        )
        # An enum is unknown to asyncpg: it prepares and runs its type
        # introspection query before it can decode the result.
        row = await conn.fetchrow(f"SELECT count(*), sum(n) FROM {P}items WHERE mood = $1", "happy")
        happy = [i for i in range(1, 51) if i % 3 == 2]
        expect(row[0] == len(happy) and row[1] == sum(happy), f"enum query: {row}")
        mood = await conn.fetchval(f"SELECT mood FROM {P}items WHERE id = $1", 4)
        expect(mood == "ok", f"enum value decoded as {mood!r}")


async def catch_up(conn):
    """Makes this session's reads see what the earlier checks committed. On
    the read-write port reads go to replicas, which see a session's own
    writes (read-your-writes) but may not yet have another session's; a
    write first (one that changes nothing) puts every earlier commit under
    this session's read floor. Straight against PostgreSQL it is a no-op."""
    await conn.execute(f"UPDATE {P}items SET n = n WHERE id = 0")


async def item_n(conn, id):
    row = await conn.fetchrow(f"SELECT name, n FROM {P}items WHERE id = $1", id)
    expect(row is not None and row["name"] == f"name {id}", f"item {id}: {row}")
    return row["n"]


async def check_prepared_across_transactions():
    """The same parameterized read and write, through asyncpg's statement
    cache, in autocommit and in transactions (some rolled back); every read
    sees the session's own writes. Then an explicit conn.prepare() statement
    reused across transactions."""
    async with connected(RW) as conn:
        await catch_up(conn)
        expected = {i: i for i in range(1, 6)}
        bump = f"UPDATE {P}items SET n = n + $1 WHERE id = $2"
        for rnd in range(16):
            id = 1 + rnd % 5
            explicit = rnd % 2 == 1
            roll_back = rnd % 4 == 3
            tr = conn.transaction() if explicit else None
            if tr:
                await tr.start()
            n = await item_n(conn, id)
            expect(n == expected[id], f"round {rnd}: item {id} has n={n}, expected {expected[id]}")
            status = await conn.execute(bump, 10, id)
            expect(status == "UPDATE 1", f"round {rnd}: {status}")
            n = await item_n(conn, id)
            expect(n == expected[id] + 10, f"round {rnd}: read after own write saw n={n}")
            if tr and roll_back:
                await tr.rollback()
            else:
                expected[id] += 10
                if tr:
                    await tr.commit()
        for id, want in expected.items():
            expect(await item_n(conn, id) == want, f"item {id} after the rounds")
        # An explicitly prepared statement outlives transactions.
        stmt = await conn.prepare(f"SELECT n FROM {P}items WHERE id = $1")
        expect(stmt.get_name(), "conn.prepare() gave an unnamed statement")
        for rnd in range(6):
            async with conn.transaction():
                await conn.execute(bump, 1, 1)
                expected[1] += 1
                got = await stmt.fetchval(1)
                expect(got == expected[1], f"prepared statement in transaction {rnd}: {got}")
            got = await stmt.fetchval(1)
            expect(got == expected[1], f"prepared statement after transaction {rnd}: {got}")
        # A transaction rolled back by an exception inside it.
        try:
            async with conn.transaction():
                await conn.execute(bump, 1000, 2)
                raise Rollback()
        except Rollback:
            pass
        expect(await stmt.fetchval(2) == expected[2], "rolled-back update is visible")


async def check_transaction_error():
    async with connected(RW) as conn:
        insert = f"INSERT INTO {P}uniq VALUES ($1)"
        has = f"SELECT count(*) FROM {P}uniq WHERE id = $1"
        for i in range(1, 4):
            await conn.execute(insert, i)
        # An error inside `async with conn.transaction()` rolls it back.
        err = None
        try:
            async with conn.transaction():
                await conn.execute(insert, 200)
                await conn.execute(insert, 1)
        except asyncpg.UniqueViolationError as e:
            err = e
        expect(err is not None and err.sqlstate == "23505", f"duplicate key gave {err!r}")
        expect(await conn.fetchval(has, 200) == 0, "the rolled-back row 200 is visible")
        # By hand: 25P02 until the rollback.
        tr = conn.transaction()
        await tr.start()
        await conn.execute(insert, 201)
        e = await failure(conn.execute(insert, 2))
        expect(e.sqlstate == "23505", f"duplicate key in transaction gave {e.sqlstate}")
        e = await failure(conn.fetchval(has, 201))
        expect(e.sqlstate == "25P02", f"statement in a failed transaction gave {e.sqlstate}")
        await tr.rollback()
        expect(await conn.fetchval(has, 201) == 0, "the rolled-back row 201 is visible")
        # A nested transaction is a savepoint: its error does not end the outer one.
        async with conn.transaction():
            await conn.execute(insert, 300)
            try:
                async with conn.transaction():
                    await conn.execute(insert, 3)
            except asyncpg.UniqueViolationError:
                pass
            await conn.execute(insert, 301)
        got = await conn.fetch(f"SELECT id FROM {P}uniq WHERE id >= $1 ORDER BY id", 200)
        expect([r["id"] for r in got] == [300, 301], f"after the savepoint: {got}")


async def check_cache_overflow():
    """More distinct statements than asyncpg's default cache holds (100):
    evicted statements are closed and prepared again on their next use."""
    distinct = 130
    async with connected(RW) as conn:
        await catch_up(conn)
        rows = await conn.fetch(f"SELECT id, n FROM {P}items WHERE id BETWEEN 11 AND 20")
        expected = {r["id"]: r["n"] for r in rows}
        runs = 0
        for rnd in range(2):
            for k in range(distinct):
                id = 11 + (k + rnd) % 10
                in_tx = k % 5 == 4
                tr = conn.transaction() if in_tx else None
                if tr:
                    await tr.start()
                if k % 4 == 3:
                    status = await conn.execute(
                        f"UPDATE {P}items SET n = n + $1 WHERE id = $2 AND {k} = {k}", k, id
                    )
                    expect(status == "UPDATE 1", f"write {k}: {status}")
                    expected[id] += k
                else:
                    row = await conn.fetchrow(f"SELECT n, {k} AS k FROM {P}items WHERE id = $1", id)
                    expect(
                        row is not None and row["n"] == expected[id] and row["k"] == k,
                        f"read {k} in round {rnd} of item {id}: {row}, expected n={expected[id]}",
                    )
                if tr:
                    await tr.commit()
                runs += 1
        return f"{runs} executions of {distinct} statements"


async def check_pool():
    """A pool of four connections serving 200 concurrent tasks: reads and
    writes, in and out of transactions, all through cached statements."""
    pool = await asyncpg.create_pool(
        host=HOST, port=RW, user="app", password="app", database="app", min_size=4, max_size=4, timeout=10
    )
    try:
        # The sums are read on the primary (hint): the connection that reads
        # them need not be one that wrote.
        total = f"/* pgsplit:primary */ SELECT sum(n) FROM {P}items WHERE id BETWEEN 31 AND 38"
        before = await pool.fetchval(total)

        async def task(i):
            id = 31 + i % 8
            async with pool.acquire() as conn:
                if i % 3 == 0:
                    async with conn.transaction():
                        await conn.execute(f"UPDATE {P}items SET n = n + 1 WHERE id = $1", id)
                        name = await conn.fetchval(f"SELECT name FROM {P}items WHERE id = $1", id)
                else:
                    await conn.execute(f"UPDATE {P}items SET n = n + 1 WHERE id = $1", id)
                    name = await conn.fetchval(f"SELECT name FROM {P}items WHERE id = $1", id)
                expect(name == f"name {id}", f"task {i} read {name!r}")
                count = await conn.fetchval(f"SELECT count(*) FROM {P}items WHERE id <= $1", i % 50 + 1)
                expect(count == i % 50 + 1, f"task {i} counted {count}")

        await asyncio.gather(*(task(i) for i in range(200)))
        after = await pool.fetchval(total)
        expect(after == before + 200, f"200 increments moved the sum from {before} to {after}")
    finally:
        await pool.close()
    return "200 tasks on 4 connections"


async def check_copy():
    records = [(i, f"name {i}\twith tab", i / 4, bytes([i % 256, 0, 255])) for i in range(20000)]
    async with connected(RW) as conn:
        status = await conn.copy_records_to_table(
            f"{P}copy", records=records, columns=["id", "name", "score", "tag"]
        )
        expect(status == f"COPY {len(records)}", f"copy_records_to_table: {status}")
        # Text COPY in from a file-like source, inside a transaction rolled back.
        try:
            async with conn.transaction():
                status = await conn.copy_to_table(
                    f"{P}copy", source=io.BytesIO(b"-1\traw one\n-2\traw two\n"), columns=["id", "name"]
                )
                expect(status == "COPY 2", f"copy_to_table: {status}")
                raise Rollback()
        except Rollback:
            pass
        await conn.copy_to_table(
            f"{P}copy", source=io.BytesIO(b"-3\traw three\n"), columns=["id", "name"]
        )
        out = io.BytesIO()
        status = await conn.copy_from_query(
            f"SELECT id, name, score FROM {P}copy WHERE id < $1 ORDER BY id", 100, output=out
        )
        expect(status == "COPY 101", f"copy_from_query: {status}")
        want = "-3\traw three\t\\N\n" + "".join(
            f"{i}\tname {i}\\twith tab\t{i / 4:g}\n" for i in range(100)
        )
        expect(out.getvalue().decode() == want, "copy_from_query data differs")
        out = io.BytesIO()
        status = await conn.copy_from_table(f"{P}copy", columns=["id", "tag"], output=out, format="csv")
        expect(status == f"COPY {len(records) + 1}", f"copy_from_table: {status}")
        # Bad data: the server's error arrives while the client is still sending.
        bad = io.BytesIO(b"1\nnot a number\n" + b"2\n" * 200000)
        e = await failure(conn.copy_to_table(f"{P}copy", source=bad, columns=["id"]))
        expect(e.sqlstate == "22P02", f"bad COPY data gave {e.sqlstate}: {e}")
        count = await conn.fetchval(f"SELECT count(*) FROM {P}copy")
        expect(count == len(records) + 1, f"a rolled-back or failed COPY left rows behind: {count}")


async def wait_until_running(marker, timeout=15.0):
    """Waits until a statement containing `marker` is active on the primary."""
    async with connected(RW) as watcher:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # The watched query carries the same hint: on the read-write port a
            # plain read may run on a replica.
            n = await watcher.fetchval(
                "/* pgsplit:primary */ SELECT count(*) FROM pg_stat_activity "
                "WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
                f"%{marker}%",
            )
            if n > 0:
                return
            await asyncio.sleep(0.05)
    raise CheckFailed(f"statement {marker} never showed up as running")


async def check_cancel_on_timeout():
    """A query past its client-side timeout: asyncpg sends a CancelRequest and
    the connection stays usable. A cancel that went nowhere would leave the
    next query waiting for the 30 s sleep."""
    async with connected(RW) as conn:
        marker = f"drv_apg_cancel_{os.getpid()}_{time.monotonic_ns()}"
        sleep = conn.fetchval(f"/* pgsplit:primary */ SELECT pg_sleep(30) /* {marker} */", timeout=2)
        running = asyncio.ensure_future(wait_until_running(marker))
        started = time.monotonic()
        timed_out = False
        try:
            await sleep
        except asyncio.TimeoutError:
            timed_out = True
        expect(timed_out, "pg_sleep(30) returned within its 2 s timeout")
        timeout_at = time.monotonic()
        # The server was running it when the timeout fired: the cancel mattered.
        await running
        got = await conn.fetchval("SELECT $1::text", "still here")
        took = time.monotonic() - timeout_at
        expect(got == "still here", f"after the cancel: {got!r}")
        # Whether asyncpg waits for the cancel before raising or before the
        # next query, a cancel that went nowhere costs the 30 s sleep.
        total = time.monotonic() - started
        expect(total < 7, f"the next query answered {total:.1f}s after the sleep began: the cancel did not stop it")
        # Also within a transaction: the transaction fails, rollback recovers.
        async with connected(RW) as other:
            tr = conn.transaction()
            await tr.start()
            marker2 = marker + "_tx"
            sleep = conn.fetchval(f"/* pgsplit:primary */ SELECT pg_sleep(30) /* {marker2} */", timeout=2)
            running = asyncio.ensure_future(wait_until_running(marker2))
            try:
                await sleep
                raise CheckFailed("pg_sleep(30) in a transaction returned within its timeout")
            except asyncio.TimeoutError:
                pass
            await running
            e = await failure(conn.fetchval("SELECT 1"))
            expect(e.sqlstate == "25P02", f"after a cancel in a transaction: {e.sqlstate} {e}")
            await tr.rollback()
            expect(await conn.fetchval("SELECT 2") == 2, "unusable after rollback")
            active = await other.fetchval(
                "/* pgsplit:primary */ SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 "
                "AND state = 'active' AND pid <> pg_backend_pid()",
                f"%{marker}%",
            )
            expect(active == 0, f"{active} cancelled sleep(s) still running on the server")
        return f"next query answered {took:.2f}s after the timeout"


async def check_listen():
    async with connected(RW) as listener, connected(RW) as sender:
        got = asyncio.Queue()

        def on_notify(conn, pid, channel, payload):
            got.put_nowait((channel, payload))

        await listener.add_listener(f"{P}chan", on_notify)
        await sender.execute(f"NOTIFY {P}chan, 'hello from asyncpg'")
        await sender.execute("SELECT pg_notify($1, $2)", f"{P}chan", "second payload")
        async with sender.transaction():
            await sender.execute(f"NOTIFY {P}chan, 'from a transaction'")
        received = []
        # The listener sends nothing: notifications must arrive while it idles.
        for _ in range(3):
            received.append(await within(10, "notification", got.get()))
        expect(
            received
            == [
                (f"{P}chan", "hello from asyncpg"),
                (f"{P}chan", "second payload"),
                (f"{P}chan", "from a transaction"),
            ],
            f"notifications received: {received}",
        )
        # The listener's other queries still work, and it keeps listening.
        expect(await listener.fetchval("SELECT $1::int + 1", 1) == 2, "listener query")
        await sender.execute(f"NOTIFY {P}chan, 'after a query'")
        got_after = await within(10, "notification after a query", got.get())
        expect(got_after == (f"{P}chan", "after a query"), f"notification after a query: {got_after}")
        await listener.remove_listener(f"{P}chan", on_notify)


async def check_read_only_port():
    async with connected(RO) as conn:
        expect(await conn.fetchval("SELECT pg_is_in_recovery()") is True, "read-only port did not reach a replica")

        async def replicated():
            return await conn.fetchval(f"SELECT count(*) FROM {P}items") == 50

        await eventually(f"{P}items on the replica", replicated)
        for rnd in range(12):
            id = 1 + rnd % 7
            if rnd % 3 == 2:
                async with conn.transaction(readonly=True):
                    name = await conn.fetchval(f"SELECT name FROM {P}items WHERE id = $1", id)
            else:
                name = await conn.fetchval(f"SELECT name FROM {P}items WHERE id = $1", id)
            expect(name == f"name {id}", f"read-only port read of item {id}: {name!r}")
        mood = await conn.fetchval(f"SELECT mood FROM {P}items WHERE id = $1", 5)
        expect(mood == "happy", f"enum on the read-only port: {mood!r}")
        e = await failure(conn.execute(f"INSERT INTO {P}uniq VALUES ($1)", 9999))
        expect(e.sqlstate == "25006", f"INSERT on the read-only port gave {e.sqlstate}: {e}")
        expect(isinstance(e, asyncpg.ReadOnlySQLTransactionError), f"wrong class {type(e)}")
        expect(await conn.fetchval(f"SELECT name FROM {P}items WHERE id = $1", 3) == "name 3", "read after 25006")
        out = io.BytesIO()
        status = await conn.copy_from_query(f"SELECT id FROM {P}items WHERE id <= $1 ORDER BY id", 3, output=out)
        expect(status == "COPY 3" and out.getvalue() == b"1\n2\n3\n", f"COPY out on the read-only port: {status} {out.getvalue()!r}")


CHECKS = [
    ("create tables, executemany, enum introspection", check_schema),
    ("prepared statements across transactions", check_prepared_across_transactions),
    ("transaction error and rollback", check_transaction_error),
    ("statement cache overflow (default cache, 130 statements)", check_cache_overflow),
    ("pool of 4 connections, 200 tasks", check_pool),
    ("COPY (records, to_table, from_query, from_table)", check_copy),
    ("cancel on a client-side timeout", check_cancel_on_timeout),
    ("LISTEN (add_listener) / NOTIFY", check_listen),
    ("read-only port", check_read_only_port),
]


async def main():
    keep_going = os.environ.get("DRIVER_CHECKS_KEEP_GOING") == "1"
    only = [s.strip() for s in os.environ.get("DRIVER_CHECKS_ONLY", "").split(",") if s.strip()]
    print(f"asyncpg {asyncpg.__version__}, Python {sys.version.split()[0]}; rw={RW} ro={RO}", flush=True)
    failed = []
    for name, fn in CHECKS:
        if only and not any(o in name for o in only):
            continue
        start = time.monotonic()
        try:
            note = await asyncio.wait_for(fn(), CHECK_TIMEOUT)
        except Exception as e:
            if isinstance(e, asyncio.TimeoutError) and time.monotonic() - start >= CHECK_TIMEOUT:
                # A check that hangs is a failure too: report it and stop.
                print(f"FAIL {name}: no answer within {CHECK_TIMEOUT:.0f}s (hung)", flush=True)
                os._exit(1)
            detail = f"{type(e).__name__}: {e}"
            if isinstance(e, asyncpg.PostgresError):
                detail += f" (SQLSTATE {e.sqlstate})"
            print(f"FAIL {name}: {detail}", flush=True)
            if not isinstance(e, CheckFailed):
                traceback.print_exc()
            failed.append(name)
            if not keep_going:
                sys.exit(1)
            continue
        suffix = f" - {note}" if note else ""
        print(f"ok   {name} ({time.monotonic() - start:.2f}s){suffix}", flush=True)
    if failed:
        print(f"{len(failed)} check(s) failed: {', '.join(failed)}")
        sys.exit(1)
    print("all asyncpg checks passed")


if __name__ == "__main__":
    asyncio.run(main())
