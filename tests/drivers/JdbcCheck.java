// PgJDBC through pgsplit: the driver used as-is, only the port changes.
//
// Run with the single-file launcher:
//   java -cp /usr/share/java/postgresql.jar JdbcCheck.java
// Reads PGSPLIT_RW_PORT and PGSPLIT_RO_PORT (host 127.0.0.1, user/password app,
// database app). Prints one line per check; on the first failure prints what
// went wrong and exits 1.
//
// DRIVER_CHECKS_KEEP_GOING=1 runs every check and reports all failures;
// DRIVER_CHECKS_ONLY=name,name runs the checks whose names contain one of them.
//
// The workload leans on what a pooling proxy must get right: PgJDBC switches a
// PreparedStatement to a named server-side statement (S_1, S_2, ...) after
// prepareThreshold executions and keeps using it across transactions, closes
// statements it evicts from its cache with a protocol-level Close, and every
// connection numbers its statements from S_1, so sessions sharing server
// connections use the same names for different statements.

import java.io.StringReader;
import java.io.StringWriter;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.PGStatement;
import org.postgresql.copy.CopyManager;

public class JdbcCheck {
    static final String HOST = "127.0.0.1";
    static final String P = "drv_jdbc_"; // prefix of every object this script creates
    static final int CHECK_TIMEOUT_S =
            Integer.parseInt(System.getenv().getOrDefault("DRIVER_CHECK_TIMEOUT", "60"));
    static int RW;
    static int RO;

    static class CheckFailed extends Exception {
        CheckFailed(String message) {
            super(message);
        }
    }

    interface Check {
        /** Returns an optional note for the report line. */
        String run() throws Exception;
    }

    record Named(String name, Check check) {}

    static void expect(boolean cond, String message) throws CheckFailed {
        if (!cond) {
            throw new CheckFailed(message);
        }
    }

    static int port(String name) {
        String v = System.getenv(name);
        if (v == null || v.isEmpty()) {
            System.err.println(name + " is not set");
            System.exit(2);
        }
        return Integer.parseInt(v);
    }

    /** Connects as app to `port`; `extra` is appended to the URL's parameters. */
    static Connection connect(int port, String extra) throws SQLException {
        String url = "jdbc:postgresql://" + HOST + ":" + port + "/app?user=app&password=app"
                + "&connectTimeout=10&socketTimeout=60" + (extra.isEmpty() ? "" : "&" + extra);
        return DriverManager.getConnection(url);
    }

    static Connection connect(int port) throws SQLException {
        return connect(port, "");
    }

    /** Runs `body`, which must fail with an SQLException; returns it. */
    static SQLException failure(Check body) throws Exception {
        try {
            body.run();
        } catch (SQLException e) {
            return e;
        }
        throw new CheckFailed("the statement succeeded but an error was expected");
    }

