// pgx (v4) through pgsplit: the driver used as-is, only the port changes.
//
// Built offline against Debian's packaged sources (golang-github-jackc-pgx-v4-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run pgx_check.go
//
// pgx v4 prepares every statement with parameters under a name of its own
// (lrupsc_N_M) through its statement cache (512 entries by default) and
// deallocates the statements it evicts with a SQL DEALLOCATE; a context
// cancelled during a query makes it send a CancelRequest and close the
// connection.
//
// Reads PGSPLIT_RW_PORT and PGSPLIT_RO_PORT (host 127.0.0.1, user/password app,
// database app). Prints one line per check; on the first failure prints what
// went wrong and exits 1.
//
// DRIVER_CHECKS_KEEP_GOING=1 runs every check and reports all failures;
// DRIVER_CHECKS_ONLY=name,name runs the checks whose names contain one of them.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
)

const (
	host = "127.0.0.1"
	p    = "drv_pgx_" // prefix of every object this script creates
)

var rw, ro int

type checkFailed struct{ msg string }

func (e *checkFailed) Error() string { return e.msg }

func failf(format string, args ...interface{}) error {
	return &checkFailed{fmt.Sprintf(format, args...)}
}

func port(name string) int {
	v, err := strconv.Atoi(os.Getenv(name))
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s is not set\n", name)
		os.Exit(2)
	}
	return v
}

func dsn(port int, extra string) string {
	return fmt.Sprintf("host=%s port=%d user=app password=app dbname=app connect_timeout=10 %s", host, port, extra)
}

func connect(ctx context.Context, port int, extra string) (*pgx.Conn, error) {
	return pgx.Connect(ctx, dsn(port, extra))
}

// sqlstate of err, or "" if it is not a server error.
func sqlstate(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// itemN reads item id's n, checking its name.
func itemN(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...interface{}) pgx.Row
}, id int) (int64, error) {
	var name string
	var n int64
	if err := q.QueryRow(ctx, "SELECT name, n FROM "+p+"items WHERE id = $1", id).Scan(&name, &n); err != nil {
		return 0, err
	}
	if name != fmt.Sprintf("name %d", id) {
		return 0, failf("item %d has name %q", id, name)
	}
	return n, nil
}

// catchUp makes this session's reads see what the earlier checks committed.
// On the read-write port reads go to replicas, which see a session's own
// writes (read-your-writes) but may not yet have another session's; a write
// first (one that changes nothing) puts every earlier commit under this
// session's read floor. Straight against PostgreSQL it is a no-op.
func catchUp(ctx context.Context, c *pgx.Conn) error {
	_, err := c.Exec(ctx, "UPDATE "+p+"items SET n = n WHERE id = 0")
	return err
}

