#!/usr/bin/env node
// node-postgres (pg) through pgsplit: the driver used as-is, only the port changes.
//
// Reads PGSPLIT_RW_PORT and PGSPLIT_RO_PORT (host 127.0.0.1, user/password app,
// database app). Prints one line per check; on the first failure prints what
// went wrong and exits 1. Exits 2 if pg / pg-copy-streams are not installed.
//
// DRIVER_CHECKS_KEEP_GOING=1 runs every check and reports all failures;
// DRIVER_CHECKS_ONLY=name,name runs the checks whose names contain one of them.
'use strict'

let pg, copyFrom, copyTo
try {
  pg = require('pg')
  ;({ from: copyFrom, to: copyTo } = require('pg-copy-streams'))
} catch (e) {
  console.error(
    `node-postgres is not installed (${e.message.split('\n')[0]}); install it with ` +
      '`npm ci --prefix tests/drivers` (or run tests/drivers/install.sh)'
  )
  process.exit(2)
}
const { Readable, Writable } = require('node:stream')
const { pipeline } = require('node:stream/promises')

const HOST = '127.0.0.1'
const CHECK_TIMEOUT_MS = Number(process.env.DRIVER_CHECK_TIMEOUT || 60) * 1000
const P = 'drv_node_' // prefix of every object this script creates

function port(name) {
  const v = process.env[name]
  if (!v) {
    console.error(`${name} is not set`)
    process.exit(2)
  }
  return Number(v)
}
const RW = port('PGSPLIT_RW_PORT')
const RO = port('PGSPLIT_RO_PORT')

class CheckFailed extends Error {}

function expect(cond, message) {
  if (!cond) throw new CheckFailed(message)
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b)
}

function config(p, extra = {}) {
  return {
    host: HOST,
    port: p,
    user: 'app',
    password: 'app',
    database: 'app',
    connectionTimeoutMillis: 10000,
    ...extra,
  }
}

// Opens a client, runs fn(client), always closes it.
async function withClient(p, fn, extra = {}) {
  const client = new pg.Client(config(p, extra))
  // An error event with no listener would crash the process; record it.
  client.on('error', (e) => {
    client.lastError = e
  })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end().catch(() => {})
  }
}

// Runs fn, which must reject with a database error; returns the error.
async function failure(fn) {
  try {
    await fn()
  } catch (e) {
    return e
  }
  throw new CheckFailed('the statement succeeded but an error was expected')
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function eventually(what, cond, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      if (await cond()) return
    } catch (e) {
      // not yet
    }
    if (Date.now() > deadline) throw new CheckFailed(`timed out waiting for ${what}`)
    await sleep(100)
  }
}

// ---------------------------------------------------------------------------
// checks

async function checkConnectAndSimpleQuery() {
  await withClient(RW, async (c) => {
    expect(c.processID, 'no BackendKeyData pid')
    const r = await c.query("SELECT 1 AS one, 'two' AS two")
    expect(same(r.rows, [{ one: 1, two: 'two' }]), `SELECT returned ${JSON.stringify(r.rows)}`)
    // No values: pg sends a simple Query, which may hold several statements.
    // On the read-write port a question about the server itself is the
    // primary's: the message goes there, and says it is not in recovery.
    const multi = await c.query('SELECT 1 AS a; SELECT 2 AS b, 3 AS c; SELECT pg_is_in_recovery() AS rec')
    expect(Array.isArray(multi) && multi.length === 3, 'multi-statement Query did not return 3 results')
    expect(
      same(
        multi.map((m) => m.rows),
        [[{ a: 1 }], [{ b: 2, c: 3 }], [{ rec: false }]]
      ),
      `multi-statement results ${JSON.stringify(multi.map((m) => m.rows))}`
    )
    const status = []
    c.connection.on('parameterStatus', (m) => status.push(m))
    await c.query("SET application_name = 'drv_node_check'")
    expect(
      status.some((m) => m.parameterName === 'application_name' && m.parameterValue === 'drv_node_check'),
      'ParameterStatus for application_name not relayed'
    )
  })
}

