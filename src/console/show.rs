//! The console's tables, built from what pgsplit already keeps: the
//! topology snapshot (`SHOW BACKENDS`), the pool and the client table
//! (`POOLS`, `CLIENTS`, `SERVERS`), the metrics exposition (`STATS`,
//! `ROUTING`), the configuration (`CONFIG`, secrets redacted), and the
//! router itself (`EXPLAIN ROUTE`). Nothing here blocks or talks to a
//! server.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::command::Item;
use super::Table;
use crate::clients::ClientRecord;
use crate::explain::{self, Context, Facts};
use crate::metrics::Sample;
use crate::router::{self, FunctionInfo};
use crate::shared::Shared;
use crate::topology::Role;

fn text(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

fn yes_no(b: bool) -> Option<String> {
    text(if b { "yes" } else { "no" })
}

/// The table for `SHOW item`.
pub(super) fn show(shared: &Shared, item: Item) -> Table {
    match item {
        Item::Help => help(),
        Item::Backends => backends(shared),
        Item::Pools => pools(shared),
        Item::Clients => clients(shared),
        Item::Servers => servers(shared),
        Item::Stats => stats(shared),
        Item::Routing => routing(shared),
        Item::Config => config(shared),
        Item::Version => {
            let mut t = Table::new(&["version"]);
            t.row(vec![text(concat!("pgsplit ", env!("CARGO_PKG_VERSION")))]);
            t
        }
    }
}

fn help() -> Table {
    let mut t = Table::new(&["command", "description"]);
    for (command, description) in [
        ("SHOW HELP", "this list"),
        ("SHOW BACKENDS", "each backend: role, health, lag, replay LSN, timeline, weight, in rotation and why not"),
        ("SHOW POOLS", "server connections per backend and login: active, idle, waiting, max"),
        ("SHOW CLIENTS", "each client session: listener, user, state, pins, server, statements, read-your-writes floor"),
        ("SHOW SERVERS", "each server connection: backend, login, state, the client using it"),
        ("SHOW STATS", "per listener and target: statements, bytes, average and p99 latency since start"),
        ("SHOW ROUTING", "statements by listener, target and routing reason since start"),
        ("SHOW CONFIG", "the running configuration, secrets redacted"),
        ("SHOW VERSION", "pgsplit's version"),
        ("EXPLAIN ROUTE <sql>", "where a fresh read-write session would send <sql>, and why, without running it"),
        ("PAUSE", "hold new transactions (and new server connections) until RESUME"),
        ("RESUME", "let them go"),
        ("RELOAD", "re-read the configuration file (as SIGHUP)"),
        ("DRAIN <backend>", "take a backend out of read rotation by hand"),
        ("UNDRAIN <backend>", "let it back"),
    ] {
        t.row(vec![text(command), text(description)]);
    }
    t
}

fn backends(shared: &Shared) -> Table {
    let snapshot = shared.topology.snapshot();
    let mut t = Table::new(&[
        "name",
        "address",
        "role",
        "healthy",
        "in_rotation",
        "drained",
        "reason",
        "lag_bytes",
        "lag_ms",
        "replay_lsn",
        "current_lsn",
        "timeline",
        "weight",
        "last_error",
    ]);
    for (i, b) in snapshot.backends.iter().enumerate() {
        let role = match b.role {
            Role::Primary if snapshot.primary == Some(i) => "primary",
            Role::Primary => "fenced",
            Role::Replica => "replica",
            Role::Unknown => "unknown",
        };
        t.row(vec![
            text(&b.name),
            text(&b.address),
            text(role),
            yes_no(b.healthy),
            yes_no(b.in_rotation),
            yes_no(b.drained),
            b.reason.clone(),
            b.lag_bytes.map(|v| v.to_string()),
            b.lag_ms.map(|v| v.to_string()),
            b.replay_lsn.map(|v| v.to_string()),
            b.current_lsn.map(|v| v.to_string()),
            b.timeline.map(|v| v.to_string()),
            text(b.weight),
            b.last_error.clone(),
        ]);
    }
    t
}

/// A login's pool key, for people: (database, user, other parameters,
/// read-only).
fn login_parts(key: &str) -> (String, String, String, bool) {
    let (mut database, mut user, mut others) = (String::new(), String::new(), Vec::new());
    let mut read_only = false;
    for part in key.split('\0').filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("database", v)) => database = v.to_owned(),
            Some(("user", v)) => user = v.to_owned(),
            Some(_) => others.push(part.to_owned()),
            None if part == "read_only" => read_only = true,
            None => others.push(part.to_owned()),
        }
    }
    (database, user, others.join(" "), read_only)
}

