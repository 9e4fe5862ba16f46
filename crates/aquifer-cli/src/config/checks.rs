//! Checks of what `serve` would use, made without using it.

use std::path::Path;

use crate::fleet::Driver;

/// `host:port`, as `serve` will bind it.
pub(crate) fn check_listen(text: &str) -> Result<(), String> {
    let ok = match text.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{text}` is not an address to listen on: write host:port, such as \"127.0.0.1:7070\" or \"0.0.0.0:7070\" (port 0 picks a free one)"
        ))
    }
}

/// Whether the driver takes the URL, parsed as it will be used; nothing
/// is opened.
pub(super) fn check_url(driver: Driver, url: &str, dir: &Path) -> Result<(), String> {
    let chain = |e: &(dyn std::error::Error + 'static)| aquifer::error_chain(e);
    match driver {
        Driver::Postgres => aquifer_postgres::PgManager::new(url)
            .map(drop)
            .map_err(|e| chain(&e)),
        Driver::MySql => {
            aquifer_mysql::MySqlManager::new(&url.replacen("mariadb://", "mysql://", 1))
                .map(drop)
                .map_err(|e| chain(&e))
        }
        Driver::Sqlite => crate::fleet::sqlite_config(url, dir, None)
            .map(drop)
            .map_err(|e| chain(&e)),
    }
}
