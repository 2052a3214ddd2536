//! Static checks of the container and sidecar packaging under `docker/`.
//!
//! No Docker engine or Kubernetes cluster is needed: the files are parsed and
//! cross-checked against each other and against pgsplit itself (its config
//! parser and its metrics exposition), so that a change on either side that
//! breaks the packaging fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Once;

use pgsplit::config::Config;
use pgsplit::metrics::Metrics;
use pgsplit::topology::{BackendStatus, Role, Snapshot};
use yaml_rust2::{Yaml, YamlLoader};

const PASSWORD_ENV: &str = "APP_DB_PASSWORD";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn docker_dir() -> PathBuf {
    root().join("docker")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every YAML document in `text`.
fn yaml_documents(text: &str, what: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(text)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// The two lookups the checks need that `Yaml` lacks.
trait YamlExt {
    /// The value under `key` if `self` is a mapping that has it.
    fn get(&self, key: &str) -> Option<&Yaml>;
    /// A non-negative integer.
    fn as_u64(&self) -> Option<u64>;
}

impl YamlExt for Yaml {
    fn get(&self, key: &str) -> Option<&Yaml> {
        self.as_hash()?.get(&Yaml::String(key.to_owned()))
    }

    fn as_u64(&self) -> Option<u64> {
        self.as_i64().and_then(|n| u64::try_from(n).ok())
    }
}

fn yaml_file(rel: &str) -> Yaml {
    let path = docker_dir().join(rel);
    let mut docs = yaml_documents(&read(&path), rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

/// `value[key]`, failing with the path when missing.
fn get<'a>(value: &'a Yaml, key: &str, what: &str) -> &'a Yaml {
    value
        .get(key)
        .unwrap_or_else(|| panic!("{what}: missing `{key}`"))
}

fn str_of<'a>(value: &'a Yaml, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {value:?}"))
}

fn seq_of<'a>(value: &'a Yaml, what: &str) -> &'a Vec<Yaml> {
    value
        .as_vec()
        .unwrap_or_else(|| panic!("{what}: expected a list, got {value:?}"))
}

/// Config::parse resolves `password_env`; make sure the variable is set.
fn set_password_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var(PASSWORD_ENV, "packaging-test-password"));
}

fn parse_pgsplit_config(text: &str, what: &str) -> Config {
    set_password_env();
    let config = Config::parse(text).unwrap_or_else(|e| panic!("{what}: {e}"));
    let user = &config.users[0];
    assert_eq!(user.name, "app", "{what}: the first user");
    assert_eq!(
        user.password_env.as_deref(),
        Some(PASSWORD_ENV),
        "{what}: the password must come from {PASSWORD_ENV}, not the file"
    );
    config
}

/// "15s", "1m30s", "500ms" as milliseconds (the forms Compose accepts).
fn duration_ms(text: &str) -> u64 {
    let mut total = 0;
    let mut rest = text.trim();
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("bad duration {text:?}"));
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            other => panic!("bad duration unit {other:?} in {text:?}"),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    total
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn every_yaml_file_under_docker_parses() {
    let mut files = Vec::new();
    files_under(&docker_dir(), &mut files);
    let yaml: Vec<_> = files
        .into_iter()
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")))
        .collect();
    assert!(
        yaml.len() >= 3,
        "expected compose, prometheus and k8s YAML, found {yaml:?}"
    );
    for path in yaml {
        let what = path.display().to_string();
        let docs = yaml_documents(&read(&path), &what);
        assert!(!docs.is_empty(), "{what}: no YAML document");
    }
}