func eventually(what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		if ok, err := cond(); err == nil && ok {
			return nil
		}
		if time.Now().After(deadline) {
			return failf("timed out after 15s waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// checks

func checkSchema(ctx context.Context) (string, error) {
	c, err := connect(ctx, rw, "")
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	for _, sql := range []string{
		"DROP TABLE IF EXISTS " + p + "items, " + p + "copy, " + p + "uniq",
		"CREATE TABLE " + p + "items (id int PRIMARY KEY, name text, n bigint)",
		"CREATE TABLE " + p + "copy (id int, name text, score float8)",
		"CREATE TABLE " + p + "uniq (id int PRIMARY KEY)",
	} {
		if _, err := c.Exec(ctx, sql); err != nil {
			return "", err
		}
	}
	// A batch: one prepared INSERT, 50 Bind/Execute, one Sync.
	batch := &pgx.Batch{}
	for i := 1; i <= 50; i++ {
		batch.Queue("INSERT INTO "+p+"items (id, name, n) VALUES ($1, $2, $3)", i, fmt.Sprintf("name %d", i), int64(i))
	}
	br := c.SendBatch(ctx, batch)
	for i := 1; i <= 50; i++ {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return "", err
		}
	}
	if err := br.Close(); err != nil {
		return "", err
	}
	var sum int64
	if err := c.QueryRow(ctx, "SELECT sum(n) FROM "+p+"items WHERE id <= $1", 50).Scan(&sum); err != nil {
		return "", err
	}
	if sum != 1275 {
		return "", failf("batch insert: sum %d", sum)
	}
	return "", nil
}

// The same QueryRow and Exec, through pgx's statement cache, in autocommit and
// in transactions (some rolled back); every read sees the session's own
// writes. Then a statement prepared by name with conn.Prepare, reused.
func checkAcrossTransactions(ctx context.Context) (string, error) {
	c, err := connect(ctx, rw, "")
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	if err := catchUp(ctx, c); err != nil {
		return "", err
	}
	expected := map[int]int64{1: 1, 2: 2, 3: 3, 4: 4, 5: 5}
	bump := "UPDATE " + p + "items SET n = n + $1 WHERE id = $2"
	for round := 0; round < 16; round++ {
		id := 1 + round%5
		explicit := round%2 == 1
		type querier interface {
			QueryRow(context.Context, string, ...interface{}) pgx.Row
			Exec(context.Context, string, ...interface{}) (pgconn.CommandTag, error)
		}
		var q querier = c
		var tx pgx.Tx
		if explicit {
			if tx, err = c.Begin(ctx); err != nil {
				return "", err
			}
			q = tx
		}
		n, err := itemN(ctx, q, id)
		if err != nil {
			return "", err
		}
		if n != expected[id] {
			return "", failf("round %d: item %d has n=%d, expected %d", round, id, n, expected[id])
		}
		tag, err := q.Exec(ctx, bump, int64(10), id)
		if err != nil {
			return "", err
		}
		if tag.RowsAffected() != 1 {
			return "", failf("round %d: %s", round, tag)
		}
		if n, err = itemN(ctx, q, id); err != nil {
			return "", err
		}
		if n != expected[id]+10 {
			return "", failf("round %d: read after own write saw n=%d, expected %d", round, n, expected[id]+10)
		}
		if explicit && round%4 == 3 {
			if err := tx.Rollback(ctx); err != nil {
				return "", err
			}
			continue
		}
		expected[id] += 10
		if explicit {
			if err := tx.Commit(ctx); err != nil {
				return "", err
			}
		}
	}
	for id, want := range expected {
		if n, err := itemN(ctx, c, id); err != nil || n != want {
			return "", failf("item %d after the rounds: n=%d (%v), expected %d", id, n, err, want)
		}
	}
	// A statement the application prepares by name and executes by that name.
	if _, err := c.Prepare(ctx, "drv_pgx_get_n", "SELECT n FROM "+p+"items WHERE id = $1"); err != nil {
		return "", err
	}
	for round := 0; round < 6; round++ {
		err := c.BeginFunc(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, bump, int64(1), 1); err != nil {
				return err
			}
			expected[1]++
			var n int64
			if err := tx.QueryRow(ctx, "drv_pgx_get_n", 1).Scan(&n); err != nil {
				return err
			}
			if n != expected[1] {
				return failf("named statement in transaction %d: n=%d", round, n)
			}
			return nil
		})
		if err != nil {
			return "", err
		}
		var n int64
		if err := c.QueryRow(ctx, "drv_pgx_get_n", 1).Scan(&n); err != nil {
			return "", err
		}
		if n != expected[1] {
			return "", failf("named statement after transaction %d: n=%d", round, n)
		}
	}
	return "", nil
}

