//! The clusters and pools a configuration describes, built.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aquifer::{
    error_chain, Cluster, ClusterBuilder, ClusterPool, Manager, Multiplexer, Pool, RoleManager,
    Selector,
};
use aquifer_admin::{NamedMux, NamedPool, Source};
use aquifer_mysql::MySqlManager;
use aquifer_postgres::{PgManager, PgMuxManager};
use aquifer_sqlite::{SqliteConfig, SqliteConfigError, SqliteManager};

use crate::config::{ClusterSection, Config, ConfigError, PoolSection};

/// Which driver a URL needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Driver {
    Postgres,
    MySql,
    Sqlite,
}

impl Driver {
    /// The driver a URL's scheme names; anything else is refused with the
    /// forms to write, never taken for a SQLite file name.
    pub(crate) fn of(url: &str) -> Result<Self, String> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") if url.contains("://") => Ok(Driver::Postgres),
            Some("mysql" | "mariadb") if url.contains("://") => Ok(Driver::MySql),
            Some("sqlite") => Ok(Driver::Sqlite),
            _ => Err(format!(
                "`{}` is not a database URL: write postgres://user@host:5432/db, \
                 mysql://user@host:3306/db (or mariadb://), sqlite:///absolute/path.db, \
                 sqlite://path/relative/to/the/config.db or sqlite::memory:",
                redact(url)
            )),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Driver::Postgres => "postgres",
            Driver::MySql => "mysql",
            Driver::Sqlite => "sqlite",
        }
    }
}

/// A built pool of any driver.
pub(crate) enum AnyPool {
    Postgres(Pool<PgManager>),
    MySql(Pool<MySqlManager>),
    Sqlite(Pool<SqliteManager>),
}

impl AnyPool {
    fn pg(&self) -> Option<&Pool<PgManager>> {
        match self {
            AnyPool::Postgres(p) => Some(p),
            _ => None,
        }
    }

    fn mysql(&self) -> Option<&Pool<MySqlManager>> {
        match self {
            AnyPool::MySql(p) => Some(p),
            _ => None,
        }
    }

    fn sqlite(&self) -> Option<&Pool<SqliteManager>> {
        match self {
            AnyPool::Sqlite(p) => Some(p),
            _ => None,
        }
    }
}

/// Everything `serve` and `check` work on.
pub(crate) struct Fleet {
    /// Each cluster and each pool outside a cluster, by name.
    pub(crate) sources: Vec<(String, Arc<dyn Source>)>,
    /// The SQLite clusters, for the demo workload.
    pub(crate) sqlite: Vec<Cluster<SqliteManager>>,
}

