//! What a manager must promise for its objects to be multiplexed.

use crate::manager::Manager;

/// A [`Manager`] whose objects serve many requests at once through a
/// shared reference: a tokio-postgres `Client` pipelines the requests of
/// every task that holds `&Client`. Implement it only when concurrent use
/// is correct and a request leaves nothing on the connection that the next
/// one could see (no open transaction, no session setting).
pub trait Multiplexed: Manager<Type: Sync> {
    /// Whether the session that every request on `conn` shares has
    /// changed since it opened (a setting, a role, a lock or a temporary
    /// table that a statement left behind). Run on each connection at every
    /// maintenance tick, alongside its requests; `true` retires the
    /// connection: it takes no new request, closes once its requests end,
    /// and is replaced. Default: never.
    fn session_changed(&self, conn: &Self::Type) -> impl std::future::Future<Output = bool> + Send {
        let _ = conn;
        std::future::ready(false)
    }
}