fn pools(shared: &Shared) -> Table {
    let clients = shared.clients.list();
    // Connections lent to sessions, by (backend, login).
    let mut active: BTreeMap<(String, &str), usize> = BTreeMap::new();
    for record in &clients {
        for (id, _) in record.servers().into_iter().flatten() {
            if let Some(name) = shared.clients.server_name(id) {
                *active
                    .entry((name.to_string(), &*record.login))
                    .or_default() += 1;
            }
        }
    }
    let mut t = Table::new(&[
        "backend",
        "database",
        "user",
        "params",
        "read_only",
        "active",
        "idle",
        "waiting",
        "open",
        "max",
    ]);
    for b in shared.pool.overview() {
        let mut logins: Vec<(&str, usize, usize)> = b
            .logins
            .iter()
            .map(|l| (&*l.login, l.idle, l.waiting))
            .collect();
        for ((backend, login), _) in active.range((b.backend.clone(), "")..) {
            if *backend != b.backend {
                break;
            }
            if !logins.iter().any(|(l, _, _)| l == login) {
                logins.push((login, 0, 0));
            }
        }
        for (login, idle, waiting) in logins {
            let (database, user, params, read_only) = login_parts(login);
            let lent = active
                .get(&(b.backend.clone(), login))
                .copied()
                .unwrap_or(0);
            t.row(vec![
                text(&b.backend),
                text(database),
                text(user),
                text(params),
                yes_no(read_only),
                text(lent),
                text(idle),
                text(waiting),
                text(b.open),
                text(b.max),
            ]);
        }
    }
    t
}

/// `2025-01-02 03:04:05 UTC` (the civil-from-days algorithm; no time zone
/// database needed).
pub(super) fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn floor_text(shared: &Shared, record: &ClientRecord) -> Option<String> {
    let (lsn, ago) = record.floor(&shared.clients);
    let mut parts = Vec::new();
    if let Some(ago) = ago {
        parts.push(format!("write committed {} ms ago", ago.as_millis()));
    }
    if let Some(lsn) = lsn {
        parts.push(format!("min_lsn {}", crate::topology::Lsn(lsn)));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn clients(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        "id",
        "listener",
        "address",
        "user",
        "database",
        "application_name",
        "connected_at",
        "state",
        "pinned",
        "server",
        "kept_server",
        "to_primary",
        "to_replica",
        "ryw_floor",
    ]);
    let name = |held: Option<(u16, u64)>| {
        held.and_then(|(id, _)| shared.clients.server_name(id))
            .map(|n| n.to_string())
    };
    for record in shared.clients.list() {
        let pins: Vec<&str> = record.pins().iter().map(|c| c.label()).collect();
        let [server, kept] = record.servers();
        let (to_primary, to_replica) = record.counts();
        let console = record.param("database") == Some(super::DATABASE) && record.login.is_empty();
        t.row(vec![
            text(record.id),
            text(record.listener.as_str()),
            text(record.peer),
            record.param("user").map(str::to_owned),
            record.param("database").map(str::to_owned),
            record.param("application_name").map(str::to_owned),
            text(utc(record.connected_at)),
            text(if console {
                "console"
            } else {
                record.state().as_str()
            }),
            text(if pins.is_empty() {
                "no".to_owned()
            } else {
                format!("yes: {}", pins.join(", "))
            }),
            name(server),
            name(kept),
            text(to_primary),
            text(to_replica),
            floor_text(shared, &record),
        ]);
    }
    t
}