fn manager_error(cfg: &Config, name: &str, e: &(dyn std::error::Error + 'static)) -> ConfigError {
    cfg.pool_error(name, "url", error_chain(e))
}

fn build_pool<M: Manager>(
    cfg: &Config,
    name: &str,
    sec: &PoolSection,
    manager: M,
    eager: bool,
) -> Result<Pool<M>, ConfigError> {
    let mut b = Pool::builder(manager).config(sec.options.clone());
    if !eager {
        b = b.eager(false);
    }
    b.build()
        .map_err(|e| cfg.pool_error(name, "pool", error_chain(&e)))
}

fn cluster_builder<M: Manager>(sec: &ClusterSection) -> ClusterBuilder<M> {
    let mut b = Cluster::builder().mode(sec.mode);
    if let Some(t) = sec.ban_time {
        b = b.ban_time(t);
    }
    if let Some(t) = sec.acquire_timeout {
        b = b.acquire_timeout(t);
    }
    if let Some(n) = sec.max_warnings {
        b = b.max_warnings(n);
    }
    if let Some(f) = &sec.log_file {
        b = b.log_file(f, sec.log_max_bytes);
    }
    b
}

/// A cluster of a driver whose servers tell their role: a replica set
/// when the section says `roles = true`.
fn with_roles<M: RoleManager>(sec: &ClusterSection) -> Cluster<M> {
    let b = cluster_builder::<M>(sec);
    match &sec.roles {
        Some(r) => b.roles(r.clone()).build(),
        None => b.build(),
    }
}

/// Cluster `cname` of the pools in `mine` that `pick` finds.
fn join<M: Manager>(
    cfg: &Config,
    cname: &str,
    csec: &ClusterSection,
    mine: &[&(String, Driver, AnyPool)],
    pick: fn(&AnyPool) -> Option<&Pool<M>>,
    build: fn(&ClusterSection) -> Cluster<M>,
) -> Result<Cluster<M>, ConfigError> {
    let cluster = build(csec);
    for (name, _, pool) in mine {
        let Some(pool) = pick(pool) else { continue };
        let sec = &cfg.pools[name];
        let mut member = ClusterPool::new(name, pool.clone()).weight(sec.weight);
        for t in &sec.tags {
            member = member.tag(t);
        }
        cluster
            .add(member)
            .map_err(|e| cfg.pool_error(name, "cluster", format!("cannot join `{cname}`: {e}")))?;
    }
    Ok(cluster)
}

impl Fleet {
    /// Builds every cluster and pool. With `eager` false nothing connects
    /// until first used.
    pub(crate) fn build(cfg: &Config, eager: bool) -> Result<Fleet, ConfigError> {
        let mut fleet = Fleet {
            sources: Vec::new(),
            sqlite: Vec::new(),
        };
        let mut built = Vec::new();
        for (name, sec) in &cfg.pools {
            let driver = Driver::of(&sec.url).map_err(|p| cfg.pool_error(name, "url", p))?;
            let pool = match driver {
                Driver::Postgres => {
                    let m = PgManager::new(&sec.url).map_err(|e| manager_error(cfg, name, &e))?;
                    AnyPool::Postgres(build_pool(cfg, name, sec, m, eager)?)
                }
                Driver::MySql => {
                    let url = sec.url.replacen("mariadb://", "mysql://", 1);
                    let m = MySqlManager::new(&url).map_err(|e| manager_error(cfg, name, &e))?;
                    AnyPool::MySql(build_pool(cfg, name, sec, m, eager)?)
                }
                Driver::Sqlite => {
                    let c = sqlite_config(&sec.url, &cfg.dir, sec.create)
                        .map_err(|e| manager_error(cfg, name, &e))?;
                    let m = SqliteManager::new(c).map_err(|e| manager_error(cfg, name, &e))?;
                    AnyPool::Sqlite(build_pool(cfg, name, sec, m, eager)?)
                }
            };
            built.push((name.clone(), driver, pool));
        }

        for (cname, csec) in &cfg.clusters {
            let mine: Vec<&(String, Driver, AnyPool)> = built
                .iter()
                .filter(|(n, ..)| cfg.pools[n].cluster.as_deref() == Some(cname))
                .collect();
            if let Some((first, d, _)) = mine.first() {
                if let Some((other, od, _)) = mine.iter().find(|(_, od, _)| od != d) {
                    return Err(cfg.pool_error(
                        other,
                        "cluster",
                        format!(
                            "cluster `{cname}` holds {} pools ({first}) and this is {}: a cluster holds one driver; put it in a cluster of its own",
                            d.name(),
                            od.name()
                        ),
                    ));
                }
            }
            let source: Arc<dyn Source> = match mine.first().map(|(_, d, _)| *d) {
                Some(Driver::Postgres) => {
                    Arc::new(join(cfg, cname, csec, &mine, AnyPool::pg, with_roles)?)
                }
                Some(Driver::MySql) => {
                    Arc::new(join(cfg, cname, csec, &mine, AnyPool::mysql, with_roles)?)
                }
                Some(Driver::Sqlite) | None => {
                    let build = |s: &ClusterSection| cluster_builder(s).build();
                    let c = join(cfg, cname, csec, &mine, AnyPool::sqlite, build)?;
                    fleet.sqlite.push(c.clone());
                    Arc::new(c)
                }
            };
            fleet.sources.push((cname.clone(), source));
        }
        for (name, _, pool) in built {
            if cfg.pools[&name].cluster.is_none() {
                let source: Arc<dyn Source> = match pool {
                    AnyPool::Postgres(p) => Arc::new(NamedPool::new(&name, p)),
                    AnyPool::MySql(p) => Arc::new(NamedPool::new(&name, p)),
                    AnyPool::Sqlite(p) => Arc::new(NamedPool::new(&name, p)),
                };
                fleet.sources.push((name, source));
            }
        }
        for (name, sec) in &cfg.multiplexers {
            let m =
                PgMuxManager::new(&sec.url).map_err(|e| cfg.mux_error(name, error_chain(&e)))?;
            let mux = Multiplexer::builder(m)
                .config(sec.options.clone())
                .build()
                .map_err(|e| cfg.mux_error(name, error_chain(&e)))?;
            fleet
                .sources
                .push((name.clone(), Arc::new(NamedMux::new(name, mux))));
        }
        Ok(fleet)
    }

    /// Closes every pool: no new gets, connections out are waited for up
    /// to `wait`, then closed; ones that fail to close are dropped.
    /// Returns how many pools were closed.
    pub(crate) async fn close(&self, wait: Duration) -> usize {
        let mut closed = 0;
        for (_, s) in &self.sources {
            closed += s.remove(&Selector::Any, wait).await.map_or(0, |n| n.len());
            s.close_pending(true).await;
        }
        closed
    }
}

/// A SQLite URL's configuration as the binary opens it: a relative path
/// is relative to `dir` (the configuration file's), and a missing file is
/// created only when `create` is true or the URL says `mode=rwc`.
pub(crate) fn sqlite_config(
    url: &str,
    dir: &Path,
    create: Option<bool>,
) -> Result<SqliteConfig, SqliteConfigError> {
    let config = SqliteConfig::from_url(url)?.relative_to(dir);
    let url_says = url
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|p| p.starts_with("mode=")));
    Ok(if url_says {
        config
    } else {
        config.create(create.unwrap_or(false))
    })
}

/// A URL fit to print: whatever stands before an `@` (a user and maybe a
/// password) is left out.
pub(crate) fn redact(url: &str) -> String {
    match url.rfind('@') {
        Some(at) => format!("…{}", &url[at..]),
        None => url.to_owned(),
    }
}