async function checkSchema() {
  await withClient(RW, async (c) => {
    await c.query(`DROP TABLE IF EXISTS ${P}items, ${P}copy, ${P}tx, ${P}uniq`)
    await c.query(`CREATE TABLE ${P}items (id int PRIMARY KEY, name text, n bigint)`)
    await c.query(`CREATE TABLE ${P}copy (id int, name text, score float8)`)
    await c.query(`CREATE TABLE ${P}tx (id int)`)
    await c.query(`CREATE TABLE ${P}uniq (id int PRIMARY KEY)`)
  })
}

async function checkParameterized() {
  await withClient(RW, async (c) => {
    for (let i = 1; i <= 50; i++) {
      await c.query(`INSERT INTO ${P}items (id, name, n) VALUES ($1, $2, $3)`, [i, `name ${i}`, String(i * 1e12)])
    }
    const r = await c.query(`SELECT name, n FROM ${P}items WHERE id = $1`, [3])
    expect(same(r.rows, [{ name: 'name 3', n: '3000000000000' }]), `parameterized SELECT: ${JSON.stringify(r.rows)}`)
    const arr = await c.query({ text: 'SELECT $1::int + 1 AS x, $2::text AS y', values: [41, 'hi'], rowMode: 'array' })
    expect(same(arr.rows, [[42, 'hi']]), `rowMode array: ${JSON.stringify(arr.rows)}`)
    const big = 'x'.repeat(3 * 1024 * 1024)
    const len = await c.query('SELECT length($1::text) AS n', [big])
    expect(len.rows[0].n === big.length, '3 MiB parameter mangled')
    const bin = await c.query({ text: 'SELECT $1::bytea AS b', values: [Buffer.from([0, 1, 255])] })
    expect(Buffer.compare(bin.rows[0].b, Buffer.from([0, 1, 255])) === 0, 'bytea round trip')
    const sum = await c.query(`SELECT count(*)::int AS c, sum(id)::int AS s FROM ${P}items`)
    expect(same(sum.rows, [{ c: 50, s: 1275 }]), `after inserts: ${JSON.stringify(sum.rows)}`)
  })
}

async function checkNamedQueries() {
  await withClient(RW, async (c) => {
    for (let i = 1; i <= 6; i++) {
      const r = await c.query({
        name: 'drv_node_get_item',
        text: `SELECT id, name FROM ${P}items WHERE id = $1`,
        values: [i],
      })
      expect(same(r.rows, [{ id: i, name: `name ${i}` }]), `named query run ${i}: ${JSON.stringify(r.rows)}`)
    }
    // Through the read-write port the read ran on a replica and the UPDATEs
    // below run on the primary: each is prepared where it ran, and
    // pg_prepared_statements is per server. Ask the replica now (a read,
    // before this session writes), the primary after the UPDATEs.
    const onReplica = await c.query('SELECT name, statement FROM pg_prepared_statements')
    for (let i = 1; i <= 3; i++) {
      const r = await c.query({
        name: 'drv_node_bump',
        text: `UPDATE ${P}items SET n = n + $1 WHERE id = $2 RETURNING n`,
        values: [1, i],
      })
      expect(r.rowCount === 1, `named UPDATE run ${i}`)
    }
    const onPrimary = await c.query('/* pgsplit:primary */ SELECT name, statement FROM pg_prepared_statements')
    // pgsplit shares prepared statements between sessions on a server
    // connection, under names of its own: look for the statements' text.
    const texts = onReplica.rows.concat(onPrimary.rows).map((r) => r.statement)
    expect(
      texts.some((t) => t.includes(`${P}items WHERE id = $1`)) &&
        texts.some((t) => t.includes(`UPDATE ${P}items SET n = n + $1`)),
      `named statements not prepared on the server: ${JSON.stringify(texts)}`
    )
    // binary result format with a named statement
    const b = await c.query({
      name: 'drv_node_bin',
      text: 'SELECT $1::int4 AS i, $2::text AS t',
      values: [7, 'bin'],
      binary: true,
    })
    expect(b.rows[0].i === 7 && String(b.rows[0].t) === 'bin', `binary results: ${JSON.stringify(b.rows)}`)
  })
}