fn servers(shared: &Shared) -> Table {
    let snapshot = shared.topology.snapshot();
    let address = |backend: &str| {
        snapshot
            .backends
            .iter()
            .find(|b| b.name == backend)
            .map(|b| b.address.clone())
    };
    let mut t = Table::new(&[
        "serial", "backend", "address", "database", "user", "state", "client", "idle_ms",
    ]);
    let mut rows: Vec<(u64, Vec<Option<String>>)> = Vec::new();
    for record in shared.clients.list() {
        let (database, user, _, _) = login_parts(&record.login);
        for ((id, serial), state) in record
            .servers()
            .into_iter()
            .zip(["active", "kept"])
            .filter_map(|(held, state)| held.map(|h| (h, state)))
        {
            let Some(backend) = shared.clients.server_name(id) else {
                continue;
            };
            rows.push((
                serial,
                vec![
                    text(serial),
                    text(&backend),
                    address(&backend),
                    text(&database),
                    text(&user),
                    text(state),
                    text(record.id),
                    None,
                ],
            ));
        }
    }
    for idle in shared.pool.idle_connections() {
        let (database, user, _, _) = login_parts(&idle.login);
        rows.push((
            idle.serial,
            vec![
                text(idle.serial),
                text(&idle.backend),
                text(idle.addr),
                text(database),
                text(user),
                text("idle"),
                None,
                text(idle.idle_for.as_millis()),
            ],
        ));
    }
    rows.sort_by_key(|(serial, _)| *serial);
    for (_, row) in rows {
        t.row(row);
    }
    t
}

/// The `q` quantile (0..1) of a cumulative histogram given as (upper
/// bound, count) pairs sorted by bound, interpolated within its bucket as
/// Prometheus' `histogram_quantile` does. None without observations;
/// infinity when it falls in the `+Inf` bucket.
pub(super) fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut below = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(f64::INFINITY);
            }
            let (lower, lower_count) = below;
            let share = if count > lower_count {
                (rank - lower_count) / (count - lower_count)
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * share);
        }
        below = (bound, count);
    }
    None
}

fn ms(seconds: f64) -> String {
    if seconds.is_infinite() {
        "> 10000".to_owned()
    } else {
        format!("{:.3}", seconds * 1000.0)
    }
}

fn stats(shared: &Shared) -> Table {
    let samples = shared.metrics.samples(&shared.topology.snapshot());
    let mut t = Table::new(&[
        "listener",
        "target",
        "statements",
        "bytes_sent",
        "bytes_received",
        "avg_ms",
        "p99_ms",
    ]);
    let sum = |pred: &dyn Fn(&Sample) -> bool| -> f64 {
        samples.iter().filter(|s| pred(s)).map(|s| s.value).sum()
    };
    for listener in ["read_write", "read_only"] {
        for target in ["primary", "replica"] {
            let of = |s: &Sample, name: &str| {
                s.name == name && s.label("listener") == listener && s.label("target") == target
            };
            let statements = sum(&|s| of(s, "pgsplit_statements_total"));
            let bytes = |direction: &str| {
                sum(&|s| of(s, "pgsplit_server_bytes_total") && s.label("direction") == direction)
            };
            let count = sum(&|s| of(s, "pgsplit_statement_duration_seconds_count"));
            let total = sum(&|s| of(s, "pgsplit_statement_duration_seconds_sum"));
            let mut buckets: Vec<(f64, f64)> = samples
                .iter()
                .filter(|s| of(s, "pgsplit_statement_duration_seconds_bucket"))
                .filter_map(|s| {
                    let le = s.label("le");
                    let bound = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().ok()?
                    };
                    Some((bound, s.value))
                })
                .collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            t.row(vec![
                text(listener),
                text(target),
                text(statements as u64),
                text(bytes("sent") as u64),
                text(bytes("received") as u64),
                (count > 0.0).then(|| ms(total / count)),
                quantile(0.99, &buckets).map(ms),
            ]);
        }
    }
    t
}

fn routing(shared: &Shared) -> Table {
    let samples = shared.metrics.samples(&shared.topology.snapshot());
    let mut t = Table::new(&["listener", "target", "reason", "statements"]);
    let mut rows: Vec<(&str, &str, &str, f64)> = samples
        .iter()
        .filter(|s| s.name == "pgsplit_statements_total")
        .map(|s| {
            (
                s.label("listener"),
                s.label("target"),
                s.label("reason"),
                s.value,
            )
        })
        .collect();
    rows.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    for (listener, target, reason, n) in rows {
        t.row(vec![
            text(listener),
            text(target),
            text(reason),
            text(n as u64),
        ]);
    }
    t
}

/// Flattens a JSON value into `key = value` pairs (`a.b`, `a[0].b`).
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Array(items) if items.iter().any(|i| i.is_object()) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

