//! The task that checks one member's role: on a connection of its own,
//! every interval, and at once on the driver's signal or when the cluster
//! lost its primary.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::Duration;

use tokio::task::AbortHandle;

use crate::error::{error_chain, human_duration};
use crate::roles::{Role, RoleCheck, RoleManager};

use super::members::Member;
use super::shared::ClusterShared;

pub(super) fn start_checker<M: RoleManager>(
    inner: Weak<ClusterShared<M>>,
    m: Arc<Member<M>>,
) -> AbortHandle {
    tokio::spawn(watch_member(inner, m)).abort_handle()
}

/// Checks one member for as long as it is in the cluster: on its own
/// connection (so that a busy pool cannot hold a check up), every interval,
/// and at once when the driver's signal says its role may have changed or
/// the cluster lost its primary.
async fn watch_member<M: RoleManager>(cluster: Weak<ClusterShared<M>>, m: Arc<Member<M>>) {
    let manager = m.pool.manager();
    let signal = manager.role_signal().cloned();
    let mut seen = signal.as_ref().map_or(0, |s| s.raised());
    let mut conn: Option<M::Type> = None;
    loop {
        let Some(inner) = cluster.upgrade() else {
            break;
        };
        let Some(board) = inner.roles.as_ref() else {
            break;
        };
        let settings = board.settings.clone();
        drop(inner);
        let found = check_once(manager, &mut conn, settings.check_timeout).await;
        let Some(inner) = cluster.upgrade() else {
            break;
        };
        inner.record_role(&m, found);
        let board = inner.roles.as_ref().expect("checked above");
        let period = if board.current_id().is_none() {
            settings.interval / 4
        } else {
            settings.interval
        };
        let check_now = Arc::clone(&board.check_now);
        let now = pin!(check_now.notified());
        drop(inner);
        let raised = async {
            match &signal {
                Some(s) => s.raised_after(seen).await,
                None => std::future::pending().await,
            }
        };
        let woke_by_signal = first(
            pin!(raised),
            pin!(async {
                let sleep = pin!(tokio::time::sleep(period));
                first(sleep, now).await;
            }),
        )
        .await;
        if woke_by_signal {
            // A new session for the check: an old one may not have applied
            // a configuration reload yet, and may be the one dying.
            if let Some(mut c) = conn.take() {
                let _ = tokio::time::timeout(settings.check_timeout, manager.destroy(&mut c)).await;
            }
            let s = signal.as_ref().expect("raised");
            seen = s.raised();
            m.role.lock().refusals = s.refusals();
            let why = s.last_reason().unwrap_or_default();
            if let Some(inner) = cluster.upgrade() {
                inner.suspect(&m, why);
            }
        }
    }
    if let Some(mut c) = conn {
        let _ = tokio::time::timeout(Duration::from_secs(1), manager.destroy(&mut c)).await;
    }
}

/// Waits for whichever of two futures finishes first: `true` for the first.
pub(super) async fn first<A: Future, B: Future>(
    mut a: std::pin::Pin<&mut A>,
    mut b: std::pin::Pin<&mut B>,
) -> bool {
    std::future::poll_fn(|cx| {
        if a.as_mut().poll(cx).is_ready() {
            return Poll::Ready(true);
        }
        if b.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        Poll::Pending
    })
    .await
}

/// One role check on the checker's own connection, connecting first when
/// it has none; a failure drops the connection, so the next check
/// connects again.
async fn check_once<M: RoleManager>(
    manager: &M,
    conn: &mut Option<M::Type>,
    timeout: Duration,
) -> RoleCheck {
    let unreachable = |evidence: String| RoleCheck::new(Role::Unknown, evidence);
    if conn.as_ref().is_some_and(|c| manager.is_broken(c)) {
        *conn = None;
    }
    let c = match conn {
        Some(c) => c,
        None => match tokio::time::timeout(timeout, manager.create()).await {
            Ok(Ok(c)) => conn.insert(c),
            Ok(Err(e)) => return unreachable(format!("cannot connect: {}", error_chain(&e))),
            Err(_) => {
                return unreachable(format!(
                    "cannot connect: no answer within {}",
                    human_duration(timeout)
                ))
            }
        },
    };
    match tokio::time::timeout(timeout, manager.check_role(c)).await {
        Ok(Ok(check)) => check,
        Ok(Err(e)) => {
            *conn = None;
            unreachable(format!("role check failed: {}", error_chain(&e)))
        }
        Err(_) => {
            *conn = None;
            unreachable(format!(
                "role check got no answer within {}",
                human_duration(timeout)
            ))
        }
    }
}
