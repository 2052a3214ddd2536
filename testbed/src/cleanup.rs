//! Stopping servers for good and sweeping leftovers of dead processes.

use super::env::{server_cmd, PgEnv};
use super::files::remove_dir_retrying;
use super::{DIR_PREFIX, KEEP_MARKER, POLL_INTERVAL, TEMPLATE_TAG};
use anyhow::{bail, Result};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// ---- stopping servers ----

/// Makes sure no server runs from `data_dir`: `pg_ctl stop -m immediate`,
/// and if that fails, SIGKILL to the processes that are verifiably this data
/// dir's `postgres` processes.
pub(super) fn stop_server_hard(env: &PgEnv, cwd: &Path, data_dir: &Path) -> Result<()> {
    let pid_file = data_dir.join("postmaster.pid");
    if !pid_file.exists() {
        return Ok(());
    }
    let out = server_cmd(env, "pg_ctl", cwd)
        .args(["stop", "-w", "-t", "30", "-m", "immediate", "-D"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match &out {
        Ok(o) if o.status.success() => return Ok(()),
        Ok(o) => tracing::warn!(
            data_dir = %data_dir.display(),
            stderr = %String::from_utf8_lossy(&o.stderr).trim(),
            "testbed: pg_ctl stop failed; killing postmaster"
        ),
        Err(e) => {
            tracing::warn!(data_dir = %data_dir.display(), error = %e, "testbed: could not run pg_ctl stop; killing postmaster")
        }
    }
    kill_data_dir_processes(data_dir)
}

/// SIGKILLs the postmaster named in `data_dir/postmaster.pid` and its
/// children, identified as processes running a `postgres*` executable whose
/// working directory is `data_dir` (postgres chdirs there), then waits until
/// they are gone.
pub(super) fn kill_data_dir_processes(data_dir: &Path) -> Result<()> {
    if !Path::new("/proc/self").exists() {
        bail!(
            "no /proc: cannot verify which process serves {}",
            data_dir.display()
        );
    }
    let data_dir = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let is_ours = |pid: u32| -> bool {
        let cwd = fs::read_link(format!("/proc/{pid}/cwd"));
        let exe = fs::read_link(format!("/proc/{pid}/exe"));
        match (cwd, exe) {
            (Ok(cwd), Ok(exe)) => {
                cwd == data_dir
                    && exe
                        .file_name()
                        .is_some_and(|f| f.to_string_lossy().starts_with("postgres"))
            }
            _ => false,
        }
    };
    let mut victims: Vec<u32> = Vec::new();
    let pid_file = fs::read_to_string(data_dir.join("postmaster.pid")).unwrap_or_default();
    if let Some(pid) = pid_file
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok())
    {
        if is_ours(pid) {
            victims.push(pid);
        }
    }
    for entry in fs::read_dir("/proc")?.flatten() {
        if let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        {
            if !victims.contains(&pid) && is_ours(pid) {
                victims.push(pid);
            }
        }
    }
    for &pid in &victims {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<u32> = victims.iter().copied().filter(|&p| is_ours(p)).collect();
        if alive.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "postgres processes {alive:?} of {} survived SIGKILL",
                data_dir.display()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

// ---- sweeping leftovers of dead processes ----

/// Whether `pid` exists and is not a zombie (a killed test process may stay
/// a zombie for a while until it is reaped).
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X'))
        }
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// Once per process: removes `$TMPDIR/pgsplit-testbed-*` directories whose
/// creating process no longer exists (the pid is part of the name), after
/// stopping any server still running from them. Skips directories marked by
/// [`Cluster::keep`](super::Cluster::keep), directories of other users, and any directory whose
/// servers cannot be verified as stopped. Best effort; never fails.
pub(super) fn sweep_stale_dirs(env: &PgEnv) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| sweep_stale_dirs_in(env, &std::env::temp_dir()));
}

pub(super) fn sweep_stale_dirs_in(env: &PgEnv, tmp: &Path) {
    {
        if !Path::new("/proc/self").exists() {
            return;
        }
        let Ok(entries) = fs::read_dir(tmp) else {
            return;
        };
        let me = std::process::id();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
                continue;
            };
            let rest = rest.strip_prefix(TEMPLATE_TAG).unwrap_or(rest);
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me || process_alive(pid) {
                continue;
            }
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let owner_ok =
                meta.uid() == env.my_uid || env.run_as.is_some_and(|(uid, _)| uid == meta.uid());
            if !meta.is_dir() || !owner_ok || path.join(KEEP_MARKER).exists() {
                continue;
            }
            let mut servers_gone = true;
            if let Ok(subdirs) = fs::read_dir(&path) {
                for sub in subdirs.flatten() {
                    let data_dir = sub.path();
                    if data_dir.join("postmaster.pid").exists() {
                        if let Err(e) = stop_server_hard(env, &path, &data_dir) {
                            tracing::warn!(error = %format!("{e:#}"), "testbed: stale server not stopped");
                            servers_gone = false;
                        }
                    }
                }
            }
            if servers_gone {
                match remove_dir_retrying(&path) {
                    Ok(()) => {
                        tracing::info!(dir = %path.display(), "testbed: removed stale directory")
                    }
                    Err(e) => {
                        tracing::warn!(dir = %path.display(), error = %e, "testbed: could not remove stale directory")
                    }
                }
            }
        }
    }
}