#[test]
fn compose_file_wires_the_five_services() {
    let compose = yaml_file("docker-compose.yml");
    let services = get(&compose, "services", "compose")
        .as_hash()
        .expect("services is a mapping");
    let names: BTreeSet<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["pg1", "pg2", "pg3", "pgsplit", "prometheus"])
    );
    let service = |name: &str| get(&compose, "services", "compose").get(name).unwrap();

    // Every bind-mounted file exists (paths are relative to docker/).
    let mut mounts: BTreeMap<(String, String), String> = BTreeMap::new();
    for name in &names {
        if let Some(volumes) = service(name).get("volumes") {
            for v in seq_of(volumes, name) {
                let spec = str_of(v, name);
                let parts: Vec<&str> = spec.split(':').collect();
                if parts[0].starts_with('.') {
                    let source = docker_dir().join(parts[0]);
                    assert!(source.exists(), "{name}: {spec}: {source:?} is missing");
                    mounts.insert((name.to_string(), parts[1].to_owned()), parts[0].to_owned());
                }
            }
        }
    }

    // pg1: primary with the init script; every replica's slot is created there.
    let pg1 = service("pg1");
    assert!(str_of(get(pg1, "image", "pg1"), "pg1").starts_with("postgres:15"));
    assert!(
        mounts
            .keys()
            .any(|(s, target)| s == "pg1" && target.starts_with("/docker-entrypoint-initdb.d/")),
        "pg1 needs an init script in /docker-entrypoint-initdb.d"
    );
    let pg1_env = get(pg1, "environment", "pg1");
    let slots: BTreeSet<&str> = str_of(get(pg1_env, "REPLICA_SLOTS", "pg1"), "pg1")
        .split_whitespace()
        .collect();
    for replica in ["pg2", "pg3"] {
        let svc = service(replica);
        let env = get(svc, "environment", replica);
        let slot = str_of(get(env, "REPLICATION_SLOT", replica), replica);
        assert!(
            slots.contains(slot),
            "{replica}: slot {slot} not created by pg1"
        );
        assert_eq!(str_of(get(env, "PRIMARY_HOST", replica), replica), "pg1");
        let entrypoint: Vec<&str> = seq_of(get(svc, "entrypoint", replica), replica)
            .iter()
            .map(|v| str_of(v, replica))
            .collect();
        let script = entrypoint.last().unwrap();
        let source = mounts
            .get(&(replica.to_string(), script.to_string()))
            .unwrap_or_else(|| panic!("{replica}: entrypoint {script} is not mounted"));
        let text = read(&docker_dir().join(source));
        assert!(text.contains("pg_basebackup"), "{replica}: {source}");
        assert!(
            text.contains("-S \"$REPLICATION_SLOT\""),
            "{replica}: {source}"
        );
        // Setting `entrypoint` drops the image's CMD: the command must be given.
        let command = seq_of(get(svc, "command", replica), replica);
        assert_eq!(command[0].as_str(), Some("postgres"), "{replica}: command");
        assert!(get(svc, "depends_on", replica).get("pg1").is_some());
    }

    // pgsplit: built from docker/Dockerfile with the repository root as context.
    let pgsplit = service("pgsplit");
    let build = get(pgsplit, "build", "pgsplit");
    let context = docker_dir().join(str_of(get(build, "context", "build"), "build"));
    let dockerfile = str_of(get(build, "dockerfile", "build"), "build");
    assert!(
        context.join(dockerfile).is_file(),
        "build: {dockerfile} not found in context {context:?}"
    );
    assert!(
        context.join("Cargo.lock").is_file(),
        "build context is not the repository root"
    );
    let config_source = mounts
        .get(&("pgsplit".to_owned(), "/etc/pgsplit/pgsplit.toml".to_owned()))
        .expect("pgsplit: the config is mounted at /etc/pgsplit/pgsplit.toml");
    let config = parse_pgsplit_config(
        &read(&docker_dir().join(config_source)),
        "pgsplit.compose.toml",
    );
    let env = get(pgsplit, "environment", "pgsplit");
    assert!(
        env.get(PASSWORD_ENV).is_some(),
        "pgsplit: {PASSWORD_ENV} must be passed"
    );
    let ports: Vec<&str> = seq_of(get(pgsplit, "ports", "pgsplit"), "pgsplit")
        .iter()
        .map(|p| str_of(p, "ports"))
        .collect();
    for listen in [
        config.listen.read_write,
        config.listen.read_only,
        config.listen.admin,
    ] {
        let suffix = format!(":{}", listen.port());
        assert!(
            ports.iter().any(|p| p.ends_with(&suffix)),
            "pgsplit: port {} is not published ({ports:?})",
            listen.port()
        );
    }
    let grace = duration_ms(str_of(
        get(pgsplit, "stop_grace_period", "pgsplit"),
        "stop_grace_period",
    ));
    assert!(
        grace > config.limits.shutdown_timeout_ms,
        "stop_grace_period {grace} ms must exceed shutdown_timeout_ms {}",
        config.limits.shutdown_timeout_ms
    );
    for dep in ["pg1", "pg2", "pg3"] {
        assert!(get(pgsplit, "depends_on", "pgsplit").get(dep).is_some());
    }

    // Prometheus gets docker/prometheus.yml.
    assert!(
        str_of(get(service("prometheus"), "image", "prometheus"), "image")
            .starts_with("prom/prometheus")
    );
    assert_eq!(
        mounts
            .get(&(
                "prometheus".to_owned(),
                "/etc/prometheus/prometheus.yml".to_owned()
            ))
            .map(String::as_str),
        Some("./prometheus.yml")
    );

    // Passwords come from the environment with a default: ${VAR:-default}.
    for (name, svc) in services {
        let Some(env) = svc.get("environment").and_then(Yaml::as_hash) else {
            continue;
        };
        for (key, value) in env {
            let key = key.as_str().unwrap();
            if key.contains("PASSWORD") {
                let value = str_of(value, key);
                assert!(
                    value.starts_with("${") && value.contains(":-") && value.ends_with('}'),
                    "{name:?}: {key} should be ${{VAR:-default}}, is {value:?}"
                );
            }
        }
    }
}

