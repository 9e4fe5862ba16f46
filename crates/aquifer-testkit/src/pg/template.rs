//! The `initdb` template every test server starts from.

use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{chown_tree, run, write_owned, PG_PASSWORD};
use crate::TestkitError;

/// The `initdb` template every server copies: made once per machine and
/// server version, under the temp dir, and reused by later runs.
pub(super) fn template(
    bin: &Path,
    owner: Option<(u32, u32)>,
) -> Result<&'static Path, TestkitError> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| make_template(bin, owner).map_err(|e| e.to_string()))
        .as_deref()
        .map_err(|e| TestkitError::Startup {
            server: "PostgreSQL (initdb)",
            log: e.clone(),
        })
}

fn make_template(bin: &Path, owner: Option<(u32, u32)>) -> Result<PathBuf, TestkitError> {
    let version = run(Command::new(bin.join("postgres")).arg("--version"))?;
    let version: String = version
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or("unknown")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    let uid = owner.map_or_else(|| "self".to_owned(), |(u, _)| u.to_string());
    let base = std::env::temp_dir().join(format!("aquifer-testkit-{uid}"));
    fs::create_dir_all(&base).map_err(|e| TestkitError::io("creating the template dir", e))?;
    let done = base.join(format!("pg-{version}"));
    if done.join("PG_VERSION").is_file() {
        return Ok(done);
    }
    let stage = tempfile::Builder::new()
        .prefix("pg-stage-")
        .tempdir_in(&base)
        .map_err(|e| TestkitError::io("creating the template dir", e))?;
    let pwfile = stage.path().join("pwfile");
    write_owned(&pwfile, PG_PASSWORD, owner)?;
    let data = stage.path().join("data");
    chown_tree(stage.path(), owner)?;
    let mut cmd = Command::new(bin.join("initdb"));
    cmd.arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .env("LC_ALL", "C");
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    run(&mut cmd)?;
    // Another process may have finished first; either template is good.
    match fs::rename(&data, &done) {
        Ok(()) => Ok(done),
        Err(_) if done.join("PG_VERSION").is_file() => Ok(done),
        Err(e) => Err(TestkitError::io("publishing the template", e)),
    }
}