func checkTransactionError(ctx context.Context) (string, error) {
	c, err := connect(ctx, rw, "")
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	insert := "INSERT INTO " + p + "uniq VALUES ($1)"
	has := "SELECT count(*) FROM " + p + "uniq WHERE id = $1"
	for i := 1; i <= 3; i++ {
		if _, err := c.Exec(ctx, insert, i); err != nil {
			return "", err
		}
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		return "", err
	}
	if _, err := tx.Exec(ctx, insert, 200); err != nil {
		return "", err
	}
	_, err = tx.Exec(ctx, insert, 1)
	if sqlstate(err) != "23505" {
		return "", failf("duplicate key in a transaction gave %v", err)
	}
	var count int64
	err = tx.QueryRow(ctx, has, 200).Scan(&count)
	if sqlstate(err) != "25P02" {
		return "", failf("statement in a failed transaction gave %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		return "", err
	}
	if err := c.QueryRow(ctx, has, 200).Scan(&count); err != nil || count != 0 {
		return "", failf("the rolled-back row 200: count %d (%v)", count, err)
	}
	// A nested transaction is a savepoint: its error does not end the outer one.
	err = c.BeginFunc(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, insert, 300); err != nil {
			return err
		}
		err := tx.BeginFunc(ctx, func(sp pgx.Tx) error {
			_, err := sp.Exec(ctx, insert, 2)
			return err
		})
		if sqlstate(err) != "23505" {
			return failf("duplicate key in a savepoint gave %v", err)
		}
		_, err = tx.Exec(ctx, insert, 301)
		return err
	})
	if err != nil {
		return "", err
	}
	var ids []int32
	rows, err := c.Query(ctx, "SELECT id FROM "+p+"uniq WHERE id >= $1 ORDER BY id", 200)
	if err != nil {
		return "", err
	}
	for rows.Next() {
		var id int32
		if err := rows.Scan(&id); err != nil {
			return "", err
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	if fmt.Sprint(ids) != "[300 301]" {
		return "", failf("after the savepoint the table holds %v", ids)
	}
	return "", nil
}

// statement_cache_capacity=5 and 12 distinct statements (reads and writes)
// cycled: pgx deallocates each evicted statement with a SQL DEALLOCATE and
// prepares it again later.
func checkCacheOverflow(ctx context.Context) (string, error) {
	c, err := connect(ctx, rw, "statement_cache_capacity=5")
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	if err := catchUp(ctx, c); err != nil {
		return "", err
	}
	expected := map[int]int64{}
	for id := 11; id <= 20; id++ {
		if expected[id], err = itemN(ctx, c, id); err != nil {
			return "", err
		}
	}
	runs := 0
	for round := 0; round < 5; round++ {
		for k := 0; k < 12; k++ {
			id := 11 + (k+round)%10
			if k%3 == 2 {
				sql := fmt.Sprintf("UPDATE %sitems SET n = n + $1 WHERE id = $2 AND %d = %d", p, k, k)
				tag, err := c.Exec(ctx, sql, int64(k), id)
				if err != nil {
					return "", fmt.Errorf("write %d in round %d: %w", k, round, err)
				}
				if tag.RowsAffected() != 1 {
					return "", failf("write %d in round %d: %s", k, round, tag)
				}
				expected[id] += int64(k)
			} else {
				var n int64
				var kk int32
				sql := fmt.Sprintf("SELECT n, %d FROM %sitems WHERE id = $1", k, p)
				if err := c.QueryRow(ctx, sql, id).Scan(&n, &kk); err != nil {
					return "", fmt.Errorf("read %d in round %d: %w", k, round, err)
				}
				if n != expected[id] || int(kk) != k {
					return "", failf("read %d in round %d of item %d: n=%d, expected %d", k, round, id, n, expected[id])
				}
			}
			runs++
		}
	}
	return fmt.Sprintf("%d executions of 12 statements through a 5-entry cache", runs), nil
}

// A pgxpool of four connections serving 200 concurrent goroutines: reads and
// writes, in and out of transactions, all through cached statements.
func checkPool(ctx context.Context) (string, error) {
	pool, err := pgxpool.Connect(ctx, dsn(rw, "pool_max_conns=4"))
	if err != nil {
		return "", err
	}
	defer pool.Close()
	// The sums are read on the primary (hint): the connection that reads them
	// need not be one that wrote.
	sum := "/* pgsplit:primary */ SELECT sum(n)::bigint FROM " + p + "items WHERE id BETWEEN 31 AND 38"
	var before, after int64
	if err := pool.QueryRow(ctx, sum).Scan(&before); err != nil {
		return "", err
	}
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := 31 + i%8
			work := func(q interface {
				QueryRow(context.Context, string, ...interface{}) pgx.Row
				Exec(context.Context, string, ...interface{}) (pgconn.CommandTag, error)
			}) error {
				if _, err := q.Exec(ctx, "UPDATE "+p+"items SET n = n + 1 WHERE id = $1", id); err != nil {
					return err
				}
				var name string
				if err := q.QueryRow(ctx, "SELECT name FROM "+p+"items WHERE id = $1", id).Scan(&name); err != nil {
					return err
				}
				if name != fmt.Sprintf("name %d", id) {
					return failf("goroutine %d read %q", i, name)
				}
				var count int64
				if err := q.QueryRow(ctx, "SELECT count(*) FROM "+p+"items WHERE id <= $1", i%50+1).Scan(&count); err != nil {
					return err
				}
				if count != int64(i%50+1) {
					return failf("goroutine %d counted %d", i, count)
				}
				return nil
			}
			var err error
			if i%3 == 0 {
				err = pool.BeginFunc(ctx, func(tx pgx.Tx) error { return work(tx) })
			} else {
				err = work(pool)
			}
			if err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return "", err
	}
	if err := pool.QueryRow(ctx, sum).Scan(&after); err != nil {
		return "", err
	}
	if after != before+200 {
		return "", failf("200 increments moved the sum from %d to %d", before, after)
	}
	return "200 goroutines on 4 connections", nil
}