#[test]
fn compose_config_is_a_valid_pgsplit_config() {
    let text = read(&docker_dir().join("pgsplit.compose.toml"));
    let config = parse_pgsplit_config(&text, "pgsplit.compose.toml");
    for addr in [
        config.listen.read_write,
        config.listen.read_only,
        config.listen.admin,
    ] {
        assert!(
            addr.ip().is_unspecified(),
            "inside a container pgsplit must listen on 0.0.0.0, not {addr}"
        );
    }
    let backends: Vec<&str> = config.backends.iter().map(|b| b.address.as_str()).collect();
    assert_eq!(backends, ["pg1:5432", "pg2:5432", "pg3:5432"]);
}

#[test]
fn prometheus_scrapes_pgsplit_every_5s() {
    let prom = yaml_file("prometheus.yml");
    let jobs = seq_of(get(&prom, "scrape_configs", "prometheus"), "scrape_configs");
    let job = jobs
        .iter()
        .find(|j| {
            j.get("static_configs")
                .and_then(Yaml::as_vec)
                .into_iter()
                .flatten()
                .filter_map(|s| s.get("targets").and_then(Yaml::as_vec))
                .flatten()
                .any(|t| t.as_str() == Some("pgsplit:9930"))
        })
        .expect("a scrape job with target pgsplit:9930");
    let interval = duration_ms(str_of(get(job, "scrape_interval", "job"), "interval"));
    assert_eq!(interval, 5000);
    if let Some(timeout) = job.get("scrape_timeout") {
        assert!(duration_ms(str_of(timeout, "timeout")) <= interval);
    }
    let path = job.get("metrics_path").and_then(Yaml::as_str);
    assert!(matches!(path, None | Some("/metrics")));
}