async function checkPipelining() {
  await withClient(
    RW,
    async (c) => {
      // Everything is written before any result is read.
      const promises = []
      for (let i = 0; i < 100; i++) {
        promises.push(c.query('SELECT $1::int * 2 AS v', [i]))
      }
      promises.push(c.query(`INSERT INTO ${P}items (id, name, n) VALUES ($1, $2, $3) RETURNING id`, [100, 'p', 1]))
      promises.push(c.query(`SELECT count(*)::int AS c FROM ${P}items WHERE id >= $1`, [100]))
      promises.push(c.query({ name: 'drv_node_pipe', text: 'SELECT $1::text AS t', values: ['a'] }))
      promises.push(c.query({ name: 'drv_node_pipe', text: 'SELECT $1::text AS t', values: ['b'] }))
      promises.push(c.query('SELECT 1 AS simple'))
      const results = await Promise.all(promises)
      const doubled = results.slice(0, 100).map((r) => r.rows[0].v)
      expect(same(doubled, [...Array(100).keys()].map((i) => i * 2)), 'pipelined results out of order or wrong')
      expect(results[100].rows[0].id === 100, 'pipelined INSERT RETURNING')
      expect(results[101].rows[0].c === 1, 'pipelined SELECT did not see the INSERT')
      expect(results[102].rows[0].t === 'a' && results[103].rows[0].t === 'b', 'pipelined named queries')
      expect(results[104].rows[0].simple === 1, 'pipelined simple query')
      // An error in the middle fails only its own query.
      const mixed = await Promise.allSettled([
        c.query('SELECT 1 AS x'),
        c.query(`INSERT INTO ${P}items (id, name, n) VALUES ($1, 'dup', 0)`, [100]),
        c.query('SELECT 3 AS x'),
      ])
      expect(mixed[0].status === 'fulfilled' && mixed[0].value.rows[0].x === 1, 'query before the error')
      expect(mixed[1].status === 'rejected' && mixed[1].reason.code === '23505', `error in pipeline: ${mixed[1].reason}`)
      expect(mixed[2].status === 'fulfilled' && mixed[2].value.rows[0].x === 3, 'query after the error')
    },
    { pipeline: true }
  )
}

async function checkCopy() {
  const N = 20000
  const line = (i) => `${i}\tname ${i} with \\t tab\t${i / 4}\n`
  await withClient(RW, async (c) => {
    const source = Readable.from(
      (function* () {
        for (let i = 0; i < N; i += 500) {
          let chunk = ''
          for (let j = i; j < Math.min(N, i + 500); j++) chunk += line(j)
          yield Buffer.from(chunk)
        }
      })()
    )
    const sink = c.query(copyFrom(`COPY ${P}copy (id, name, score) FROM STDIN`))
    await pipeline(source, sink)
    expect(sink.rowCount === N, `COPY FROM reported ${sink.rowCount} rows`)
    const r = await c.query(`SELECT count(*)::int AS c, sum(id)::bigint AS s FROM ${P}copy`)
    expect(r.rows[0].c === N && r.rows[0].s === String((N * (N - 1)) / 2), `COPY FROM stored ${JSON.stringify(r.rows)}`)
    const t = await c.query(`SELECT name FROM ${P}copy WHERE id = 7`)
    expect(t.rows[0].name === 'name 7 with \t tab', `escaped tab: ${JSON.stringify(t.rows)}`)

    const chunks = []
    const out = c.query(copyTo(`COPY (SELECT id, name, score FROM ${P}copy ORDER BY id) TO STDOUT`))
    await pipeline(
      out,
      new Writable({
        write(chunk, _enc, cb) {
          chunks.push(chunk)
          cb()
        },
      })
    )
    const text = Buffer.concat(chunks).toString()
    let expected = ''
    for (let i = 0; i < N; i++) expected += line(i)
    expect(text.length === expected.length, `COPY TO returned ${text.length} bytes, expected ${expected.length}`)
    expect(text === expected, 'COPY TO data differs')
    expect(out.rowCount === N, `COPY TO reported ${out.rowCount} rows`)
    expect((await c.query('SELECT 1 AS x')).rows[0].x === 1, 'unusable after COPY')
    // bad data: the server's error arrives while the client is still sending
    const bad = Readable.from(
      (function* () {
        yield Buffer.from('1\nnot a number\n')
        for (let i = 0; i < 200; i++) yield Buffer.from('2\n'.repeat(1000))
      })()
    )
    const e = await failure(() => pipeline(bad, c.query(copyFrom(`COPY ${P}copy (id) FROM STDIN`))))
    expect(e.code === '22P02', `bad COPY data gave ${e.code}: ${e.message}`)
    expect((await c.query('SELECT 2 AS x')).rows[0].x === 2, 'unusable after failed COPY')
    const n = await c.query(`SELECT count(*)::int AS c FROM ${P}copy`)
    expect(n.rows[0].c === N, `failed COPY left rows behind: ${n.rows[0].c}`)
  })
}

