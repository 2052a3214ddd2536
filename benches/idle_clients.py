#!/usr/bin/env python3
"""Idle-client driver for benches/pool.sh: many idle clients on one proxy port.

1. reads the proxy's resident memory (VmRSS of --pid) and counts the server
   connections it holds to each --node-port (pg_stat_activity rows on --db
   whose client port is one of the proxy's sockets, from /proc);
2. opens --clients connections to --port (at most --concurrency logins in
   flight at once), each logging in as --user with SCRAM-SHA-256 (md5 and
   trust work too) and then sitting idle;
3. waits --settle seconds, reads VmRSS and the server connections again;
4. has the first --burst of those clients send one statement (--sql; `{n}`
   in it becomes a per-client number) at the same moment, and waits for every
   answer (or error, or --timeout);
5. reads VmRSS and the server connections once more, then closes every
   client.

With --metrics-url (pgsplit's /metrics) it also reports, per phase, the
internal queries pgsplit sent by kind, requests that waited for a pooled
server connection, and (burst) statements by target.

It speaks the wire protocol itself (asyncio streams, no driver), so a client
costs the proxy exactly one login and, in the burst, one simple Query; there
is no statement cache to be fair about. The SCRAM salted password is computed
once per (salt, iterations) and reused, so the driver's own CPU stays small.

Results go to stdout as `key=value` lines (pool.sh turns them into CSV);
progress and error samples go to stderr. Exit status 0 even when clients
failed: the counts are the result.
"""

import argparse
import asyncio
import base64
import collections
import hashlib
import hmac
import os
import resource
import struct
import sys
import time
import urllib.request


class PgError(Exception):
    """An ErrorResponse from the server (or a protocol surprise)."""


def error_text(body):
    """SQLSTATE and message of an ErrorResponse body."""
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[part[:1]] = part[1:].decode("utf-8", "replace")
    return "%s %s" % (fields.get(b"C", "?"), fields.get(b"M", "?"))


def message(kind, body):
    return kind + struct.pack("!I", len(body) + 4) + body


_salted = {}


def salted_password(password, salt, iterations):
    key = (password, salt, iterations)
    if key not in _salted:
        _salted[key] = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return _salted[key]