/// The k8s example: ConfigMap, Secret and Deployment, wired to each other.
#[test]
fn k8s_sidecar_manifest() {
    let text = read(&docker_dir().join("k8s/sidecar.yaml"));
    let docs = yaml_documents(&text, "k8s/sidecar.yaml");
    let of_kind = |kind: &str| -> &Yaml {
        let found: Vec<_> = docs
            .iter()
            .filter(|d| d.get("kind").and_then(Yaml::as_str) == Some(kind))
            .collect();
        assert_eq!(found.len(), 1, "exactly one {kind}");
        found[0]
    };
    let name_of = |doc: &Yaml| -> String {
        str_of(get(get(doc, "metadata", "doc"), "name", "metadata"), "name").to_owned()
    };
    let config_map = of_kind("ConfigMap");
    let secret = of_kind("Secret");
    let deployment = of_kind("Deployment");

    let toml_text = str_of(
        get(get(config_map, "data", "ConfigMap"), "pgsplit.toml", "data"),
        "pgsplit.toml",
    );
    let config = parse_pgsplit_config(toml_text, "ConfigMap pgsplit.toml");
    // The app shares the pod: client ports on loopback, admin reachable by the kubelet.
    assert!(config.listen.read_write.ip().is_loopback());
    assert!(config.listen.read_only.ip().is_loopback());
    assert!(config.listen.admin.ip().is_unspecified());
    assert!(config.backends.len() >= 2, "list every Postgres node");
    for b in &config.backends {
        assert!(
            b.address.contains(".svc.cluster.local:"),
            "{}: expected a cluster DNS name",
            b.address
        );
    }
    let admin_port = u64::from(config.listen.admin.port());

    let pod = get(get(deployment, "spec", "Deployment"), "template", "spec");
    let pod_spec = get(pod, "spec", "template");
    let grace_s = get(pod_spec, "terminationGracePeriodSeconds", "pod spec")
        .as_u64()
        .expect("terminationGracePeriodSeconds is a number");
    assert!(
        grace_s * 1000 > config.limits.shutdown_timeout_ms,
        "terminationGracePeriodSeconds {grace_s} s must exceed shutdown_timeout_ms {}",
        config.limits.shutdown_timeout_ms
    );
    let annotations = get(get(pod, "metadata", "template"), "annotations", "metadata");
    assert_eq!(
        annotations
            .get("prometheus.io/scrape")
            .and_then(Yaml::as_str),
        Some("true")
    );
    assert_eq!(
        annotations.get("prometheus.io/port").and_then(Yaml::as_str),
        Some(admin_port.to_string().as_str())
    );

    // The sidecar may be a native one (initContainers, restartPolicy Always)
    // or a plain second container.
    let all_containers: Vec<&Yaml> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod_spec.get(k).and_then(Yaml::as_vec))
        .flatten()
        .collect();
    let pgsplit = all_containers
        .iter()
        .find(|c| c.get("name").and_then(Yaml::as_str) == Some("pgsplit"))
        .expect("a container named pgsplit");
    if let Some(inits) = pod_spec.get("initContainers").and_then(Yaml::as_vec) {
        if inits.iter().any(|c| std::ptr::eq(c, *pgsplit)) {
            assert_eq!(
                pgsplit.get("restartPolicy").and_then(Yaml::as_str),
                Some("Always"),
                "an init container sidecar needs restartPolicy: Always"
            );
        }
    }
    let http_probe = |probe: &str| -> (String, u64) {
        let get_ = get(get(pgsplit, probe, "pgsplit"), "httpGet", probe);
        (
            str_of(get(get_, "path", probe), probe).to_owned(),
            get(get_, "port", probe).as_u64().expect("numeric port"),
        )
    };
    assert_eq!(http_probe("livenessProbe"), ("/healthz".into(), admin_port));
    assert_eq!(http_probe("readinessProbe"), ("/readyz".into(), admin_port));
    assert_eq!(admin_port, 9930);

    let sc = get(pgsplit, "securityContext", "pgsplit");
    assert_eq!(sc.get("runAsNonRoot").and_then(Yaml::as_bool), Some(true));
    let uid = sc
        .get("runAsUser")
        .and_then(Yaml::as_u64)
        .expect("runAsUser");
    assert_ne!(uid, 0, "runAsUser must not be root");
    assert_eq!(uid, dockerfile_user(), "runAsUser matches the image's USER");
    assert_eq!(
        sc.get("readOnlyRootFilesystem").and_then(Yaml::as_bool),
        Some(true)
    );
    assert_eq!(
        sc.get("allowPrivilegeEscalation").and_then(Yaml::as_bool),
        Some(false)
    );
    let drop = seq_of(
        get(get(sc, "capabilities", "sc"), "drop", "capabilities"),
        "drop",
    );
    assert!(drop.iter().any(|c| c.as_str() == Some("ALL")));
    let resources = get(pgsplit, "resources", "pgsplit");
    for k in ["requests", "limits"] {
        assert!(resources.get(k).is_some(), "pgsplit resources.{k}");
    }

    // Args point at the mounted ConfigMap.
    let args: Vec<&str> = seq_of(get(pgsplit, "args", "pgsplit"), "args")
        .iter()
        .map(|a| str_of(a, "args"))
        .collect();
    let config_arg = args
        .iter()
        .position(|a| *a == "--config")
        .map(|i| args[i + 1])
        .expect("--config in args");
    let mount = seq_of(get(pgsplit, "volumeMounts", "pgsplit"), "volumeMounts")
        .iter()
        .find(|m| config_arg.starts_with(&format!("{}/", str_of(get(m, "mountPath", "m"), "m"))))
        .expect("the --config file's directory is mounted");
    let volume_name = str_of(get(mount, "name", "mount"), "name");
    let volume = seq_of(get(pod_spec, "volumes", "pod"), "volumes")
        .iter()
        .find(|v| v.get("name").and_then(Yaml::as_str) == Some(volume_name))
        .expect("the mounted volume");
    assert_eq!(
        volume
            .get("configMap")
            .and_then(|c| c.get("name"))
            .and_then(Yaml::as_str),
        Some(name_of(config_map).as_str())
    );
    assert!(config_arg.ends_with("/pgsplit.toml"));

    // The password comes from the Secret, under a key the Secret has.
    let secret_keys: BTreeSet<String> = ["stringData", "data"]
        .iter()
        .filter_map(|k| secret.get(k).and_then(Yaml::as_hash))
        .flat_map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_owned)))
        .collect();
    let env = seq_of(get(pgsplit, "env", "pgsplit"), "env");
    let password = env
        .iter()
        .find(|e| e.get("name").and_then(Yaml::as_str) == Some(PASSWORD_ENV))
        .expect("APP_DB_PASSWORD in the sidecar's env");
    let key_ref = get(
        get(password, "valueFrom", "env"),
        "secretKeyRef",
        "valueFrom",
    );
    assert_eq!(
        str_of(get(key_ref, "name", "secretKeyRef"), "name"),
        name_of(secret)
    );
    assert!(secret_keys.contains(str_of(get(key_ref, "key", "secretKeyRef"), "key")));

    // The app container talks to the sidecar's loopback ports.
    let app = all_containers
        .iter()
        .find(|c| c.get("name").and_then(Yaml::as_str) != Some("pgsplit"))
        .expect("an app container");
    let app_env: Vec<&str> = seq_of(get(app, "env", "app"), "app env")
        .iter()
        .filter_map(|e| e.get("value").and_then(Yaml::as_str))
        .collect();
    for addr in [config.listen.read_write, config.listen.read_only] {
        let needle = format!("127.0.0.1:{}", addr.port());
        assert!(
            app_env.iter().any(|v| v.contains(&needle)),
            "app env should point at {needle}: {app_env:?}"
        );
    }
}