// Waits until a statement containing `marker` runs on the primary. A cancel
// sent before the server has read the query would be lost, which would make
// the check flaky rather than wrong.
async function waitUntilRunning(marker) {
  await withClient(RW, async (w) => {
    const deadline = Date.now() + 15000
    while (Date.now() < deadline) {
      // Both this watcher and the watched query carry a primary hint: on the
      // read-write port a plain read may run on either replica.
      const r = await w.query(
        "/* pgsplit:primary */ SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
        [`%${marker}%`]
      )
      if (r.rows[0].n > 0) return
      await sleep(50)
    }
    throw new CheckFailed(`statement ${marker} never showed up as running`)
  })
}

async function checkCancel() {
  await withClient(RW, async (c) => {
    const marker = `drv_node_cancel_${process.pid}_${Date.now()}`
    const q = new pg.Query(`/* pgsplit:primary */ SELECT pg_sleep(30) /* ${marker} */`)
    const done = new Promise((resolve) => {
      c.query(q, (err, res) => resolve({ err, res, at: Date.now() }))
    })
    await waitUntilRunning(marker)
    const sent = Date.now()
    // node-postgres sends the CancelRequest on a new connection to the same host and port.
    new pg.Client(config(RW)).cancel(c, q)
    const { err, at } = await done
    const took = (at - sent) / 1000
    expect(err, 'pg_sleep(30) ran to its end: the cancel had no effect')
    expect(err.code === '57014', `cancel gave ${err.code}: ${err.message}`)
    expect(took < 5, `the query ended ${took}s after the cancel`)
    const r = await c.query("SELECT 'still here' AS s")
    expect(r.rows[0].s === 'still here', 'unusable after cancel')
  })
}

async function checkListenNotify() {
  await withClient(RW, async (listener) => {
    await withClient(RW, async (sender) => {
      const got = []
      let wake = () => {}
      listener.on('notification', (m) => {
        got.push([m.channel, m.payload])
        wake()
      })
      const waitFor = async (n) => {
        const deadline = Date.now() + 10000
        while (got.length < n && Date.now() < deadline) {
          await new Promise((r) => {
            wake = r
            setTimeout(r, 200)
          })
        }
      }
      await listener.query(`LISTEN ${P}chan`)
      await sender.query(`NOTIFY ${P}chan, 'hello from node'`)
      await sender.query('SELECT pg_notify($1, $2)', [`${P}chan`, 'second payload'])
      // the listener sends nothing: notifications must arrive while it idles
      await waitFor(2)
      expect(
        same(got, [
          [`${P}chan`, 'hello from node'],
          [`${P}chan`, 'second payload'],
        ]),
        `notifications received: ${JSON.stringify(got)}`
      )
      await listener.query(`UNLISTEN ${P}chan`)
    })
  })
}