class Client:
    """One connection, logged in, able to run a simple Query."""

    def __init__(self):
        self.reader = None
        self.writer = None
        self.expected = None  # SCRAM: (salted password, auth message)

    async def read_message(self):
        header = await self.reader.readexactly(5)
        kind, length = header[:1], struct.unpack("!I", header[1:])[0]
        body = await self.reader.readexactly(length - 4) if length > 4 else b""
        return kind, body

    async def connect(self, host, port, user, password, database):
        self.reader, self.writer = await asyncio.open_connection(host, port)
        params = b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
        body = struct.pack("!I", 196608) + params
        self.writer.write(struct.pack("!I", len(body) + 4) + body)
        await self.writer.drain()
        nonce = first_bare = None
        salted = None
        while True:
            kind, body = await self.read_message()
            if kind == b"E":
                raise PgError(error_text(body))
            if kind == b"Z":
                return
            if kind != b"R":
                continue  # ParameterStatus, BackendKeyData, NoticeResponse
            code = struct.unpack("!I", body[:4])[0]
            if code == 0:
                continue
            if code == 3:
                self.writer.write(message(b"p", password.encode() + b"\0"))
            elif code == 5:
                inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                self.writer.write(message(b"p", b"md5" + outer.encode() + b"\0"))
            elif code == 10:
                if b"SCRAM-SHA-256\0" not in body[4:]:
                    raise PgError("server offers no SCRAM-SHA-256")
                nonce = base64.b64encode(os.urandom(18)).decode()
                first_bare = "n=,r=" + nonce
                data = ("n,," + first_bare).encode()
                self.writer.write(
                    message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(data)) + data)
                )
            elif code == 11:
                server_first = body[4:].decode()
                attrs = dict(a.split("=", 1) for a in server_first.split(","))
                if not attrs["r"].startswith(nonce):
                    raise PgError("SCRAM: server nonce does not extend ours")
                salted = salted_password(password, base64.b64decode(attrs["s"]), int(attrs["i"]))
                client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
                stored_key = hashlib.sha256(client_key).digest()
                without_proof = "c=biws,r=" + attrs["r"]
                auth_message = ",".join((first_bare, server_first, without_proof)).encode()
                signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
                proof = bytes(a ^ b for a, b in zip(client_key, signature))
                final = without_proof + ",p=" + base64.b64encode(proof).decode()
                self.expected = (salted, auth_message)
                self.writer.write(message(b"p", final.encode()))
            elif code == 12:
                salted, auth_message = self.expected
                server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
                want = hmac.new(server_key, auth_message, hashlib.sha256).digest()
                got = body[4:].decode().split("v=", 1)[-1]
                if base64.b64decode(got) != want:
                    raise PgError("SCRAM: bad server signature")
                continue
            else:
                raise PgError("unsupported authentication request %d" % code)
            await self.writer.drain()

    async def query(self, sql):
        """Runs a simple Query; returns the rows (lists of text or None)."""
        self.writer.write(message(b"Q", sql.encode() + b"\0"))
        await self.writer.drain()
        rows, error = [], None
        while True:
            kind, body = await self.read_message()
            if kind == b"D":
                n = struct.unpack("!H", body[:2])[0]
                pos, row = 2, []
                for _ in range(n):
                    size = struct.unpack("!i", body[pos : pos + 4])[0]
                    pos += 4
                    if size < 0:
                        row.append(None)
                    else:
                        row.append(body[pos : pos + size].decode())
                        pos += size
                rows.append(row)
            elif kind == b"E":
                error = error_text(body)
            elif kind == b"Z":
                if error:
                    raise PgError(error)
                return rows

    def close(self):
        if self.writer is not None:
            try:
                self.writer.write(message(b"X", b""))
                self.writer.close()
            except Exception:  # already gone
                pass


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def proxy_local_ports(pid, node_ports):
    """For each node port, the local ports of the proxy's established TCP
    connections to it (the proxy's sockets from /proc/PID/fd, their
    addresses from /proc/PID/net/tcp{,6})."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = {p: set() for p in node_ports}
    for name in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, name)) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, remote, state, inode = parts[1], parts[2], parts[3], parts[9]
            if state != "01" or inode not in inodes:  # 01: ESTABLISHED
                continue
            rport = int(remote.rsplit(":", 1)[1], 16)
            if rport in ports:
                ports[rport].add(int(local.rsplit(":", 1)[1], 16))
    return ports


async def server_connections(args):
    """The proxy's server connections per node port, as pg_stat_activity on
    each node shows them: client backends on --db whose client port is one of
    the proxy's sockets to that node. Pool connections only (the health
    probes and the position poller use other databases)."""
    mine = proxy_local_ports(args.pid, args.node_ports)
    counts = []
    for port in args.node_ports:
        c = Client()
        await c.connect(args.host, port, args.admin_user, "", args.db)
        rows = await c.query(
            "SELECT client_port FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND datname = '%s' AND client_port IS NOT NULL" % args.db
        )
        c.close()
        counts.append(sum(1 for r in rows if int(r[0]) in mine[port]))
    return counts


def scrape(url):
    """pgsplit's /metrics as {(name, labels): value}; {} without a URL."""
    if not url:
        return {}
    samples = {}
    with urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            key, value = line.rsplit(" ", 1)
            name, _, labels = key.partition("{")
            samples[(name, "{" + labels if labels else "")] = float(value)
    return samples


def delta(before, after, name, **labels):
    """Sum over samples of `name` with all `labels`, after minus before."""
    want = ['%s="%s"' % kv for kv in labels.items()]

    def total(samples):
        return sum(v for (n, l), v in samples.items() if n == name and all(w in l for w in want))

    return total(after) - total(before)


def by_label(before, after, name, label):
    """`label=count` pairs of the deltas of `name` by `label`, ;-separated."""
    values = set()
    for n, l in list(before) + list(after):
        if n == name and (label + '="') in l:
            values.add(l.split(label + '="', 1)[1].split('"', 1)[0])
    parts = []
    for v in sorted(values):
        d = delta(before, after, name, **{label: v})
        if d:
            parts.append("%s:%d" % (v, d))
    return ";".join(parts) or "-"


def out(key, value):
    print("%s=%s" % (key, value), flush=True)