/// Metric names as Prometheus stores them, from pgsplit's own exposition.
/// Families without samples may be left out of the exposition, so every
/// labelled family gets one sample first (a backend in the snapshot, an
/// error, a server connection, a reload). The `# TYPE` lines are read in
/// either text format: OpenMetrics names a counter family without `_total`
/// and an info family without `_info`; Prometheus 0.0.4 names them in full.
fn exported_metric_names() -> BTreeSet<String> {
    let metrics = Metrics::new();
    metrics.read_write.client_error("53300");
    metrics.config_reload("success");
    let gauges = metrics.pool_gauges("pg1");
    gauges.in_use.inc();
    gauges.waiting.inc();
    gauges.wait_seconds.observe(0.01);
    metrics.internal_query("pg1", "probe");
    metrics.prepared_statements(1, 1, 1);
    metrics.pinned(pgsplit::classify::PinCause::Listen, 1);
    metrics.read_your_writes("known");
    metrics.read_write.statements("primary", "write", 1);
    let snapshot = Snapshot {
        backends: vec![BackendStatus {
            name: "pg1".into(),
            address: "pg1:5432".into(),
            weight: 1,
            role: Role::Primary,
            healthy: true,
            in_rotation: false,
            drained: false,
            lag_bytes: None,
            lag_ms: None,
            replay_lsn: None,
            current_lsn: None,
            timeline: None,
            reason: None,
            last_error: None,
        }],
        primary: Some(0),
        primaries_seen: 1,
        ..Snapshot::default()
    };
    let text = metrics.render(&snapshot);
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            let with = |suffix: &str| {
                if name.ends_with(suffix) {
                    name.to_owned()
                } else {
                    format!("{name}{suffix}")
                }
            };
            match kind {
                "counter" => {
                    names.insert(with("_total"));
                }
                "info" => {
                    names.insert(with("_info"));
                }
                "histogram" | "summary" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        if kind == "histogram" || suffix != "_bucket" {
                            names.insert(format!("{name}{suffix}"));
                        }
                    }
                }
                _ => {
                    names.insert(name.to_owned());
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// The metric families the dashboard is meant to show.
const DOCUMENTED_METRICS: [&str; 25] = [
    "pgsplit_build_info",
    "pgsplit_client_connections",
    "pgsplit_client_connections_total",
    "pgsplit_statement_duration_seconds_bucket",
    "pgsplit_statement_duration_seconds_count",
    "pgsplit_server_connections",
    "pgsplit_config_reloads_total",
    "pgsplit_client_errors_total",
    "pgsplit_bytes_total",
    "pgsplit_backend_up",
    "pgsplit_backend_is_primary",
    "pgsplit_backend_in_rotation",
    "pgsplit_backend_lag_bytes",
    "pgsplit_backend_lag_seconds",
    "pgsplit_primary_changes_total",
    "pgsplit_primaries_seen",
    "pgsplit_statements_total",
    "pgsplit_read_your_writes_total",
    "pgsplit_internal_queries_total",
    "pgsplit_pool_waiting_clients",
    "pgsplit_pool_wait_seconds_bucket",
    "pgsplit_pinned_sessions",
    "pgsplit_prepared_statements_total",
    "pgsplit_backend_statements_total",
    "pgsplit_server_bytes_total",
];

/// Identifiers starting with `pgsplit_` in a PromQL expression.
fn metric_names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < bytes.len()
                && ((bytes[i] as char).is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b':'))
            {
                i += 1;
            }
            let word = &expr[start..i];
            if word.starts_with("pgsplit_") {
                names.push(word.to_owned());
            }
        } else if c == '"' {
            // Skip label values and other string literals.
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    names
}