func checkCopy(ctx context.Context) (string, error) {
	c, err := connect(ctx, rw, "")
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	const n = 20000
	rows := make([][]interface{}, n)
	var want strings.Builder
	for i := 0; i < n; i++ {
		rows[i] = []interface{}{int32(i), fmt.Sprintf("name %d\twith tab", i), float64(i) / 4}
		want.WriteString(fmt.Sprintf("%d\tname %d\\twith tab\t%s\n", i, i, strconv.FormatFloat(float64(i)/4, 'f', -1, 64)))
	}
	copied, err := c.CopyFrom(ctx, pgx.Identifier{p + "copy"}, []string{"id", "name", "score"}, pgx.CopyFromRows(rows))
	if err != nil {
		return "", err
	}
	if copied != n {
		return "", failf("CopyFrom reported %d rows", copied)
	}
	// CopyFrom inside a transaction rolled back leaves nothing.
	tx, err := c.Begin(ctx)
	if err != nil {
		return "", err
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{p + "copy"}, []string{"id"}, pgx.CopyFromRows([][]interface{}{{int32(-1)}, {int32(-2)}})); err != nil {
		return "", err
	}
	if err := tx.Rollback(ctx); err != nil {
		return "", err
	}
	var out bytes.Buffer
	tag, err := c.PgConn().CopyTo(ctx, &out, "COPY (SELECT id, name, score FROM "+p+"copy ORDER BY id) TO STDOUT")
	if err != nil {
		return "", err
	}
	if tag.RowsAffected() != n {
		return "", failf("COPY TO reported %s", tag)
	}
	if out.String() != want.String() {
		return "", failf("COPY TO data differs from what CopyFrom sent (%d bytes, expected %d)", out.Len(), want.Len())
	}
	// Bad data: the server's error arrives while the client is still sending.
	bad := strings.NewReader("1\nnot a number\n" + strings.Repeat("2\n", 200000))
	_, err = c.PgConn().CopyFrom(ctx, bad, "COPY "+p+"copy (id) FROM STDIN")
	if sqlstate(err) != "22P02" {
		return "", failf("bad COPY data gave %v", err)
	}
	var count int64
	if err := c.QueryRow(ctx, "SELECT count(*) FROM "+p+"copy WHERE id < $1", 1<<30).Scan(&count); err != nil {
		return "", err
	}
	if count != n {
		return "", failf("a rolled-back or failed COPY left rows behind: %d rows", count)
	}
	return fmt.Sprintf("%d rows each way", n), nil
}

// runningOnPrimary counts active statements containing marker on the primary.
func runningOnPrimary(ctx context.Context, w *pgx.Conn, marker string) (int64, error) {
	var count int64
	// The watched query carries the same hint: on the read-write port a plain
	// read may run on a replica.
	err := w.QueryRow(ctx, "/* pgsplit:primary */ SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"+
		" AND query LIKE $1 AND pid <> pg_backend_pid()", "%"+marker+"%").Scan(&count)
	return count, err
}