fn config(shared: &Shared) -> Table {
    let config = shared.config.load_full();
    let mut shown = (*config).clone();
    // A token or password read from the environment is not the file's.
    if shown.admin.token_env.is_some() {
        shown.admin.token = None;
    }
    for u in &mut shown.users {
        if u.password_env.is_some() {
            u.password = None;
        }
    }
    // Secrets serialize as "<redacted>".
    let value = serde_json::to_value(&shown).unwrap_or_default();
    let mut pairs = Vec::new();
    flatten("", &value, &mut pairs);
    let mut t = Table::new(&["key", "value", "reload"]);
    for (key, value) in pairs {
        let restart = ["listen.", "tls.", "runtime."]
            .iter()
            .any(|p| key.starts_with(p));
        t.row(vec![
            text(&key),
            text(value),
            text(if restart { "restart" } else { "yes" }),
        ]);
    }
    t
}

/// The catalog cache as the console sees it: it belongs to no database, so
/// a name counts as a read only when every database that looked it up says
/// so.
struct AnyDatabase<'a>(&'a crate::classify::catalog::Catalog);

impl router::Catalog for AnyDatabase<'_> {
    fn function(&self, name: &str) -> Option<FunctionInfo> {
        let known = self.0.function_everywhere(name);
        if known.is_empty() {
            return None;
        }
        Some(FunctionInfo {
            read: known.iter().all(|(_, f)| f.read),
            sets_config: known.iter().any(|(_, f)| f.sets_config),
        })
    }

    fn relation_unlogged(&self, name: &str) -> Option<bool> {
        let known = self.0.relation_everywhere(name);
        (!known.is_empty()).then(|| known.iter().any(|(_, u)| *u))
    }

    fn function_oid(&self, _: u32) -> Option<bool> {
        None
    }
}

impl Facts for AnyDatabase<'_> {
    fn function_source(&self, name: &str) -> Option<String> {
        let known = self.0.function_everywhere(name);
        if known.is_empty() {
            return None;
        }
        let databases: Vec<&str> = known.iter().map(|(db, _)| &**db).collect();
        Some(format!("pg_proc of database {}", databases.join(", ")))
    }
}

/// `EXPLAIN ROUTE sql`: one row.
pub(super) fn explain_route(shared: &Shared, sql: &str) -> Table {
    let config = shared.config.load_full();
    let classifier = shared.classifier.load_full();
    let snapshot = shared.topology.snapshot();
    let e = explain::explain(
        sql,
        &Context {
            classifier: &classifier,
            snapshot: &snapshot,
            catalog: &AnyDatabase(&shared.catalog),
            policy: explain::policy(&config.consistency, &config.routing),
            ticket: shared.topology.ticket(),
            name_backends: true,
        },
    );
    let list = |items: &[String]| (!items.is_empty()).then(|| items.join("; "));
    let mut t = Table::new(&[
        "route",
        "reason",
        "access",
        "why",
        "statements",
        "functions",
        "relations",
        "effects",
        "hint",
        "primary_only",
        "notes",
    ]);
    t.row(vec![
        text(&e.route),
        text(e.reason),
        text(e.access),
        text(e.why),
        text(e.statements),
        list(&e.functions),
        list(&e.relations),
        list(&e.effects),
        e.hint.map(str::to_owned),
        yes_no(e.primary_only),
        list(&e.notes),
    ]);
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(utc(t), "2024-02-29 12:34:56 UTC");
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        assert_eq!(quantile(0.99, &[]), None);
        assert_eq!(quantile(0.99, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
        let buckets = [(0.001, 50.0), (0.01, 100.0), (f64::INFINITY, 100.0)];
        let p99 = quantile(0.99, &buckets).unwrap();
        assert!((p99 - 0.00982).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.5, &buckets), Some(0.001));
        let slow = [(0.001, 0.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(0.99, &slow), Some(f64::INFINITY));
        assert_eq!(ms(f64::INFINITY), "> 10000");
    }

    #[test]
    fn login_keys_read_for_people() {
        let key = "application_name=psql\0database=app\0user=app\0\0read_only";
        assert_eq!(
            login_parts(key),
            (
                "app".into(),
                "app".into(),
                "application_name=psql".into(),
                true
            )
        );
    }

    #[test]
    fn config_flattens_with_section_keys() {
        let value = serde_json::json!({"a": {"b": 1, "c": "x"}, "list": [{"n": "p"}], "v": ["s"]});
        let mut out = Vec::new();
        flatten("", &value, &mut out);
        assert_eq!(
            out,
            [
                ("a.b".into(), "1".into()),
                ("a.c".into(), "x".into()),
                ("list[0].n".into(), "p".into()),
                ("v".into(), "[\"s\"]".into()),
            ]
        );
    }
}