fn collect_panels<'a>(panels: &'a [serde_json::Value], out: &mut Vec<&'a serde_json::Value>) {
    for p in panels {
        out.push(p);
        if let Some(inner) = p.get("panels").and_then(|v| v.as_array()) {
            collect_panels(inner, out);
        }
    }
}

#[test]
fn dashboard_uses_only_metrics_pgsplit_exports() {
    let exported = exported_metric_names();
    for name in DOCUMENTED_METRICS {
        assert!(
            exported.contains(name),
            "{name} is not exported any more: {exported:?}"
        );
    }

    let path = docker_dir().join("grafana/pgsplit-dashboard.json");
    let dash: serde_json::Value =
        serde_json::from_str(&read(&path)).expect("the dashboard is valid JSON");
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    assert!(
        dash["__inputs"]
            .as_array()
            .expect("__inputs")
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "a DS_PROMETHEUS datasource input"
    );

    let mut panels = Vec::new();
    collect_panels(dash["panels"].as_array().expect("panels"), &mut panels);
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for p in &panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or("?");
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {title:?}: datasource"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            exprs.push((
                title.to_owned(),
                t["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    for var in dash["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = var["definition"].as_str() {
            exprs.push((format!("variable {}", var["name"]), q.to_owned()));
        }
    }

    let mut used = BTreeSet::new();
    for (title, expr) in &exprs {
        let names = metric_names_in(expr);
        assert!(
            !names.is_empty() || title.starts_with("variable"),
            "{title}: {expr} uses no pgsplit metric"
        );
        for name in names {
            assert!(
                exported.contains(&name),
                "{title}: {expr}: {name} is not a metric pgsplit exports ({exported:?})"
            );
            // Counters and histogram series only make sense as rates.
            if ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .any(|s| name.ends_with(s))
            {
                assert!(
                    expr.contains("rate(") || expr.contains("increase("),
                    "{title}: {name} should be used through rate() or increase()"
                );
            }
            used.insert(name);
        }
    }
    for name in DOCUMENTED_METRICS {
        assert!(used.contains(name), "the dashboard does not show {name}");
    }
}