// A context cancelled while pg_sleep(30) runs: pgx sends a CancelRequest and
// closes the connection (pgx v4's documented behaviour); the server must stop
// the sleep, and a pool must hand out a working connection afterwards.
func checkContextCancel(ctx context.Context) (string, error) {
	pool, err := pgxpool.Connect(ctx, dsn(rw, "pool_max_conns=1"))
	if err != nil {
		return "", err
	}
	defer pool.Close()
	w, err := connect(ctx, rw, "")
	if err != nil {
		return "", err
	}
	defer w.Close(ctx)
	marker := fmt.Sprintf("drv_pgx_cancel_%d_%d", os.Getpid(), time.Now().UnixNano())
	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var sent time.Time
	watchErr := make(chan error, 1)
	go func() {
		err := eventually("the sleep to run", func() (bool, error) {
			n, err := runningOnPrimary(ctx, w, marker)
			return n > 0, err
		})
		sent = time.Now()
		cancel()
		watchErr <- err
	}()
	_, err = pool.Exec(qctx, "/* pgsplit:primary */ SELECT pg_sleep(30) /* "+marker+" */")
	ended := time.Now()
	if err := <-watchErr; err != nil {
		return "", err
	}
	if err == nil {
		return "", failf("pg_sleep(30) ran to its end: the cancel had no effect")
	}
	if !errors.Is(err, context.Canceled) && !pgconn.Timeout(err) {
		return "", failf("the cancelled query failed with %v, not a context error", err)
	}
	took := ended.Sub(sent)
	if took > 5*time.Second {
		return "", failf("the query ended %.1fs after the cancel", took.Seconds())
	}
	// The server stops the sleep (pgx's CancelRequest; closing the
	// connection alone would leave it running its 30 s).
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := runningOnPrimary(ctx, w, marker)
		if err != nil {
			return "", err
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			return "", failf("the cancelled sleep still runs on the server 5s after the cancel")
		}
		time.Sleep(50 * time.Millisecond)
	}
	var s string
	if err := pool.QueryRow(ctx, "SELECT $1::text", "still here").Scan(&s); err != nil || s != "still here" {
		return "", failf("the pool after the cancel: %q, %v", s, err)
	}
	return fmt.Sprintf("cancelled %.2fs after the request", took.Seconds()), nil
}

func checkListen(ctx context.Context) (string, error) {
	listener, err := connect(ctx, rw, "")
	if err != nil {
		return "", err
	}
	defer listener.Close(ctx)
	sender, err := connect(ctx, rw, "")
	if err != nil {
		return "", err
	}
	defer sender.Close(ctx)
	channel := p + "chan"
	if _, err := listener.Exec(ctx, "LISTEN "+channel); err != nil {
		return "", err
	}
	if _, err := sender.Exec(ctx, "NOTIFY "+channel+", 'hello from pgx'"); err != nil {
		return "", err
	}
	if _, err := sender.Exec(ctx, "SELECT pg_notify($1, $2)", channel, "second payload"); err != nil {
		return "", err
	}
	if err := sender.BeginFunc(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "NOTIFY "+channel+", 'from a transaction'")
		return err
	}); err != nil {
		return "", err
	}
	var got []string
	for len(got) < 3 {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		n, err := listener.WaitForNotification(wctx)
		cancel()
		if err != nil {
			return "", failf("waiting for notification %d (got %q): %v", len(got)+1, got, err)
		}
		got = append(got, n.Channel+":"+n.Payload)
	}
	want := []string{channel + ":hello from pgx", channel + ":second payload", channel + ":from a transaction"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		return "", failf("notifications received: %q", got)
	}
	var two int32
	if err := listener.QueryRow(ctx, "SELECT $1::int + 1", 1).Scan(&two); err != nil || two != 2 {
		return "", failf("listener query: %d %v", two, err)
	}
	_, err = listener.Exec(ctx, "UNLISTEN "+channel)
	return "", err
}