async def main(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    need = args.clients + 64
    if hard < need:
        print("idle_clients: RLIMIT_NOFILE hard limit %d < %d needed" % (hard, need), file=sys.stderr)

    out("label", args.label)
    out("clients_wanted", args.clients)
    out("rss_before_kib", rss_kib(args.pid))
    out("server_conns_before", "/".join(map(str, await server_connections(args))))

    clients = []
    errors = collections.Counter()
    gate = asyncio.Semaphore(args.concurrency)

    async def login():
        async with gate:
            c = Client()
            try:
                await asyncio.wait_for(
                    c.connect(args.host, args.port, args.user, args.password, args.db),
                    args.timeout,
                )
                clients.append(c)
            except Exception as e:  # counted, not fatal
                errors["%s: %s" % (type(e).__name__, e)] += 1
                c.close()

    m0 = scrape(args.metrics_url)
    start = time.monotonic()
    tasks = [asyncio.ensure_future(login()) for _ in range(args.clients)]
    last = start
    while not all(t.done() for t in tasks):
        await asyncio.sleep(0.5)
        if time.monotonic() - last >= 5:
            last = time.monotonic()
            print(
                "idle_clients[%s]: %d connected, %d failed after %.0f s"
                % (args.label, len(clients), sum(errors.values()), last - start),
                file=sys.stderr,
            )
    await asyncio.gather(*tasks)
    connect_s = time.monotonic() - start
    out("connected", len(clients))
    out("connect_failed", sum(errors.values()))
    out("connect_s", "%.2f" % connect_s)
    for text, n in errors.most_common(3):
        print("idle_clients[%s]: login failed %d x: %s" % (args.label, n, text), file=sys.stderr)

    await asyncio.sleep(args.settle)
    m1 = scrape(args.metrics_url)
    if m1:
        out("login_internal_queries", by_label(m0, m1, "pgsplit_internal_queries_total", "kind"))
        out("login_pool_waits", "%d" % delta(m0, m1, "pgsplit_pool_wait_seconds_count"))
    rss_idle = rss_kib(args.pid)
    out("rss_idle_kib", rss_idle)
    out("server_conns_idle", "/".join(map(str, await server_connections(args))))

    burst = clients[: args.burst]
    burst_errors = collections.Counter()

    async def one(i, c):
        try:
            await asyncio.wait_for(c.query(args.sql.replace("{n}", str(i + 1))), args.timeout)
            return True
        except Exception as e:
            burst_errors["%s: %s" % (type(e).__name__, e)] += 1
            return False

    start = time.monotonic()
    results = await asyncio.gather(*(one(i, c) for i, c in enumerate(burst)))
    burst_s = time.monotonic() - start
    out("burst_clients", len(burst))
    out("burst_ok", sum(results))
    out("burst_failed", len(burst) - sum(results))
    out("burst_s", "%.3f" % burst_s)
    for text, n in burst_errors.most_common(3):
        print("idle_clients[%s]: statement failed %d x: %s" % (args.label, n, text), file=sys.stderr)
    m2 = scrape(args.metrics_url)
    if m2:
        out("burst_statements", by_label(m1, m2, "pgsplit_statements_total", "target"))
        out("burst_pool_waits", "%d" % delta(m1, m2, "pgsplit_pool_wait_seconds_count"))
        out("burst_internal_queries", by_label(m1, m2, "pgsplit_internal_queries_total", "kind"))
    out("rss_after_burst_kib", rss_kib(args.pid))
    out("server_conns_after_burst", "/".join(map(str, await server_connections(args))))

    for c in clients:
        c.close()
    await asyncio.sleep(0.2)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--label", default="proxy")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="the proxy port")
    p.add_argument("--pid", type=int, required=True, help="the proxy process (for VmRSS)")
    p.add_argument("--node-ports", type=lambda s: [int(x) for x in s.split()], required=True,
                   help="PostgreSQL ports, space-separated, for pg_stat_activity")
    p.add_argument("--metrics-url", default="", help="pgsplit's /metrics, read around each phase")
    p.add_argument("--admin-user", default="postgres", help="user for pg_stat_activity (trust)")
    p.add_argument("--user", default="app")
    p.add_argument("--password", default="app")
    p.add_argument("--db", default="app")
    p.add_argument("--clients", type=int, default=10000)
    p.add_argument("--burst", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=200, help="logins in flight at once")
    p.add_argument("--settle", type=float, default=2.0, help="seconds idle before measuring")
    p.add_argument("--timeout", type=float, default=60.0, help="per login / per statement")
    p.add_argument("--sql", default="SELECT 1")
    asyncio.run(main(p.parse_args()))
