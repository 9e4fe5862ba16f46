//! The wire watcher on scripted traffic.

use std::future::Future;

use super::*;

fn message(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&(payload.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// A startup message, as the client writes it: no type byte.
fn startup() -> Vec<u8> {
    let body = b"\0\x03\0\0user\0app\0\0";
    let mut m = (body.len() as u32 + 4).to_be_bytes().to_vec();
    m.extend_from_slice(body);
    m
}

/// Feeds `out` to the writer's framing and `back` to the reader's, in
/// chunks of every size, and checks each ends in the same state.
fn wire(out: &[u8], back: &[u8]) -> WireWatch {
    let whole = WireWatch::default();
    let mut requests = Requests::default();
    requests.feed(out);
    whole.wrote(&requests);
    Frame::default().feed(back, &whole);
    for chunk in 1..out.len().max(back.len()) {
        let status = WireWatch::default();
        let mut requests = Requests::default();
        for piece in out.chunks(chunk) {
            requests.feed(piece);
        }
        status.wrote(&requests);
        let mut frame = Frame::default();
        for piece in back.chunks(chunk) {
            frame.feed(piece, &status);
        }
        assert_eq!(
            status.0.sent.load(Ordering::Relaxed),
            whole.0.sent.load(Ordering::Relaxed)
        );
        assert_eq!(
            status.0.effect.load(Ordering::Relaxed),
            whole.0.effect.load(Ordering::Relaxed)
        );
        assert_eq!(status.get(), whole.get(), "chunks of {chunk}");
    }
    whole
}

#[test]
fn requests_that_run_something_are_counted_until_answered() {
    let mut out = startup();
    let mut back = message(b'R', b"\0\0\0\0");
    back.extend(message(b'Z', b"I"));
    let st = wire(&out, &back);
    assert_eq!(st.get(), TxStatus::Idle, "the startup message is answered");

    // A simple query: unknown until its ReadyForQuery.
    out.extend(message(b'Q', b"BEGIN\0"));
    let st = wire(&out, &back);
    assert_eq!(st.get(), TxStatus::Unknown);
    back.extend(message(b'C', b"BEGIN\0"));
    let st = wire(&out, &back);
    assert_eq!(st.get(), TxStatus::Unknown, "half an answer is no answer");
    back.extend(message(b'Z', b"T"));
    assert_eq!(wire(&out, &back).get(), TxStatus::InTransaction);

    // A prepare (Parse, Describe, Sync) and a dropped statement's
    // Close and Sync run nothing: unanswered, they leave it known.
    out.extend(message(b'P', b"s0\0SELECT 1\0\0\0"));
    out.extend(message(b'D', b"Ss0\0"));
    out.extend(message(b'S', b""));
    out.extend(message(b'C', b"Ss0\0"));
    out.extend(message(b'S', b""));
    let st = wire(&out, &back);
    assert_eq!(st.get(), TxStatus::InTransaction);
    assert_eq!(st.0.sent.load(Ordering::Relaxed), 4);

    // Bind, Execute, Sync runs something; a 'Z' inside a payload and an
    // error before the ReadyForQuery do not answer it.
    out.extend(message(b'B', b"\0s0\0\0\0\0\0\0\0"));
    out.extend(message(b'E', b"\0\0\0\0\0"));
    out.extend(message(b'S', b""));
    back.extend(message(b'1', b""));
    back.extend(message(b'Z', b"T"));
    back.extend(message(b'3', b""));
    back.extend(message(b'Z', b"T"));
    back.extend(message(b'D', b"ZZZZ\0\0\0\x05ZZZZ"));
    back.extend(message(b'E', b"SERROR\0C22012\0\0"));
    back.extend(message(b'N', b"notice\0"));
    assert_eq!(wire(&out, &back).get(), TxStatus::Unknown);
    back.extend(message(b'Z', b"E"));
    assert_eq!(wire(&out, &back).get(), TxStatus::Failed);
    back.extend(message(b'N', b"notice\0"));
    assert_eq!(
        wire(&out, &back).get(),
        TxStatus::Failed,
        "a notice changes nothing"
    );
}

/// A copy-in by the extended protocol: the server ignores the Sync
/// sent with the Execute, and answers the one after CopyDone.
#[test]
fn a_copy_in_swallows_one_sync() {
    let mut out = startup();
    let mut back = message(b'Z', b"I");
    out.extend(message(b'B', b"\0s1\0\0\0\0\0\0\0"));
    out.extend(message(b'E', b"\0\0\0\0\0"));
    out.extend(message(b'S', b""));
    back.extend(message(b'2', b""));
    back.extend(message(b'G', b"\0\0\0"));
    assert_eq!(wire(&out, &back).get(), TxStatus::Unknown);
    out.extend(message(b'd', b"1\n"));
    out.extend(message(b'c', b""));
    out.extend(message(b'S', b""));
    back.extend(message(b'C', b"COPY 1\0"));
    assert_eq!(wire(&out, &back).get(), TxStatus::Unknown);
    back.extend(message(b'Z', b"I"));
    let st = wire(&out, &back);
    assert_eq!(st.get(), TxStatus::Idle);
    assert_eq!(st.0.sent.load(Ordering::Relaxed), 3);
    assert_eq!(st.0.answered.load(Ordering::Relaxed), 3);
}

/// The driver's flags: written only after a whole poll that began
/// after the last wake-up and ended flushed.
#[test]
fn written_needs_a_flushed_poll_after_the_last_wake_up() {
    let st = WireWatch::default();
    assert!(!st.written(), "never polled");
    st.begin_poll();
    st.flushed();
    assert!(!st.written(), "in a poll");
    st.end_poll();
    assert!(st.written());
    st.woken();
    assert!(!st.written(), "woken: a request may be queued");
    st.begin_poll();
    st.flushed();
    st.wrote(&Requests::default());
    st.end_poll();
    assert!(!st.written(), "wrote after the last flush");
    st.begin_poll();
    st.flushed();
    st.end_poll();
    assert!(st.written());
}

/// The startup flushes the socket before any driver exists: a request
/// queued before the driver's first poll wakes nobody, so the
/// connection must not count as written until that poll.
#[tokio::test]
async fn a_new_connection_is_written_only_after_its_drivers_first_poll() {
    let st = WireWatch::default();
    st.flushed();
    let mut driver = Driver::new(Box::pin(std::future::pending()), st.clone());
    assert!(!st.written());
    st.help_write();
    assert!(
        !st.written(),
        "a helper cannot poll before the driver has a waker"
    );
    assert!(futures_poll_once(&mut driver).await.is_pending());
    assert!(!st.written(), "the pending I/O future flushed nothing");
    st.flushed();
    assert!(st.written());
}

/// A returning borrower never waits for the driver task: while the task
/// is in a poll (here: holds the connection's I/O), helping gives up at
/// once and the connection stays unwritten, for a reset task to settle.
/// (Two hundred helps that each waited for the poll to end would take a
/// millisecond each at least.)
#[tokio::test]
async fn a_returning_borrower_never_waits_for_the_driver_task() {
    let st = WireWatch::default();
    let mut driver = Driver::new(Box::pin(std::future::pending()), st.clone());
    assert!(futures_poll_once(&mut driver).await.is_pending());
    st.woken();
    let in_poll = st.0.drive.lock();
    let start = std::time::Instant::now();
    for _ in 0..200 {
        st.help_write();
    }
    let took = start.elapsed();
    drop(in_poll);
    assert!(!st.written(), "nothing polled the connection");
    assert!(
        took < std::time::Duration::from_millis(100),
        "200 helps took {took:?}: a help waited for the driver's poll"
    );
}

async fn futures_poll_once(f: &mut Driver) -> Poll<Result<(), tokio_postgres::Error>> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
}
