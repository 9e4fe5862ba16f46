//! Errors returned by the pool and by its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why a [`Pool::get`](crate::Pool::get) (or another checkout) failed.
///
/// `E` is the manager's error type. Create errors are shared between all the
/// callers they fail, so they are held in an [`Arc`].
// Every variant holds at most one word (the two with details are boxed):
// docs/performance-notes.md says why a get's result stays two words.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError<E: std::error::Error + 'static> {
    /// No object became available within the acquire timeout.
    ///
    /// When objects could not be created in that time,
    /// [`TimeoutError::last_create_error`] holds the newest create failure
    /// and is this error's `source()`, so a wrong password reads as a wrong
    /// password, not as a bare timeout.
    #[error(transparent)]
    Timeout(Box<TimeoutError<E>>),
    /// Creating an object failed with an error that retrying cannot fix
    /// ([`Manager::is_permanent`](crate::Manager::is_permanent): a wrong
    /// password, an unknown database); the source is that error. Fix the
    /// configuration: the pool tries again at the next checkout.
    #[error("could not create a pooled object")]
    Create(#[source] Box<CreateError<E>>),
    /// Nothing is idle, nothing more can be created, and `max_waiting`
    /// callers already wait for an object to come back: the pool is
    /// overloaded. Retry later, or raise `max_waiting` or `max`.
    #[error("the pool's wait queue is full ({max_waiting} callers already waiting for a return)")]
    QueueFull {
        /// The configured bound.
        max_waiting: usize,
    },
    /// [`Pool::try_get`](crate::Pool::try_get) found no idle object.
    #[error("no idle object is available right now")]
    Exhausted,
    /// The pool is draining: callers already waiting are served, new ones are not.
    #[error("the pool is draining and takes no new checkouts")]
    Draining,
    /// The pool was closed.
    #[error("the pool is closed")]
    Closed,
}

/// The details of a [`PoolError::Timeout`].
#[derive(Debug, thiserror::Error)]
#[error("timed out after {} waiting for a pooled object{}", human_duration(*waited), if last_create_error.is_some() { " while creates were failing" } else { "" })]
#[non_exhaustive]
pub struct TimeoutError<E: std::error::Error + 'static> {
    /// How long the caller waited.
    pub waited: Duration,
    /// The newest create failure seen while waiting, if any.
    #[source]
    pub last_create_error: Option<CreateError<E>>,
}

impl<E: std::error::Error + 'static> PoolError<E> {
    /// A timeout after `waited`, with the create failure behind it if any.
    pub(crate) fn timeout(waited: Duration, last_create_error: Option<CreateError<E>>) -> Self {
        PoolError::Timeout(Box::new(TimeoutError {
            waited,
            last_create_error,
        }))
    }

    /// The create failure behind this error, if there is one.
    pub fn create_error(&self) -> Option<&CreateError<E>> {
        match self {
            PoolError::Timeout(t) => t.last_create_error.as_ref(),
            PoolError::Create(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the error is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, PoolError::Timeout { .. })
    }
}

/// A failure of [`Manager::create`](crate::Manager::create).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError<E: std::error::Error + 'static> {
    /// The manager returned an error (shown as that error).
    #[error(transparent)]
    Backend(Arc<E>),
    /// `create` did not finish within `create_timeout`.
    #[error("create did not finish within {}", human_duration(*.0))]
    Timeout(Duration),
    /// `create` panicked. The pool stays usable.
    #[error("create panicked")]
    Panicked,
    /// `create` succeeded but the new object failed before its first use:
    /// broken at once (`is_broken`), or its first check or reset failed. A
    /// server that accepts connections and drops them, or one in
    /// recovery, looks like this. It counts as a failed create: the next
    /// one backs off.
    #[error("a new object failed before its first use: {what}")]
    Unusable {
        /// What failed: `broken at checkout`, `first check`, `first reset`.
        what: &'static str,
        /// The manager's error, when it gave one.
        #[source]
        source: Option<Arc<E>>,
    },
}