async function checkTransactionRollback() {
  await withClient(RW, async (c) => {
    await c.query('BEGIN')
    await c.query(`INSERT INTO ${P}tx VALUES ($1)`, [1])
    await c.query('COMMIT')
    await c.query('BEGIN')
    await c.query(`INSERT INTO ${P}tx VALUES ($1)`, [2])
    const inside = await c.query(`SELECT count(*)::int AS c FROM ${P}tx`)
    expect(inside.rows[0].c === 2, 'row not visible inside its transaction')
    await c.query('ROLLBACK')
    await c.query('BEGIN')
    await c.query(`INSERT INTO ${P}tx VALUES (3)`)
    await c.query('SAVEPOINT s1')
    await c.query(`INSERT INTO ${P}tx VALUES (4)`)
    await c.query('ROLLBACK TO SAVEPOINT s1')
    await c.query('COMMIT')
    // Read in this session: read-your-writes holds within a session; another
    // session may read a replica that has not replayed it yet.
    const r = await c.query(`SELECT id FROM ${P}tx ORDER BY id`)
    expect(same(r.rows.map((x) => x.id), [1, 3]), `after commit/rollback table holds ${JSON.stringify(r.rows)}`)
  })
}

async function checkErrors() {
  await withClient(RW, async (c) => {
    await c.query(`INSERT INTO ${P}uniq VALUES (1)`)
    let e = await failure(() => c.query(`INSERT INTO ${P}uniq VALUES ($1)`, [1]))
    expect(e.code === '23505', `duplicate key gave ${e.code}: ${e.message}`)
    expect(e.constraint === `${P}uniq_pkey`, `constraint ${e.constraint}`)
    expect((await c.query('SELECT 1 AS x')).rows[0].x === 1, 'unusable after 23505')
    e = await failure(() => c.query(`INSERT INTO ${P}uniq VALUES (1)`))
    expect(e.code === '23505', `duplicate key (simple query) gave ${e.code}`)
    e = await failure(() => c.query('SELECT 1/0'))
    expect(e.code === '22012', `division by zero gave ${e.code}`)
    e = await failure(() => c.query('SELEC 1'))
    expect(e.code === '42601', `syntax error gave ${e.code}`)
    e = await failure(() => c.query({ name: 'drv_node_bad', text: `SELECT * FROM ${P}missing WHERE x = $1`, values: [1] }))
    expect(e.code === '42P01', `missing table gave ${e.code}`)
    await c.query('BEGIN')
    e = await failure(() => c.query(`INSERT INTO ${P}uniq VALUES ($1)`, [1]))
    expect(e.code === '23505', `duplicate key in tx gave ${e.code}`)
    e = await failure(() => c.query('SELECT 1'))
    expect(e.code === '25P02', `statement in failed tx gave ${e.code}`)
    await c.query('ROLLBACK')
    const notices = []
    c.on('notice', (n) => notices.push(n.message))
    await c.query("DO $$ BEGIN RAISE NOTICE 'drv_node notice'; END $$")
    expect(same(notices, ['drv_node notice']), `notices: ${JSON.stringify(notices)}`)
    expect((await c.query('SELECT 2 AS x')).rows[0].x === 2, 'unusable after errors')
  })
}

async function checkLargeResult() {
  await withClient(RW, async (c) => {
    const r = await c.query({
      text: "SELECT g, repeat('y', 100) AS s FROM generate_series(1, $1::int) g",
      values: [200000],
      rowMode: 'array',
    })
    expect(r.rows.length === 200000, `got ${r.rows.length} rows`)
    let total = 0
    for (const [g, s] of r.rows) {
      total += g
      if (s.length !== 100) throw new CheckFailed('row payload mangled')
    }
    expect(total === (200000 * 200001) / 2, 'row values wrong')
    const big = await c.query("SELECT repeat('z', 5 * 1024 * 1024) AS z")
    expect(big.rows[0].z.length === 5 * 1024 * 1024, '5 MiB value mangled')
  })
}

