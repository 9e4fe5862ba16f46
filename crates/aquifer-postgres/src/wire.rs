//! Opening the socket ourselves, so that the pool can read off the wire
//! whether a returned connection is really at rest: nothing is still
//! queued in the client on its way to the socket, every request written
//! that runs something (a Query, an Execute, a FunctionCall, copy data)
//! has been answered with its ReadyForQuery, and the last ReadyForQuery
//! said "idle" (not inside a transaction). Requests that run nothing may
//! still be in flight: tokio-postgres closes a dropped statement with a
//! Close and a Sync that nobody waits for. A connection at rest costs no
//! round trip on return; any other waits for its answers and is rolled
//! back if the server then says it is inside a transaction.
//! tokio-postgres parses the status byte but exposes neither it nor its
//! queue.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
#[cfg(feature = "tls")]
use tokio_postgres::tls::TlsConnect;
use tokio_postgres::tls::{ChannelBinding, TlsStream};

mod driver;
mod evidence;
mod socket;

pub(crate) use driver::Driver;
use driver::IoState;
#[cfg(feature = "tls")]
pub(crate) use socket::Socket;
pub(crate) use socket::{host_count, open_host};

/// The transaction status the server last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxStatus {
    /// Not in a transaction.
    Idle,
    /// Inside a transaction block.
    InTransaction,
    /// Inside a failed transaction block: only `ROLLBACK` works.
    Failed,
    /// Nothing reported yet, or a request that runs something is still
    /// unanswered.
    Unknown,
}

/// The driver task is inside a poll of the connection.
const IN_POLL: u8 = 1;
/// The driver task was woken since its last poll began: a request may have
/// been queued that no poll has taken yet.
const WOKEN: u8 = 2;
/// The socket's last event in this poll was a completed flush: all that
/// the connection had to write is written.
const FLUSHED: u8 = 4;
/// A reset waits for the driver's poll to end.
const WAITING: u8 = 8;

/// What the socket reader, the socket writer and the driver task tell the
/// pool about one connection.
#[derive(Default)]
struct Wire {
    /// The last ReadyForQuery's status byte.
    status: AtomicU8,
    /// Requests written that the server answers with one ReadyForQuery:
    /// Query, Sync, FunctionCall, and the startup message.
    sent: AtomicU64,
    /// The number (in `sent`'s count) of the last request written that
    /// runs something: once that many are answered, nothing of the last
    /// borrower's is still to run.
    effect: AtomicU64,
    /// ReadyForQuery messages read, plus CopyInResponse ones: a copy-in
    /// started by the extended protocol swallows the Sync sent with it.
    answered: AtomicU64,
    /// A copy-in is under way: from CopyInResponse to the ReadyForQuery
    /// that ends it.
    copying: AtomicBool,
    /// `IN_POLL | WOKEN | FLUSHED | WAITING`.
    driver: AtomicU8,
    /// Signalled when a poll of the driver ends and a reset waits for it.
    polled: Notify,
    /// The connection's I/O, for the driver task and for helpers.
    drive: parking_lot::Mutex<IoState>,
    /// Signs that the server's role changed.
    role: evidence::RoleWire,
}

/// A connection's view of its wire, shared with its socket and driver.
#[derive(Clone, Default)]
pub(crate) struct WireWatch(Arc<Wire>);

impl std::fmt::Debug for WireWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireWatch")
            .field("tx", &self.get())
            .field("written", &self.written())
            .field("driver", &self.0.driver.load(Ordering::Relaxed))
            .field("sent", &self.0.sent.load(Ordering::Relaxed))
            .field("effect", &self.0.effect.load(Ordering::Relaxed))
            .field("answered", &self.0.answered.load(Ordering::Relaxed))
            .finish()
    }
}

impl WireWatch {
    pub(crate) fn get(&self) -> TxStatus {
        if !self.ran() {
            return TxStatus::Unknown;
        }
        match self.0.status.load(Ordering::Acquire) {
            b'I' => TxStatus::Idle,
            b'T' => TxStatus::InTransaction,
            b'E' => TxStatus::Failed,
            _ => TxStatus::Unknown,
        }
    }

    fn set(&self, byte: u8) {
        self.0.status.store(byte, Ordering::Release);
    }