    static long queryLong(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            if (!rs.next()) {
                throw new SQLException("no row from " + sql);
            }
            return rs.getLong(1);
        }
    }

    static String queryString(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            if (!rs.next()) {
                throw new SQLException("no row from " + sql);
            }
            return rs.getString(1);
        }
    }

    interface Condition {
        boolean holds() throws Exception;
    }

    static void eventually(String what, Condition cond) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(15);
        while (true) {
            try {
                if (cond.holds()) {
                    return;
                }
            } catch (SQLException e) {
                // not yet
            }
            if (System.nanoTime() > deadline) {
                throw new CheckFailed("timed out after 15s waiting for " + what);
            }
            Thread.sleep(100);
        }
    }

    /**
     * Makes this session's reads see what the earlier checks committed. On
     * the read-write port reads go to replicas, which see a session's own
     * writes (read-your-writes) but may not yet have another session's; a
     * write first (one that changes nothing) puts every earlier commit under
     * this session's read floor. Straight against PostgreSQL it is a no-op.
     */
    static void catchUp(Connection c) throws SQLException {
        try (Statement s = c.createStatement()) {
            s.executeUpdate("UPDATE " + P + "items SET n = n WHERE id = 0");
        }
    }

    static boolean serverPrepared(PreparedStatement ps) throws SQLException {
        return ps.unwrap(PGStatement.class).isUseServerPrepare();
    }

    /** n of item `id`, read through a reused PreparedStatement. */
    static long itemN(PreparedStatement get, int id) throws Exception {
        get.setInt(1, id);
        try (ResultSet rs = get.executeQuery()) {
            expect(rs.next(), "no row for item " + id);
            long n = rs.getLong(2);
            expect(rs.getString(1).equals("name " + id), "item " + id + " has name " + rs.getString(1));
            expect(!rs.next(), "two rows for item " + id);
            return n;
        }
    }

    // ----------------------------------------------------------------------
    // checks

    static String checkSchema() throws Exception {
        try (Connection c = connect(RW); Statement s = c.createStatement()) {
            s.execute("DROP TABLE IF EXISTS " + P + "items, " + P + "copy, " + P + "uniq, " + P + "tx");
            s.execute("CREATE TABLE " + P + "items (id int PRIMARY KEY, name text, n bigint)");
            s.execute("CREATE TABLE " + P + "copy (id int, name text, score float8)");
            s.execute("CREATE TABLE " + P + "uniq (id int PRIMARY KEY)");
            s.execute("CREATE TABLE " + P + "tx (id int)");
            // A batch: Bind/Execute pairs for one statement, one Sync.
            try (PreparedStatement ins = c.prepareStatement(
                    "INSERT INTO " + P + "items (id, name, n) VALUES (?, ?, ?)")) {
                for (int i = 1; i <= 50; i++) {
                    ins.setInt(1, i);
                    ins.setString(2, "name " + i);
                    ins.setLong(3, i);
                    ins.addBatch();
                }
                int[] counts = ins.executeBatch();
                expect(counts.length == 50, "batch reported " + counts.length + " results");
            }
            expect(queryLong(c, "SELECT sum(n) FROM " + P + "items") == 1275, "batch insert lost rows");
        }
        return null;
    }

    /**
     * A read and a write, each a reused PreparedStatement, run past the default
     * prepareThreshold (5) so both become named server-side statements, in
     * autocommit and explicit transactions alternately; every read must see
     * the session's own writes.
     */
    static String checkServerPreparedAcrossTransactions() throws Exception {
        try (Connection c = connect(RW)) {
            catchUp(c);
            PreparedStatement get = c.prepareStatement("SELECT name, n FROM " + P + "items WHERE id = ?");
            PreparedStatement bump = c.prepareStatement("UPDATE " + P + "items SET n = n + ? WHERE id = ?");
            expect(get.unwrap(PGStatement.class).getPrepareThreshold() == 5, "prepareThreshold is not the default 5");
            Map<Integer, Long> expected = new HashMap<>();
            for (int id = 1; id <= 5; id++) {
                expected.put(id, (long) id);
            }
            for (int round = 0; round < 16; round++) {
                boolean explicit = round % 2 == 1;
                c.setAutoCommit(!explicit);
                int id = 1 + round % 5;
                expect(itemN(get, id) == expected.get(id), "round " + round + ": item " + id + " before the update");
                bump.setLong(1, 10);
                bump.setInt(2, id);
                expect(bump.executeUpdate() == 1, "round " + round + ": UPDATE touched no row");
                expected.put(id, expected.get(id) + 10);
                long n = itemN(get, id);
                expect(n == expected.get(id), "round " + round + ": read after own write saw n=" + n
                        + ", expected " + expected.get(id));
                if (explicit) {
                    if (round % 4 == 3) {
                        c.rollback();
                        expected.put(id, expected.get(id) - 10);
                    } else {
                        c.commit();
                    }
                }
            }
            c.setAutoCommit(true);
            expect(serverPrepared(get) && serverPrepared(bump),
                    "the statements did not switch to server-side preparation");
            // Reads only now, in autocommit: the driver keeps using the named
            // statement; the last committed values must be visible.
            for (int id = 1; id <= 5; id++) {
                expect(itemN(get, id) == expected.get(id), "autocommit read of item " + id + " after commits");
            }
            get.close();
            bump.close();
        }
        return "16 rounds, server-prepared";
    }

    /**
     * Reads through the read-only port, server-prepared, in autocommit and in
     * read-only transactions (BEGIN READ ONLY); writes refused with 25006;
     * COPY out.
     */
    static String checkReadOnlyPort() throws Exception {
        try (Connection c = connect(RO)) {
            expect(queryString(c, "SELECT pg_is_in_recovery()").equals("t"), "read-only port did not reach a replica");
            eventually(P + "items on the replica", () -> queryLong(c, "SELECT count(*) FROM " + P + "items") == 50);
            PreparedStatement get = c.prepareStatement("SELECT name FROM " + P + "items WHERE id = ?");
            for (int round = 0; round < 12; round++) {
                boolean explicit = round % 3 == 2;
                if (explicit) {
                    c.setAutoCommit(false);
                    c.setReadOnly(true);
                }
                int id = 1 + round % 7;
                get.setInt(1, id);
                try (ResultSet rs = get.executeQuery()) {
                    expect(rs.next() && rs.getString(1).equals("name " + id), "read-only port read of item " + id);
                }
                if (explicit) {
                    c.commit();
                    c.setReadOnly(false);
                    c.setAutoCommit(true);
                }
            }
            expect(serverPrepared(get), "the read did not switch to server-side preparation");
            PreparedStatement ins = c.prepareStatement("INSERT INTO " + P + "uniq VALUES (?)");
            ins.setInt(1, 9999);
            SQLException e = failure(() -> {
                ins.executeUpdate();
                return null;
            });
            expect("25006".equals(e.getSQLState()), "INSERT on the read-only port gave " + e.getSQLState() + ": " + e.getMessage());
            get.setInt(1, 3);
            try (ResultSet rs = get.executeQuery()) {
                expect(rs.next() && rs.getString(1).equals("name 3"), "prepared read after 25006");
            }
            CopyManager copy = c.unwrap(PGConnection.class).getCopyAPI();
            StringWriter out = new StringWriter();
            long n = copy.copyOut("COPY (SELECT id FROM " + P + "items WHERE id <= 3 ORDER BY id) TO STDOUT", out);
            expect(n == 3 && out.toString().equals("1\n2\n3\n"), "COPY out on the read-only port: " + n + " rows, " + out);
        }
        return null;
    }

    /**
     * An error inside an explicit transaction: 25P02 until ROLLBACK, then the
     * connection and its server-prepared statements work again; a savepoint
     * recovers from an error without losing the transaction.
     */
    static String checkTransactionErrorRollback() throws Exception {
        try (Connection c = connect(RW)) {
            PreparedStatement ins = c.prepareStatement("INSERT INTO " + P + "uniq VALUES (?)");
            PreparedStatement has = c.prepareStatement("SELECT count(*) FROM " + P + "uniq WHERE id = ?");
            for (int i = 1; i <= 6; i++) { // past prepareThreshold: both server-prepared
                ins.setInt(1, i);
                ins.executeUpdate();
                has.setInt(1, i);
                try (ResultSet rs = has.executeQuery()) {
                    expect(rs.next() && rs.getLong(1) == 1, "row " + i + " not visible after insert");
                }
            }
            expect(serverPrepared(ins) && serverPrepared(has), "statements not server-prepared");
            c.setAutoCommit(false);
            ins.setInt(1, 200);
            ins.executeUpdate();
            ins.setInt(1, 1);
            SQLException dup = failure(() -> {
                ins.executeUpdate();
                return null;
            });
            expect("23505".equals(dup.getSQLState()), "duplicate key gave " + dup.getSQLState() + ": " + dup.getMessage());
            has.setInt(1, 200);
            SQLException aborted = failure(() -> {
                has.executeQuery().close();
                return null;
            });
            expect("25P02".equals(aborted.getSQLState()), "statement in a failed transaction gave " + aborted.getSQLState());
            c.rollback();
            try (ResultSet rs = has.executeQuery()) {
                expect(rs.next() && rs.getLong(1) == 0, "the rolled-back row 200 is visible");
            }
            c.commit();
            // A savepoint: the error is rolled back to it and the transaction goes on.
            ins.setInt(1, 300);
            ins.executeUpdate();
            Savepoint sp = c.setSavepoint();
            ins.setInt(1, 2);
            SQLException again = failure(() -> {
                ins.executeUpdate();
                return null;
            });
            expect("23505".equals(again.getSQLState()), "duplicate after savepoint gave " + again.getSQLState());
            c.rollback(sp);
            ins.setInt(1, 301);
            ins.executeUpdate();
            c.commit();
            c.setAutoCommit(true);
            for (int id : new int[] {300, 301}) {
                has.setInt(1, id);
                try (ResultSet rs = has.executeQuery()) {
                    expect(rs.next() && rs.getLong(1) == 1, "row " + id + " committed after the savepoint is missing");
                }
            }
        }
        return null;
    }

    /**
     * prepareThreshold=1 and a statement cache of 4 queries, 10 distinct
     * queries (reads and writes) cycled: every statement is evicted and closed
     * (protocol Close) and prepared again, over and over.
     */
    static String checkStatementCacheOverflow() throws Exception {
        try (Connection c = connect(RW, "prepareThreshold=1&preparedStatementCacheQueries=4")) {
            catchUp(c);
            Map<Integer, Long> expected = new HashMap<>();
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(
                    "SELECT id, n FROM " + P + "items WHERE id BETWEEN 11 AND 20")) {
                while (rs.next()) {
                    expected.put(rs.getInt(1), rs.getLong(2));
                }
            }
            expect(expected.size() == 10, "items 11..20 missing");
            int executions = 0;
            for (int round = 0; round < 6; round++) {
                c.setAutoCommit(round % 2 == 0);
                for (int k = 0; k < 10; k++) {
                    int id = 11 + (k + round) % 10;
                    if (k % 3 == 2) {
                        // A write: each k its own text, so its own cache entry.
                        try (PreparedStatement ps = c.prepareStatement(
                                "UPDATE " + P + "items SET n = n + ? WHERE id = ? AND " + k + " = " + k)) {
                            ps.setLong(1, k + 1);
                            ps.setInt(2, id);
                            expect(ps.executeUpdate() == 1, "write " + k + " in round " + round);
                            expect(serverPrepared(ps), "write " + k + " not server-prepared");
                        }
                        expected.put(id, expected.get(id) + k + 1);
                    } else {
                        try (PreparedStatement ps = c.prepareStatement(
                                "SELECT n, " + k + " FROM " + P + "items WHERE id = ?")) {
                            ps.setInt(1, id);
                            try (ResultSet rs = ps.executeQuery()) {
                                expect(rs.next(), "read " + k + " found no row");
                                expect(rs.getLong(1) == expected.get(id) && rs.getInt(2) == k,
                                        "read " + k + " in round " + round + " of item " + id + ": n=" + rs.getLong(1)
                                                + ", expected " + expected.get(id));
                            }
                            expect(serverPrepared(ps), "read " + k + " not server-prepared");
                        }
                    }
                    executions++;
                }
                if (round % 2 == 1) {
                    c.commit();
                }
            }
            c.setAutoCommit(true);
            return executions + " executions of 10 statements through a 4-entry cache";
        }
    }

    /**
     * Four sessions at once, each running the same four statements in its own
     * order: PgJDBC names a statement when it first prepares it on the server
     * (S_1, S_2, ... per connection), so the same name means a different
     * statement in each session, and a proxy sharing server connections
     * between sessions must keep them apart.
     */
    static String checkConcurrentSessions() throws Exception {
        int sessions = 4;
        ExecutorService pool = Executors.newFixedThreadPool(sessions);
        try {
            List<Future<String>> results = new ArrayList<>();
            for (int t = 0; t < sessions; t++) {
                final int me = t;
                results.add(pool.submit(() -> {
                    runSession(me);
                    return "ok";
                }));
            }
            for (Future<String> f : results) {
                try {
                    f.get(45, TimeUnit.SECONDS);
                } catch (ExecutionException e) {
                    if (e.getCause() instanceof Exception inner) {
                        throw inner;
                    }
                    throw e;
                }
            }
        } finally {
            pool.shutdownNow();
        }
        return sessions + " sessions x 40 rounds";
    }

    static void runSession(int me) throws Exception {
        int id = 31 + me; // this session's own row: no lock waits
        try (Connection c = connect(RW, "prepareThreshold=1")) {
            // A write first: from then on this session's reads see every
            // commit before it (read-your-writes), its own and the schema's.
            long[] n = {queryLong(c, "UPDATE " + P + "items SET n = n WHERE id = " + id + " RETURNING n")};
            PreparedStatement bump = c.prepareStatement("UPDATE " + P + "items SET n = n + 1 WHERE id = ?");
            PreparedStatement getN = c.prepareStatement("SELECT n FROM " + P + "items WHERE id = ?");
            PreparedStatement getName = c.prepareStatement("SELECT name FROM " + P + "items WHERE id = ?");
            PreparedStatement count = c.prepareStatement("SELECT count(*) FROM " + P + "items WHERE id <= ?");
            List<Check> steps = List.of(
                    () -> {
                        bump.setInt(1, id);
                        expect(bump.executeUpdate() == 1, "session " + me + ": update touched no row");
                        n[0]++;
                        return null;
                    },
                    () -> {
                        getN.setInt(1, id);
                        try (ResultSet rs = getN.executeQuery()) {
                            expect(rs.next() && rs.getLong(1) == n[0], "session " + me + " read a wrong n (wanted " + n[0] + ")");
                        }
                        return null;
                    },
                    () -> {
                        getName.setInt(1, id);
                        try (ResultSet rs = getName.executeQuery()) {
                            expect(rs.next() && rs.getString(1).equals("name " + id),
                                    "session " + me + " read a wrong name: " + rs.getString(1));
                        }
                        return null;
                    },
                    () -> {
                        count.setInt(1, 10 + me);
                        try (ResultSet rs = count.executeQuery()) {
                            expect(rs.next() && rs.getLong(1) == 10 + me, "session " + me + " count wrong: " + rs.getLong(1));
                        }
                        return null;
                    });
            for (int i = 0; i < 40; i++) {
                c.setAutoCommit(i % 4 == 0);
                for (int j = 0; j < steps.size(); j++) {
                    steps.get((j + me) % steps.size()).run(); // this session's order
                }
                if (!c.getAutoCommit()) {
                    c.commit();
                }
            }
        }
    }

    /** i / 4 as PostgreSQL prints a float8 (0, 0.25, 1.5: no trailing zeros). */
    static String score(int i) {
        return java.math.BigDecimal.valueOf(i).divide(java.math.BigDecimal.valueOf(4)).stripTrailingZeros().toPlainString();
    }

    static String checkCopy() throws Exception {
        int rows = 20000;
        StringBuilder data = new StringBuilder();
        for (int i = 0; i < rows; i++) {
            data.append(i).append("\tname ").append(i).append(" with \\t tab\t").append(score(i)).append('\n');
        }
        try (Connection c = connect(RW)) {
            CopyManager copy = c.unwrap(PGConnection.class).getCopyAPI();
            long in = copy.copyIn("COPY " + P + "copy (id, name, score) FROM STDIN", new StringReader(data.toString()));
            expect(in == rows, "COPY in reported " + in + " rows");
            StringWriter out = new StringWriter();
            long outRows = copy.copyOut("COPY (SELECT id, name, score FROM " + P + "copy ORDER BY id) TO STDOUT", out);
            expect(outRows == rows, "COPY out reported " + outRows + " rows");
            expect(out.toString().equals(data.toString()), "COPY out data differs from what was copied in");
            // COPY in inside a transaction that rolls back leaves nothing.
            c.setAutoCommit(false);
            long more = copy.copyIn("COPY " + P + "copy (id) FROM STDIN", new StringReader("-1\n-2\n"));
            expect(more == 2, "COPY in within a transaction reported " + more);
            c.rollback();
            c.setAutoCommit(true);
            // Bad data: the error comes back while the driver is still sending.
            StringBuilder bad = new StringBuilder("1\nnot a number\n");
            bad.append("2\n".repeat(200000));
            SQLException e = failure(() -> {
                copy.copyIn("COPY " + P + "copy (id) FROM STDIN", new StringReader(bad.toString()));
                return null;
            });
            expect("22P02".equals(e.getSQLState()), "bad COPY data gave " + e.getSQLState() + ": " + e.getMessage());
            expect(queryLong(c, "SELECT count(*) FROM " + P + "copy") == rows,
                    "a rolled-back or failed COPY left rows behind");
        }
        return rows + " rows each way";
    }

    /**
     * Waits until a statement containing `marker` is active on the primary. A
     * cancel sent before the server has read the query would be lost, which
     * would make the check flaky rather than wrong.
     */
    static void waitUntilRunning(String marker) throws Exception {
        try (Connection w = connect(RW);
                PreparedStatement ps = w.prepareStatement(
                        // The watched query carries the same hint: on the
                        // read-write port a plain read may run on a replica.
                        "/* pgsplit:primary */ SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                                + " AND query LIKE ? AND pid <> pg_backend_pid()")) {
            ps.setString(1, "%" + marker + "%");
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(15);
            while (System.nanoTime() < deadline) {
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    if (rs.getLong(1) > 0) {
                        return;
                    }
                }
                Thread.sleep(50);
            }
        }
        throw new CheckFailed("statement " + marker + " never showed up as running");
    }

    /** Cancels a pg_sleep(30) on `c` with Statement.cancel() from another thread. */
    static double cancelSleep(Connection c) throws Exception {
        String marker = "drv_jdbc_cancel_" + ProcessHandle.current().pid() + "_" + System.nanoTime();
        ExecutorService runner = Executors.newSingleThreadExecutor();
        try (Statement s = c.createStatement()) {
            Future<Long> done = runner.submit(() -> {
                try {
                    s.executeQuery("/* pgsplit:primary */ SELECT pg_sleep(30) /* " + marker + " */").close();
                } catch (SQLException e) {
                    if (!"57014".equals(e.getSQLState())) {
                        throw e;
                    }
                    return System.nanoTime();
                }
                throw new CheckFailed("pg_sleep(30) ran to its end: the cancel had no effect");
            });
            waitUntilRunning(marker);
            long sent = System.nanoTime();
            s.cancel();
            long ended;
            try {
                ended = done.get(20, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                if (e.getCause() instanceof Exception inner) {
                    throw inner;
                }
                throw e;
            } catch (TimeoutException e) {
                throw new CheckFailed("pg_sleep still running 20s after the cancel");
            }
            double took = (ended - sent) / 1e9;
            expect(took < 5, String.format("the query ended %.1fs after the cancel", took));
            return took;
        } finally {
            runner.shutdownNow();
        }
    }

    static String checkCancel() throws Exception {
        try (Connection c = connect(RW)) {
            double took = cancelSleep(c);
            expect(queryString(c, "SELECT 'still here'").equals("still here"), "unusable after the cancel");
            // Cancelled inside an explicit transaction: it fails (25P02) until ROLLBACK.
            c.setAutoCommit(false);
            cancelSleep(c);
            SQLException e = failure(() -> queryString(c, "SELECT 1"));
            expect("25P02".equals(e.getSQLState()), "after a cancel in a transaction: " + e.getSQLState());
            c.rollback();
            c.setAutoCommit(true);
            expect(queryString(c, "SELECT 'again'").equals("again"), "unusable after rollback");
            return String.format("cancelled %.2fs after the request", took);
        }
    }

    static String checkListenNotify() throws Exception {
        try (Connection listener = connect(RW); Connection sender = connect(RW)) {
            try (Statement s = listener.createStatement()) {
                s.execute("LISTEN " + P + "chan");
            }
            try (Statement s = sender.createStatement()) {
                s.execute("NOTIFY " + P + "chan, 'hello from jdbc'");
            }
            try (PreparedStatement ps = sender.prepareStatement("SELECT pg_notify(?, ?)")) {
                ps.setString(1, P + "chan");
                ps.setString(2, "second payload");
                ps.executeQuery().close();
            }
            // A notification sent inside a transaction arrives once it commits.
            sender.setAutoCommit(false);
            try (Statement s = sender.createStatement()) {
                s.execute("NOTIFY " + P + "chan, 'from a transaction'");
            }
            sender.commit();
            PGConnection pg = listener.unwrap(PGConnection.class);
            List<String> got = new ArrayList<>();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (got.size() < 3 && System.nanoTime() < deadline) {
                PGNotification[] batch = pg.getNotifications(1000); // blocks up to 1s
                if (batch != null) {
                    for (PGNotification n : batch) {
                        got.add(n.getName() + ":" + n.getParameter());
                    }
                }
            }
            List<String> want = Arrays.asList(
                    P + "chan:hello from jdbc", P + "chan:second payload", P + "chan:from a transaction");
            expect(got.equals(want), "notifications received: " + got);
            try (Statement s = listener.createStatement()) {
                s.execute("UNLISTEN " + P + "chan");
            }
        }
        return null;
    }

    /**
     * targetServerType=primary makes PgJDBC ask the server whether it is
     * read-only (SHOW transaction_read_only) and refuse it if so. The
     * read-write port takes writes, so it must pass, and the write must work.
     */
    static String checkTargetServerTypePrimary() throws Exception {
        try (Connection c = connect(RW, "targetServerType=primary")) {
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + P + "tx VALUES (?)")) {
                ps.setInt(1, 7);
                expect(ps.executeUpdate() == 1, "INSERT through targetServerType=primary");
            }
            expect(queryLong(c, "SELECT count(*) FROM " + P + "tx WHERE id = 7") == 1, "the row is not visible");
        }
        return null;
    }

    /** The read-only port is a replica to the driver: primary refused, secondary accepted. */
    static String checkTargetServerTypeOnReadOnlyPort() throws Exception {
        SQLException e = failure(() -> {
            connect(RO, "targetServerType=primary").close();
            return null;
        });
        expect(e.getMessage().contains("targetServerType"),
                "targetServerType=primary on the read-only port failed, but not as refused by the driver: " + e);
        try (Connection c = connect(RO, "targetServerType=secondary")) {
            expect(queryString(c, "SELECT pg_is_in_recovery()").equals("t"), "secondary is not in recovery");
        }
        return null;
    }

    static final List<Named> CHECKS = List.of(
            new Named("create tables, batch insert", JdbcCheck::checkSchema),
            new Named("server-prepared statements across transactions", JdbcCheck::checkServerPreparedAcrossTransactions),
            new Named("read-only port", JdbcCheck::checkReadOnlyPort),
            new Named("transaction error, ROLLBACK, savepoint", JdbcCheck::checkTransactionErrorRollback),
            new Named("statement cache overflow (prepareThreshold=1, 4 cached)", JdbcCheck::checkStatementCacheOverflow),
            new Named("concurrent sessions with clashing statement names", JdbcCheck::checkConcurrentSessions),
            new Named("COPY in and out (CopyManager)", JdbcCheck::checkCopy),
            new Named("cancel (Statement.cancel)", JdbcCheck::checkCancel),
            new Named("LISTEN/NOTIFY (getNotifications)", JdbcCheck::checkListenNotify),
            new Named("targetServerType=primary on the read-write port", JdbcCheck::checkTargetServerTypePrimary),
            new Named("targetServerType on the read-only port", JdbcCheck::checkTargetServerTypeOnReadOnlyPort));

    public static void main(String[] args) throws Exception {
        RW = port("PGSPLIT_RW_PORT");
        RO = port("PGSPLIT_RO_PORT");
        boolean keepGoing = "1".equals(System.getenv("DRIVER_CHECKS_KEEP_GOING"));
        List<String> only = new ArrayList<>();
        for (String s : System.getenv().getOrDefault("DRIVER_CHECKS_ONLY", "").split(",")) {
            if (!s.isBlank()) {
                only.add(s.trim());
            }
        }
        System.out.println("PgJDBC " + org.postgresql.util.DriverInfo.DRIVER_VERSION + ", Java "
                + System.getProperty("java.version") + "; rw=" + RW + " ro=" + RO);
        List<String> failed = new ArrayList<>();
        for (Named named : CHECKS) {
            if (!only.isEmpty() && only.stream().noneMatch(named.name()::contains)) {
                continue;
            }
            long started = System.nanoTime();
            ExecutorService runner = Executors.newSingleThreadExecutor(r -> {
                Thread t = new Thread(r, "check");
                t.setDaemon(true);
                return t;
            });
            Future<String> result = runner.submit(named.check()::run);
            try {
                String note = result.get(CHECK_TIMEOUT_S, TimeUnit.SECONDS);
                System.out.printf("ok   %s (%.2fs)%s%n", named.name(), (System.nanoTime() - started) / 1e9,
                        note == null ? "" : " - " + note);
            } catch (TimeoutException e) {
                // A check that hangs is a failure too: report it and stop.
                System.out.printf("FAIL %s: no answer within %ds (hung)%n", named.name(), CHECK_TIMEOUT_S);
                System.out.flush();
                Runtime.getRuntime().halt(1);
            } catch (ExecutionException e) {
                Throwable cause = e.getCause();
                String detail = cause instanceof CheckFailed
                        ? cause.getMessage()
                        : cause.getClass().getSimpleName() + ": " + cause.getMessage();
                if (cause instanceof SQLException sql && sql.getSQLState() != null) {
                    detail += " (SQLSTATE " + sql.getSQLState() + ")";
                }
                System.out.println("FAIL " + named.name() + ": " + detail);
                if (!(cause instanceof CheckFailed)) {
                    cause.printStackTrace();
                }
                failed.add(named.name());
                if (!keepGoing) {
                    System.out.flush();
                    Runtime.getRuntime().halt(1);
                }
            } finally {
                runner.shutdownNow();
            }
        }
        if (!failed.isEmpty()) {
            System.out.println(failed.size() + " check(s) failed: " + String.join(", ", failed));
            System.out.flush();
            Runtime.getRuntime().halt(1);
        }
        System.out.println("all PgJDBC checks passed");
        System.out.flush();
        Runtime.getRuntime().halt(0);
    }
}