#[test]
fn metric_name_extraction() {
    assert_eq!(
        metric_names_in(r#"sum by (x) (rate(pgsplit_bytes_total{job="pgsplit_fake"}[5m]))"#),
        ["pgsplit_bytes_total"]
    );
    assert_eq!(
        metric_names_in("max(pgsplit_primaries_seen) + pgsplit_backend_up"),
        ["pgsplit_primaries_seen", "pgsplit_backend_up"]
    );
}

/// Dockerfile instructions with line continuations joined and comments dropped.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read(&docker_dir().join("Dockerfile"));
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (op, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((op.to_ascii_uppercase(), args.trim().to_owned()));
        current.clear();
    }
    out
}

/// The uid of the Dockerfile's last USER.
fn dockerfile_user() -> u64 {
    let instructions = dockerfile_instructions();
    let (_, user) = instructions
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .expect("a USER instruction");
    let uid = user.split(':').next().unwrap();
    uid.parse()
        .unwrap_or_else(|_| panic!("USER {user:?}: use a numeric uid so runAsNonRoot can check it"))
}

#[test]
fn dockerfile_shape() {
    let instructions = dockerfile_instructions();
    let from: Vec<&str> = instructions
        .iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, a)| a.as_str())
        .collect();
    assert!(from.len() >= 2, "a multi-stage build: {from:?}");
    assert!(from[0].starts_with("rust:"), "builder: {}", from[0]);
    assert!(
        from.last().unwrap().starts_with("debian:bookworm-slim"),
        "runtime: {from:?}"
    );

    let uid = dockerfile_user();
    assert_ne!(uid, 0, "the image must not run as root");

    let exposed: BTreeSet<&str> = instructions
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, a)| a.split_whitespace())
        .collect();
    for port in ["5433", "5434", "9930"] {
        assert!(exposed.contains(port), "EXPOSE {port}: {exposed:?}");
    }

    let last = |op: &str| -> String {
        instructions
            .iter()
            .rev()
            .find(|(o, _)| o == op)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("no {op}"))
    };
    let entrypoint: Vec<String> = serde_json::from_str(&last("ENTRYPOINT")).expect("exec form");
    assert_eq!(entrypoint, ["/usr/local/bin/pgsplit"]);
    let cmd: Vec<String> = serde_json::from_str(&last("CMD")).expect("exec form");
    assert_eq!(
        cmd,
        [
            "--config",
            "/etc/pgsplit/pgsplit.toml",
            "--log-format",
            "json"
        ]
    );
    assert_eq!(last("STOPSIGNAL"), "SIGTERM");

    // The context is the repository root: every COPY source must exist there.
    for (_, args) in instructions.iter().filter(|(op, _)| op == "COPY") {
        if args.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = args
            .split_whitespace()
            .filter(|p| !p.starts_with("--"))
            .collect();
        for source in &parts[..parts.len() - 1] {
            assert!(
                root().join(source).exists(),
                "COPY {source}: not in the build context (the repository root)"
            );
        }
    }
    let copies_all = |path: &str| {
        instructions
            .iter()
            .any(|(op, a)| op == "COPY" && a.split_whitespace().any(|p| p == path))
    };
    assert!(copies_all("src"), "the sources are copied");

    // The dependency-caching step stubs every target Cargo.toml declares, so
    // a new [[bench]] (or a build script) must show up here too.
    let manifest: toml::Value = toml::from_str(&read(&root().join("Cargo.toml"))).unwrap();
    let text = read(&docker_dir().join("Dockerfile"));
    for bench in manifest
        .get("bench")
        .and_then(|b| b.as_array())
        .into_iter()
        .flatten()
    {
        let name = bench["name"].as_str().unwrap();
        let path = bench
            .get("path")
            .and_then(|p| p.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("benches/{name}.rs"));
        assert!(text.contains(&path), "the Dockerfile should stub {path}");
        let dir = path.split('/').next().unwrap();
        assert!(copies_all(dir), "the Dockerfile should COPY {dir}");
    }
    assert!(
        !root().join("build.rs").exists() || copies_all("build.rs"),
        "build.rs exists: the Dockerfile must copy it"
    );
    // Cargo loads the whole workspace: every other member's manifest must be
    // copied in (its sources are not needed, the proxy does not use them).
    for member in manifest["workspace"]["members"].as_array().unwrap() {
        let member = member.as_str().unwrap();
        if member != "." {
            let member_manifest = format!("{member}/Cargo.toml");
            assert!(
                copies_all(&member_manifest),
                "the Dockerfile should COPY {member_manifest}"
            );
        }
    }

    // The image ships the proxy only: no `demo` feature, so no test bed.
    let builds: Vec<&str> = instructions
        .iter()
        .filter(|(op, _)| op == "RUN")
        .flat_map(|(_, a)| a.split("&&"))
        .map(str::trim)
        .filter(|c| c.starts_with("cargo build"))
        .collect();
    assert!(!builds.is_empty(), "no cargo build in the Dockerfile");
    for build in builds {
        assert!(
            build
                .split_whitespace()
                .any(|w| w == "--no-default-features"),
            "{build}: the image is built without the demo feature"
        );
    }
}

#[test]
fn shell_scripts_have_valid_syntax() {
    let mut files = Vec::new();
    files_under(&docker_dir(), &mut files);
    let scripts: Vec<_> = files
        .into_iter()
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("sh"))
        .collect();
    assert!(scripts.len() >= 2, "primary init and replica entrypoint");
    for script in scripts {
        assert!(
            read(&script).starts_with("#!/usr/bin/env bash\n"),
            "{}: bash shebang",
            script.display()
        );
        let status = std::process::Command::new("bash")
            .arg("-n")
            .arg(&script)
            .status()
            .expect("running bash -n");
        assert!(status.success(), "{}: bash -n failed", script.display());
    }
}