async function checkReadOnlyPort() {
  await withClient(RO, async (c) => {
    const rec = await c.query('SELECT pg_is_in_recovery() AS r')
    expect(rec.rows[0].r === true, 'read-only port did not reach a replica')
    // Wait until the table created through the read-write port is on the
    // replica, so the INSERT fails for being read-only, not for a missing table.
    await eventually(`${P}items on the replica`, async () => {
      const r = await c.query(`SELECT count(*)::int AS c FROM ${P}items WHERE id = $1`, [1])
      return r.rows[0].c === 1
    })
    let e = await failure(() => c.query(`INSERT INTO ${P}items (id, name, n) VALUES ($1, 'ro', 0)`, [9999]))
    expect(e.code === '25006', `INSERT on read-only port gave ${e.code}: ${e.message}`)
    e = await failure(() => c.query(`CREATE TABLE ${P}nope (x int)`))
    expect(e.code === '25006', `CREATE TABLE on read-only port gave ${e.code}`)
    for (let i = 1; i <= 3; i++) {
      const r = await c.query({ name: 'drv_node_ro_get', text: `SELECT name FROM ${P}items WHERE id = $1`, values: [i] })
      expect(same(r.rows, [{ name: `name ${i}` }]), `named query on replica: ${JSON.stringify(r.rows)}`)
    }
    const chunks = []
    await pipeline(
      c.query(copyTo(`COPY (SELECT id FROM ${P}items WHERE id <= 3 ORDER BY id) TO STDOUT`)),
      new Writable({
        write(chunk, _enc, cb) {
          chunks.push(chunk)
          cb()
        },
      })
    )
    expect(Buffer.concat(chunks).toString() === '1\n2\n3\n', 'COPY TO on replica')
    expect((await c.query('SELECT 1 AS x')).rows[0].x === 1, 'unusable after 25006')
  })
}

async function checkStartupParameters() {
  await withClient(
    RW,
    async (c) => {
      const r = await c.query(
        "SELECT current_setting('statement_timeout') AS st, current_setting('application_name') AS app, current_user AS u"
      )
      expect(same(r.rows, [{ st: '4321ms', app: 'drv_node_app', u: 'app' }]), `startup parameters: ${JSON.stringify(r.rows)}`)
    },
    { application_name: 'drv_node_app', statement_timeout: 4321 }
  )
}

// Several big statements in flight at once: the server answers the first while
// the client is still sending the next ones. A relay that stops reading the
// server while its write to the server is blocked deadlocks here (the server
// does not read while it is blocked writing).
async function checkLargePipelinedStatements() {
  await withClient(
    RW,
    async (c) => {
      const size = 8 * 1000 * 1000
      const big = 'x'.repeat(size)
      const rs = await Promise.all([0, 1, 2, 3].map(() => c.query('SELECT $1::text AS t', [big])))
      const lengths = rs.map((r) => r.rows[0].t.length)
      expect(same(lengths, [size, size, size, size]), `lengths ${JSON.stringify(lengths)}`)
    },
    { pipeline: true }
  )
}

// The server ends an idle session (idle_session_timeout). Without pgsplit the
// client gets the FATAL (57P05) and must reconnect. A proxy may instead attach
// a new server connection, but then the session's state (SET values, named
// statements node-postgres believes are prepared, LISTEN) must still be there.
async function checkServerEndsIdleSession() {
  await withClient(RW, async (watcher) => {
    const c = new pg.Client(config(RW))
    let clientError = null
    c.on('error', (e) => {
      clientError = e
    })
    await c.connect()
    try {
      const named = (id) => ({ name: 'drv_node_idle', text: `SELECT name FROM ${P}items WHERE id = $1`, values: [id] })
      expect((await c.query(named(1))).rows[0].name === 'name 1', 'named query')
      await c.query("SET statement_timeout = '4242ms'")
      await c.query(`LISTEN ${P}idle_chan`)
      const pid = (await c.query('SELECT pg_backend_pid() AS p')).rows[0].p
      await c.query("SET idle_session_timeout = '300ms'")
      await eventually('the server to end the idle session', async () => {
        const r = await watcher.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [pid])
        return r.rows[0].n === 0
      })
      await sleep(300) // let a FATAL, if one is relayed, reach the client
      let row
      try {
        row = (await c.query(named(2))).rows[0]
      } catch (e) {
        const told = clientError || e
        if (told.code === '57P05' || /terminated|not queryable/i.test(told.message)) {
          return // as without pgsplit: the session ended and the client knows it
        }
        throw new CheckFailed(
          'pgsplit replaced the server connection without telling the client and the ' +
            `named statement node-postgres had prepared was lost: ${e.message} (SQLSTATE ${e.code})`
        )
      }
      expect(row && row.name === 'name 2', `named query after the server left: ${JSON.stringify(row)}`)
      const lost = []
      const st = (await c.query('SHOW statement_timeout')).rows[0].statement_timeout
      if (st !== '4242ms') lost.push(`SET statement_timeout (now ${st})`)
      const got = new Promise((resolve) => {
        c.once('notification', () => resolve(true))
        setTimeout(() => resolve(false), 3000)
      })
      await watcher.query(`NOTIFY ${P}idle_chan, 'after'`)
      if (!(await got)) lost.push('LISTEN')
      expect(
        !lost.length,
        `pgsplit replaced the server connection without telling the client; session state lost: ${lost.join(', ')}`
      )
    } finally {
      await c.end().catch(() => {})
    }
  })
}

