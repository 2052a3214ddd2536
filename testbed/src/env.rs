//! Process-wide environment: the PostgreSQL bin directory, the OS user the
//! servers run as, command builders and free-port picking.

use super::{PG_BIN_ENV, PG_OS_USER};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashSet;
use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// What every cluster of this process shares.
#[derive(Debug)]
pub(super) struct PgEnv {
    pub(super) bin: PathBuf,
    /// uid/gid of the `postgres` OS user when this process is root.
    pub(super) run_as: Option<(u32, u32)>,
    pub(super) my_uid: u32,
}

impl PgEnv {
    pub(super) fn psql(&self) -> PathBuf {
        let p = self.bin.join("psql");
        if p.is_file() {
            p
        } else {
            PathBuf::from("psql")
        }
    }
}

pub(super) fn pg_env() -> Result<&'static PgEnv> {
    static ENV: OnceLock<std::result::Result<PgEnv, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let bin = pg_bin_dir().map_err(|e| format!("{e:#}"))?;
        let my_uid = effective_uid().map_err(|e| format!("{e:#}"))?;
        let run_as = if my_uid == 0 {
            Some(os_user_ids(PG_OS_USER).map_err(|e| {
                format!("running as root, so the servers must run as OS user {PG_OS_USER:?}: {e:#}")
            })?)
        } else {
            None
        };
        Ok(PgEnv {
            bin,
            run_as,
            my_uid,
        })
    })
    .as_ref()
    .map_err(|e| anyhow!("{e}"))
}

/// Finds the PostgreSQL bin directory: `$PGSPLIT_PG_BIN` if set (it must
/// contain `initdb`), else the first of `/usr/lib/postgresql/{17,16,15,14}/bin`
/// holding `initdb`, else `pg_config --bindir`. The error names everything
/// that was tried.
pub fn pg_bin_dir() -> Result<PathBuf> {
    let has_initdb = |d: &Path| d.join("initdb").is_file();
    if let Some(v) = std::env::var_os(PG_BIN_ENV) {
        let d = PathBuf::from(&v);
        if has_initdb(&d) {
            return Ok(d);
        }
        bail!(
            "{PG_BIN_ENV}={} has no initdb (unset it to search the usual places)",
            d.display()
        );
    }
    let mut tried = vec![format!("${PG_BIN_ENV} (unset)")];
    for v in [17, 16, 15, 14] {
        let d = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if has_initdb(&d) {
            return Ok(d);
        }
        tried.push(d.display().to_string());
    }
    match Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => {
            let d = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            if has_initdb(&d) {
                return Ok(d);
            }
            tried.push(format!("pg_config --bindir ({}: no initdb)", d.display()));
        }
        Ok(o) => tried.push(format!("pg_config --bindir ({})", o.status)),
        Err(e) => tried.push(format!("pg_config --bindir ({e})")),
    }
    bail!(
        "no PostgreSQL bin directory with initdb found; tried: {}",
        tried.join(", ")
    )
}

fn effective_uid() -> Result<u32> {
    match Command::new("id").arg("-u").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .context("parsing `id -u` output"),
        // /proc/self belongs to the process's effective uid.
        _ => Ok(fs::metadata("/proc/self")
            .context("neither `id -u` nor /proc/self works")?
            .uid()),
    }
}

fn os_user_ids(user: &str) -> Result<(u32, u32)> {
    let get = |flag: &str| -> Result<u32> {
        let o = Command::new("id")
            .args([flag, user])
            .output()
            .context("running id")?;
        if !o.status.success() {
            bail!(
                "`id {flag} {user}` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .context("parsing id output")
    };
    Ok((get("-u")?, get("-g")?))
}

/// Removes `PG*` variables (PGPORT, PGDATA, PGHOST, PGPASSWORD, ...) that
/// would change what the PostgreSQL programs do.
pub(super) fn scrub_pg_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(k);
        }
    }
}

/// A server-side program (`initdb`, `pg_ctl`, `pg_basebackup`), run as
/// `postgres` through `runuser` when this process is root.
pub(super) fn server_cmd(env: &PgEnv, prog: &str, cwd: &Path) -> Command {
    let exe = env.bin.join(prog);
    let mut cmd = if env.run_as.is_some() {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_OS_USER, "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    scrub_pg_env(&mut cmd);
    cmd.current_dir(cwd).stdin(Stdio::null());
    cmd
}

pub(super) fn pick_port() -> Result<u16> {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..100 {
        let port = {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let mut g = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if g.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    bail!("could not find a free port on 127.0.0.1")
}
