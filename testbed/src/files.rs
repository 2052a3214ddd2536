//! Files and directories of a cluster, and the per-process `initdb` template.

use super::env::{server_cmd, PgEnv};
use super::node::output_text;
use super::{DIR_PREFIX, MAX_SOCKET_PATH, PG_OS_USER, POLL_INTERVAL, TEMPLATE_TAG};
use anyhow::{anyhow, bail, Context, Result};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---- files and directories ----

fn chown_if_root(env: &PgEnv, path: &Path) -> Result<()> {
    if let Some((uid, gid)) = env.run_as {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .with_context(|| format!("chown postgres {}", path.display()))?;
    }
    Ok(())
}

pub(super) fn make_dir(env: &PgEnv, path: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    chown_if_root(env, path)
}

/// Creates `$TMPDIR/<prefix><seq>-<nonce>` (mode 0755, owned by `postgres`
/// when root), never reusing an existing path.
pub(super) fn create_unique_dir(env: &PgEnv, prefix: &str) -> Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = std::env::temp_dir();
    for _ in 0..100 {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = tmp.join(format!("{prefix}{seq}-{nanos:08x}"));
        match make_dir(env, &path, 0o755) {
            Ok(()) => return Ok(path),
            Err(e)
                if e.downcast_ref::<std::io::Error>().map(|e| e.kind())
                    == Some(std::io::ErrorKind::AlreadyExists) =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
    }
    bail!(
        "could not create a unique directory {prefix}* in {}",
        tmp.display()
    )
}

pub(super) fn check_socket_path_len(sock_dir: &Path) -> Result<()> {
    let len = sock_dir.as_os_str().len() + "/.s.PGSQL.65535".len();
    if len > MAX_SOCKET_PATH {
        bail!(
            "unix socket path {}/.s.PGSQL.<port> would be too long ({len} > {MAX_SOCKET_PATH} bytes); set TMPDIR to a shorter directory",
            sock_dir.display()
        );
    }
    Ok(())
}

/// When root, the servers run as `postgres` and need to reach the cluster
/// directory: every ancestor must be searchable by others.
pub(super) fn check_traversable_by_others(dir: &Path) -> Result<()> {
    for anc in dir.ancestors().skip(1) {
        let mode = fs::metadata(anc)
            .with_context(|| format!("stat {}", anc.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            bail!(
                "{} (mode {:o}) is not searchable by the {PG_OS_USER} OS user that runs the servers; \
                 set TMPDIR to a directory it can reach, e.g. /tmp",
                anc.display(),
                mode & 0o7777
            );
        }
    }
    Ok(())
}

pub(super) fn write_file(env: &PgEnv, path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    chown_if_root(env, path)
}

/// Copies a data directory, keeping permission bits; owned by `postgres`
/// when root.
pub(super) fn copy_tree(env: &PgEnv, src: &Path, dst: &Path) -> Result<()> {
    let mode = fs::metadata(src)?.permissions().mode() & 0o7777;
    make_dir(env, dst, mode)?;
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let ft = entry.file_type()?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        if ft.is_dir() {
            copy_tree(env, &from, &to)?;
        } else if ft.is_file() {
            fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
            chown_if_root(env, &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            chown_if_root(env, &to)?;
        } else {
            bail!("unexpected file type at {}", from.display());
        }
    }
    Ok(())
}

pub(super) fn remove_dir_retrying(path: &Path) -> std::io::Result<()> {
    // A server process that is just exiting may still create or remove a
    // file; retry briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir_all(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

pub(super) fn read_from(path: &Path, offset: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
    }
    s
}

pub(super) fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(super) fn log_tail(path: &Path, n: usize) -> String {
    // Only the last 64 KiB matter; logs of long benchmark runs can be big.
    let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    last_lines(&read_from(path, len.saturating_sub(64 * 1024)), n)
}

// ---- initdb template ----

/// The per-process `initdb` output that new primaries are copied from.
pub(super) fn template_data_dir(env: &'static PgEnv) -> Result<&'static Path> {
    static TEMPLATE: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let started = Instant::now();
            let dir = create_unique_dir(
                env,
                &format!("{DIR_PREFIX}{TEMPLATE_TAG}{}-", std::process::id()),
            )
            .map_err(|e| format!("{e:#}"))?;
            let data = dir.join("data");
            let result = server_cmd(env, "initdb", &dir)
                .arg("-D")
                .arg(&data)
                .args(["-N", "-A", "trust", "-U", "postgres", "--no-instructions"])
                .args(["-E", "UTF8", "--locale=C"])
                .output();
            let failure = match result {
                Ok(o) if o.status.success() => None,
                Ok(o) => Some(format!(
                    "initdb failed ({}): {}",
                    o.status,
                    output_text(&o)
                )),
                Err(e) => Some(format!("spawning initdb: {e}")),
            };
            if let Some(msg) = failure {
                let _ = fs::remove_dir_all(&dir);
                return Err(msg);
            }
            tracing::debug!(dir = %dir.display(), elapsed_ms = started.elapsed().as_millis() as u64, "testbed: initdb template ready");
            Ok(data)
        })
        .as_ref()
        .map(|p| p.as_path())
        .map_err(|e| anyhow!("{e}"))
}
