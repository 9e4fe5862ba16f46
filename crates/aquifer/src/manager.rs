//! The trait a pool uses to make, check and close its objects.

use std::future::Future;

/// Makes, checks, resets and closes the objects of a [`Pool`](crate::Pool).
///
/// Only [`create`](Manager::create) is required; the rest default to "always
/// fine" and "nothing to do".
///
/// ```
/// use std::convert::Infallible;
///
/// struct Counter(std::sync::atomic::AtomicU32);
///
/// impl aquifer::Manager for Counter {
///     type Type = u32;
///     type Error = Infallible;
///
///     async fn create(&self) -> Result<u32, Infallible> {
///         Ok(self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
///     }
/// }
/// ```
pub trait Manager: Send + Sync + 'static {
    /// The pooled object, e.g. a database connection.
    type Type: Send + 'static;
    /// What `create` and the checks fail with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Makes a new object.
    fn create(&self) -> impl Future<Output = Result<Self::Type, Self::Error>> + Send;

    /// Checks that an object still works (a round trip to the server). Runs on
    /// checkout when `validate_on_borrow` is set and the object idled at
    /// least `validate_if_idle_for`, and in the background every
    /// `keepalive_interval`. An error destroys the object.
    fn validate(
        &self,
        obj: &mut Self::Type,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = obj;
        async { Ok(()) }
    }

    /// A cheap, synchronous check (a closed socket, say) made on checkout and
    /// on return. `true` destroys the object.
    fn is_broken(&self, obj: &Self::Type) -> bool {
        let _ = obj;
        false
    }

    /// Whether [`reset`](Manager::reset) must run before the object is used
    /// again. Returning `false` (the default) keeps the return path
    /// synchronous; return `true` whenever the object may carry state over
    /// (an open transaction, session settings, a request still in flight).
    /// Runs on every return, so keep it cheap; it takes the object by
    /// `&mut` so that it can read a driver's state that only a mutable
    /// borrow exposes, or clear per-checkout marks.
    fn needs_reset(&self, obj: &mut Self::Type) -> bool {
        let _ = obj;
        false
    }

    /// Brings a returned object back to a clean state, e.g. rolls back an
    /// open transaction. Runs on return when `needs_reset` says so, within
    /// `reset_timeout`; an error destroys the object.
    fn reset(&self, obj: &mut Self::Type) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = obj;
        async { Ok(()) }
    }

    /// Whether a create error is one that time cannot fix (a wrong
    /// password, an unknown database, a file that is not a database): the
    /// callers waiting for that create then fail at once with
    /// [`PoolError::Create`](crate::PoolError::Create) instead of waiting
    /// out their timeout while the pool retries. Default `false`: every
    /// error is retried with backoff until the caller's deadline.
    fn is_permanent(&self, error: &Self::Error) -> bool {
        let _ = error;
        false
    }

    /// A short name for what this manager connects to (`postgres`,
    /// `sqlite`…), for operators' views such as
    /// [`Cluster::info_about`](crate::Cluster::info_about). Default `custom`.
    fn driver_name(&self) -> &'static str {
        "custom"
    }

    /// Where this manager connects, for operators' views, never with
    /// credentials: `host:port/database` for a server, the file's path for
    /// an embedded database. Default `None`.
    fn server(&self) -> Option<String> {
        None
    }

    /// Closes an object, within `destroy_timeout`. The pool drops the object
    /// afterwards; when this fails or times out the object is kept as
    /// *pending* (see [`Pool::pending`](crate::Pool::pending)).
    fn destroy(
        &self,
        obj: &mut Self::Type,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = obj;
        async { Ok(()) }
    }
}