async function checkPool() {
  const pool = new pg.Pool({ ...config(RW), max: 5 })
  pool.on('error', () => {})
  try {
    const results = await Promise.all(
      [...Array(40).keys()].map((i) => pool.query({ name: 'drv_node_pool', text: 'SELECT $1::int AS i', values: [i] }))
    )
    expect(
      same(
        results.map((r) => r.rows[0].i),
        [...Array(40).keys()]
      ),
      'pool results'
    )
  } finally {
    await pool.end()
  }
}

const CHECKS = [
  ['connect and simple query', checkConnectAndSimpleQuery],
  ['create tables', checkSchema],
  ['parameterized queries', checkParameterized],
  ['named (prepared) queries', checkNamedQueries],
  ['pipelining (pipeline: true)', checkPipelining],
  ['COPY FROM STDIN / TO STDOUT (pg-copy-streams)', checkCopy],
  ['cancel', checkCancel],
  ['LISTEN/NOTIFY', checkListenNotify],
  ['transaction rollback and savepoint', checkTransactionRollback],
  ['errors keep their SQLSTATE', checkErrors],
  ['large results', checkLargeResult],
  ['read-only port', checkReadOnlyPort],
  ['startup parameters', checkStartupParameters],
  ['server ends an idle session', checkServerEndsIdleSession],
  ['pool', checkPool],
  ['large pipelined statements (4 x 8 MB each way)', checkLargePipelinedStatements, 30],
]

async function main() {
  const keepGoing = process.env.DRIVER_CHECKS_KEEP_GOING === '1'
  const only = (process.env.DRIVER_CHECKS_ONLY || '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  const version = require('pg/package.json').version
  const copyVersion = require('pg-copy-streams/package.json').version
  console.log(`pg ${version}, pg-copy-streams ${copyVersion}, node ${process.version}; rw=${RW} ro=${RO}`)
  const failed = []
  for (const [name, fn, limitSeconds] of CHECKS) {
    const limitMs = limitSeconds ? limitSeconds * 1000 : CHECK_TIMEOUT_MS
    if (only.length && !only.some((o) => name.includes(o))) continue
    const started = Date.now()
    let timer
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new CheckFailed(`no answer within ${limitMs / 1000}s (hung)`)),
        limitMs
      )
    })
    try {
      await Promise.race([fn(), timeout])
      console.log(`ok   ${name} (${((Date.now() - started) / 1000).toFixed(2)}s)`)
    } catch (e) {
      let detail = e instanceof CheckFailed ? e.message : `${e.name}: ${e.message}`
      if (e.code) detail += ` (SQLSTATE ${e.code})`
      console.log(`FAIL ${name}: ${detail}`)
      if (!(e instanceof CheckFailed)) console.error(e.stack)
      failed.push(name)
      if (!keepGoing || /no answer within/.test(e.message)) process.exit(1)
    } finally {
      clearTimeout(timer)
    }
  }
  if (failed.length) {
    console.log(`${failed.length} check(s) failed: ${failed.join(', ')}`)
    process.exit(1)
  }
  console.log('all node-postgres checks passed')
  process.exit(0)
}

main().catch((e) => {
  console.log(`FAIL: ${e.stack || e}`)
  process.exit(1)
})