    /// Every request the client queued before this call is on the wire:
    /// the driver is not in a poll, was not woken since its last poll
    /// began, and that poll ended with everything flushed.
    fn written(&self) -> bool {
        self.0.driver.load(Ordering::Acquire) & (IN_POLL | WOKEN | FLUSHED) == FLUSHED
    }

    /// Every request written that runs something has been answered.
    fn ran(&self) -> bool {
        let answered = self.0.answered.load(Ordering::Acquire);
        answered >= self.0.effect.load(Ordering::Acquire) && !self.0.copying.load(Ordering::Acquire)
    }

    /// Nothing queued, everything that runs something answered, and the
    /// server said it is outside a transaction.
    pub(crate) fn at_rest(&self) -> bool {
        self.written() && self.get() == TxStatus::Idle
    }

    /// Waits until every request queued before the call is on the wire
    /// and every one of them that runs something has been answered.
    pub(crate) async fn settle(&self) {
        loop {
            let notified = self.0.polled.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            self.0.driver.fetch_or(WAITING, Ordering::AcqRel);
            if self.written() && self.ran() {
                return;
            }
            // The driver has a wake-up coming: it was woken, is polling
            // now, waits for the socket to take more, or for an answer.
            notified.await;
        }
    }

    fn begin_poll(&self) {
        // Clears WOKEN and FLUSHED; keeps WAITING, since a reset may be
        // waiting for this poll to end.
        let _ = self
            .0
            .driver
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some(IN_POLL | (s & WAITING))
            });
    }

    fn end_poll(&self) {
        let before = self
            .0
            .driver
            .fetch_and(!(IN_POLL | WAITING), Ordering::AcqRel);
        if before & WAITING != 0 {
            self.0.polled.notify_waiters();
        }
    }

    fn woken(&self) {
        self.0.driver.fetch_or(WOKEN, Ordering::AcqRel);
    }

    fn wrote(&self, requests: &Requests) {
        self.0.driver.fetch_and(!FLUSHED, Ordering::AcqRel);
        self.0.effect.store(requests.effect, Ordering::Release);
        self.0.sent.store(requests.sent, Ordering::Release);
    }

    fn flushed(&self) {
        self.0.driver.fetch_or(FLUSHED, Ordering::AcqRel);
    }

    fn answer(&self) {
        self.0.answered.fetch_add(1, Ordering::AcqRel);
    }

    fn copy_in(&self, on: bool) {
        self.0.copying.store(on, Ordering::Release);
    }
}

/// The message framing both directions share: a type byte, a 4-byte
/// big-endian length that counts itself, then the payload; followed
/// across reads of any size.
#[derive(Debug, Default)]
struct Framing {
    header: [u8; 5],
    have: usize,
    /// Payload bytes still to pass over.
    skip: usize,
}

impl Framing {
    /// Framing whose first message has no type byte (the frontend's
    /// startup message).
    fn untyped_first() -> Self {
        Self {
            have: 1,
            ..Self::default()
        }
    }

    /// Takes the payload bytes at the front of `data` that the current
    /// message still owes, and returns them (empty between messages).
    fn payload<'a>(&mut self, data: &mut &'a [u8]) -> &'a [u8] {
        let n = self.skip.min(data.len());
        self.skip -= n;
        let (payload, rest) = data.split_at(n);
        *data = rest;
        payload
    }

    /// Takes header bytes from the front of `data`: the message's type
    /// byte and payload length once its header is complete.
    fn header(&mut self, data: &mut &[u8]) -> Option<(u8, usize)> {
        let n = (5 - self.have).min(data.len());
        self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
        self.have += n;
        *data = &data[n..];
        if self.have < 5 {
            return None;
        }
        self.have = 0;
        let h = self.header;
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        self.skip = len.saturating_sub(4);
        Some((h[0], self.skip))
    }
}

/// Follows the backend messages, picks out ReadyForQuery's status byte and
/// counts the messages that answer a request.
#[derive(Debug, Default)]
struct Frame {
    framing: Framing,
    evidence: evidence::Collector,
    /// The payload being passed over is ReadyForQuery's, not yet read.
    ready_for_query: bool,
}