impl<E: std::error::Error + 'static> Clone for CreateError<E> {
    fn clone(&self) -> Self {
        match self {
            CreateError::Backend(e) => CreateError::Backend(Arc::clone(e)),
            CreateError::Timeout(d) => CreateError::Timeout(*d),
            CreateError::Panicked => CreateError::Panicked,
            CreateError::Unusable { what, source } => CreateError::Unusable {
                what,
                source: source.clone(),
            },
        }
    }
}

impl<E: std::error::Error + 'static> CreateError<E> {
    /// The manager's error, if that is what failed.
    pub fn backend(&self) -> Option<&E> {
        match self {
            CreateError::Backend(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a destroy failed; kept with a *pending* object.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DestroyError<E> {
    /// The manager returned an error.
    Backend(Arc<E>),
    /// `destroy` did not finish within `destroy_timeout`.
    Timeout(Duration),
}

impl<E: fmt::Display> fmt::Display for DestroyError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Shown as the manager's error, whose causes are its own.
            DestroyError::Backend(e) => write!(f, "{e}"),
            DestroyError::Timeout(d) => write!(f, "destroy did not finish within {d:?}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for DestroyError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DestroyError::Backend(e) => e.source(),
            DestroyError::Timeout(_) => None,
        }
    }
}

/// An error's message followed by each of its causes (through
/// [`source`](std::error::Error::source)), joined by `": "`: the whole
/// story on one line, as the pool's events and logs carry it. By the
/// convention every error here follows, a message names only its own
/// layer, so each cause appears once. Some drivers' errors also print
/// their cause in their own message (mysql_async's, rusqlite's): a cause
/// whose words were just printed is left out.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut last = text.clone();
    let mut cause = e.source();
    while let Some(c) = cause {
        let words = c.to_string();
        if !last.contains(&words) && !words.ends_with(&last) {
            text.push_str(": ");
            text.push_str(&words);
        }
        last = words;
        cause = c.source();
    }
    text
}

/// A duration as a person reads it in a message: `850 µs`, `3.8 ms`,
/// `2 s`, `1.5 s`, `2 min`, never nanoseconds.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(aquifer::human_duration(Duration::from_micros(3812)), "3.8 ms");
/// assert_eq!(aquifer::human_duration(Duration::from_secs(5)), "5 s");
/// assert_eq!(aquifer::human_duration(Duration::from_secs(150)), "2.5 min");
/// ```
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    let (n, unit) = if s >= 120.0 {
        (s / 60.0, "min")
    } else if s >= 1.0 {
        (s, "s")
    } else if s >= 0.001 {
        (s * 1e3, "ms")
    } else {
        (s * 1e6, "µs")
    };
    let text = if n >= 100.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.1}")
    };
    format!("{} {unit}", text.strip_suffix(".0").unwrap_or(&text))
}

/// A pool configuration that cannot work. The message says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `max` was 0.
    #[error("`max` must be at least 1: a pool of size 0 can never hand out an object")]
    MaxZero,
    /// `min` was larger than `max`.
    #[error("`min` ({min}) must not exceed `max` ({max}): lower `min` or raise `max`")]
    MinAboveMax {
        /// The configured minimum.
        min: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A duration that must be positive was zero.
    #[error("`{setting}` must be greater than zero{hint}")]
    ZeroDuration {
        /// The setting's name.
        setting: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// A number was outside the range it must be in.
    #[error("`{setting}` is {value} but must be {expected}")]
    OutOfRange {
        /// The setting's name.
        setting: &'static str,
        /// The value given.
        value: String,
        /// The range it must be in.
        expected: &'static str,
    },
    /// Built outside a Tokio runtime, where its background tasks cannot
    /// start.
    #[error("built outside a Tokio runtime: build it from async code, or inside `Runtime::enter`")]
    NoRuntime,
}