func checkReadOnlyPort(ctx context.Context) (string, error) {
	c, err := connect(ctx, ro, "")
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	var rec bool
	if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil || !rec {
		return "", failf("read-only port did not reach a replica (%v)", err)
	}
	if err := eventually(p+"items on the replica", func() (bool, error) {
		var count int64
		err := c.QueryRow(ctx, "SELECT count(*) FROM "+p+"items WHERE id <= $1", 50).Scan(&count)
		return count == 50, err
	}); err != nil {
		return "", err
	}
	getName := "SELECT name FROM " + p + "items WHERE id = $1"
	for round := 0; round < 12; round++ {
		id := 1 + round%7
		var name string
		if round%3 == 2 {
			err = c.BeginTxFunc(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, getName, id).Scan(&name)
			})
		} else {
			err = c.QueryRow(ctx, getName, id).Scan(&name)
		}
		if err != nil {
			return "", err
		}
		if name != fmt.Sprintf("name %d", id) {
			return "", failf("read-only port read of item %d: %q", id, name)
		}
	}
	_, err = c.Exec(ctx, "INSERT INTO "+p+"uniq VALUES ($1)", 9999)
	if sqlstate(err) != "25006" {
		return "", failf("INSERT on the read-only port gave %v", err)
	}
	var name string
	if err := c.QueryRow(ctx, getName, 3).Scan(&name); err != nil || name != "name 3" {
		return "", failf("read after 25006: %q %v", name, err)
	}
	var out bytes.Buffer
	if _, err := c.PgConn().CopyTo(ctx, &out, "COPY (SELECT id FROM "+p+"items WHERE id <= 3 ORDER BY id) TO STDOUT"); err != nil {
		return "", err
	}
	if out.String() != "1\n2\n3\n" {
		return "", failf("COPY TO on the read-only port: %q", out.String())
	}
	return "", nil
}

type check struct {
	name string
	fn   func(context.Context) (string, error)
}

var checks = []check{
	{"create tables, batch insert", checkSchema},
	{"QueryRow/Exec across transactions, named Prepare", checkAcrossTransactions},
	{"transaction error, rollback, savepoint", checkTransactionError},
	{"statement cache overflow (statement_cache_capacity=5)", checkCacheOverflow},
	{"pgxpool of 4 connections, 200 goroutines", checkPool},
	{"CopyFrom / CopyTo", checkCopy},
	{"context cancel of pg_sleep", checkContextCancel},
	{"LISTEN / WaitForNotification", checkListen},
	{"read-only port", checkReadOnlyPort},
}

func main() {
	rw = port("PGSPLIT_RW_PORT")
	ro = port("PGSPLIT_RO_PORT")
	keepGoing := os.Getenv("DRIVER_CHECKS_KEEP_GOING") == "1"
	var only []string
	for _, s := range strings.Split(os.Getenv("DRIVER_CHECKS_ONLY"), ",") {
		if s = strings.TrimSpace(s); s != "" {
			only = append(only, s)
		}
	}
	limit := 60 * time.Second
	if v, err := strconv.Atoi(os.Getenv("DRIVER_CHECK_TIMEOUT")); err == nil {
		limit = time.Duration(v) * time.Second
	}
	fmt.Printf("pgx v4 (Debian's golang-github-jackc-pgx-v4-dev), %s; rw=%d ro=%d\n", runtime.Version(), rw, ro)
	var failed []string
	for _, ch := range checks {
		selected := len(only) == 0
		for _, o := range only {
			selected = selected || strings.Contains(ch.name, o)
		}
		if !selected {
			continue
		}
		started := time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		type result struct {
			note string
			err  error
		}
		done := make(chan result, 1)
		go func() {
			note, err := ch.fn(ctx)
			done <- result{note, err}
		}()
		var r result
		select {
		case r = <-done:
		case <-time.After(limit):
			// A check that hangs is a failure too: report it and stop.
			fmt.Printf("FAIL %s: no answer within %s (hung)\n", ch.name, limit)
			os.Exit(1)
		}
		cancel()
		if r.err != nil {
			detail := r.err.Error()
			var cf *checkFailed
			if !errors.As(r.err, &cf) {
				detail = fmt.Sprintf("%T: %v", r.err, r.err)
			}
			if code := sqlstate(r.err); code != "" && !strings.Contains(detail, "SQLSTATE "+code) {
				detail += " (SQLSTATE " + code + ")"
			}
			fmt.Printf("FAIL %s: %s\n", ch.name, detail)
			failed = append(failed, ch.name)
			if !keepGoing {
				os.Exit(1)
			}
			continue
		}
		suffix := ""
		if r.note != "" {
			suffix = " - " + r.note
		}
		fmt.Printf("ok   %s (%.2fs)%s\n", ch.name, time.Since(started).Seconds(), suffix)
	}
	if len(failed) > 0 {
		fmt.Printf("%d check(s) failed: %s\n", len(failed), strings.Join(failed, ", "))
		os.Exit(1)
	}
	fmt.Println("all pgx checks passed")
}