impl Frame {
    fn feed(&mut self, mut data: &[u8], status: &WireWatch) {
        while !data.is_empty() {
            let payload = self.framing.payload(&mut data);
            if let Some(&byte) = payload.first() {
                self.evidence.take(payload);
                if self.framing.skip == 0 {
                    self.evidence.end(status);
                }
                if std::mem::take(&mut self.ready_for_query) {
                    status.set(byte);
                    status.copy_in(false);
                    status.answer();
                }
                continue;
            }
            let Some((kind, len)) = self.framing.header(&mut data) else {
                continue;
            };
            self.evidence.begin(kind);
            if len == 0 {
                self.evidence.end(status);
            }
            self.ready_for_query = kind == b'Z' && len > 0;
            // ReadyForQuery is read above; the rest of an answer counts for
            // nothing until its ReadyForQuery comes. Copy-in mode ignores
            // the Sync that came with the Execute; the one after CopyDone
            // or CopyFail is answered.
            if kind == b'G' {
                status.copy_in(true);
                status.answer();
            }
        }
    }
}

/// Follows the frontend messages and counts the requests the server will
/// answer with a ReadyForQuery, noting the last one that runs something.
/// The first message (the startup message) has no type byte.
#[derive(Debug)]
struct Requests {
    framing: Framing,
    started: bool,
    /// Requests so far (the startup message is the first).
    sent: u64,
    /// The number of the last request that runs something.
    effect: u64,
    /// The extended-protocol messages since the last Sync run something.
    runs: bool,
}

impl Default for Requests {
    fn default() -> Self {
        Self {
            framing: Framing::untyped_first(),
            started: false,
            sent: 0,
            effect: 0,
            runs: false,
        }
    }
}

impl Requests {
    /// Follows `data`, counting each message as its header completes.
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if !self.framing.payload(&mut data).is_empty() {
                continue;
            }
            let Some((kind, _)) = self.framing.header(&mut data) else {
                continue;
            };
            if !self.started {
                self.started = true;
                self.sent += 1;
                continue;
            }
            match kind {
                // Execute, and copy data, done or fail.
                b'E' | b'd' | b'c' | b'f' => self.runs = true,
                b'S' => {
                    self.sent += 1;
                    if std::mem::take(&mut self.runs) {
                        self.effect = self.sent;
                    }
                }
                b'Q' | b'F' => {
                    self.sent += 1;
                    self.effect = self.sent;
                }
                // Parse, Bind, Describe, Close, Flush, password and
                // Terminate messages run nothing.
                _ => {}
            }
        }
    }
}

/// A stream whose traffic is watched: ReadyForQuery and the requests it
/// answers, and whether everything written has been flushed.
#[derive(Debug)]
pub(crate) struct Watched<S> {
    inner: S,
    frame: Frame,
    requests: Requests,
    status: WireWatch,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, status: WireWatch) -> Self {
        Self {
            inner,
            frame: Frame::default(),
            requests: Requests::default(),
            status,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.frame.feed(&buf.filled()[before..], &this.status);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.requests.feed(&buf[..n]);
        }
        this.status.wrote(&this.requests);
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = polled {
            this.status.flushed();
        }
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = polled {
            for b in bufs {
                let take = n.min(b.len());
                this.requests.feed(&b[..take]);
                n -= take;
                if n == 0 {
                    break;
                }
            }
        }
        this.status.wrote(&this.requests);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: TlsStream + Unpin> TlsStream for Watched<S> {
    fn channel_binding(&self) -> ChannelBinding {
        self.inner.channel_binding()
    }
}

/// A TLS connector whose decrypted stream is watched.
#[cfg(feature = "tls")]
pub(crate) struct WatchedTls<T> {
    pub(crate) inner: T,
    pub(crate) status: WireWatch,
}

#[cfg(feature = "tls")]
impl<S, T> TlsConnect<S> for WatchedTls<T>
where
    T: TlsConnect<S>,
    T::Future: Send + 'static,
{
    type Stream = Watched<T::Stream>;
    type Error = T::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Stream, T::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let handshake = self.inner.connect(stream);
        let status = self.status;
        Box::pin(async move { Ok(Watched::new(handshake.await?, status)) })
    }
}

#[cfg(test)]
mod tests;
