//! A TCP proxy between a pool and a server whose faults are switched at run
//! time: the tests' way to cut the network (pgcat uses toxiproxy for this).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::TestkitError;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward everything as it comes.
    #[default]
    Pass,
    /// Delay every chunk, both ways, by this much (connects included, as
    /// the server's greeting is delayed too).
    Latency(Duration),
    /// Accept and hold connections but forward nothing, like a dead network
    /// path: no error, no data, until the fault changes.
    Blackhole,
    /// Reset every new connection at once. Open ones keep working.
    Refuse,
}

#[derive(Debug, Clone, Copy, Default)]
struct State {
    fault: Fault,
    /// Raised by `reset_all`: every connection open at that moment is reset.
    resets: u64,
    shutdown: bool,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicUsize,
}

/// A fault-injecting TCP proxy on 127.0.0.1. It runs on a thread and
/// runtime of its own, so a test on paused Tokio time cannot stall it.
/// Dropping it closes every connection.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    state: watch::Sender<State>,
    counters: Arc<Counters>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    ///
    /// # Errors
    /// When the port cannot be bound or the runtime cannot start.
    pub fn start(upstream: SocketAddr) -> Result<Self, TestkitError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| TestkitError::io("binding the proxy", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| TestkitError::io("binding the proxy", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| TestkitError::io("binding the proxy", e))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TestkitError::io("starting the proxy runtime", e))?;
        let (state, rx) = watch::channel(State::default());
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || rt.block_on(serve(listener, upstream, rx, c)))
            .map_err(|e| TestkitError::io("starting the proxy thread", e))?;
        Ok(Self {
            addr,
            upstream,
            state,
            counters,
            thread: Some(thread),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where traffic goes.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Switches the fault; it applies at once, to open connections too.
    pub fn set(&self, fault: Fault) {
        self.state.send_modify(|s| s.fault = fault);
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        self.state.borrow().fault
    }

    /// Resets (TCP RST) every connection open now, both sides.
    pub fn reset_all(&self) {
        self.state.send_modify(|s| s.resets += 1);
    }

    /// Connections open through the proxy now.
    pub fn open_connections(&self) -> usize {
        self.counters.open.load(Ordering::SeqCst)
    }

    /// Connections accepted since the start, refused ones included.
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.send_modify(|s| s.shutdown = true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    upstream: SocketAddr,
    mut rx: watch::Receiver<State>,
    counters: Arc<Counters>,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                counters.accepted.fetch_add(1, Ordering::SeqCst);
                let state = *rx.borrow();
                if state.fault == Fault::Refuse {
                    let _ = client.set_zero_linger();
                    continue;
                }
                let guard = Open::new(&counters);
                tasks.spawn(relay(client, upstream, rx.clone(), state.resets, guard));
            }
            changed = rx.changed() => {
                if changed.is_err() || rx.borrow().shutdown {
                    break;
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tasks.shutdown().await;
}

/// Counts a connection as open while it lives.
struct Open(Arc<Counters>);

impl Open {
    fn new(c: &Arc<Counters>) -> Self {
        c.open.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(c))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The connection must be reset (or the proxy is shutting down).
struct Cut;

/// Waits until the connection may pass a chunk: immediately, after the
/// latency, or once a blackhole lifts.
async fn may_pass(rx: &mut watch::Receiver<State>, generation: u64) -> Result<(), Cut> {
    loop {
        let s = *rx.borrow_and_update();
        if s.shutdown || s.resets != generation {
            return Err(Cut);
        }
        match s.fault {
            Fault::Blackhole => rx.changed().await.map_err(|_| Cut)?,
            Fault::Latency(d) => {
                tokio::select! {
                    () = tokio::time::sleep(d) => return Ok(()),
                    changed = rx.changed() => changed.map_err(|_| Cut)?,
                }
            }
            Fault::Pass | Fault::Refuse => return Ok(()),
        }
    }
}

/// Resolves when the connection must be cut.
async fn cut(rx: &mut watch::Receiver<State>, generation: u64) {
    loop {
        {
            let s = rx.borrow_and_update();
            if s.shutdown || s.resets != generation {
                return;
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    mut rx: watch::Receiver<State>,
    generation: u64,
    _open: Open,
) {
    // A blackholed connection is held without reaching the server.
    if may_pass(&mut rx, generation).await.is_err() {
        let _ = client.set_zero_linger();
        return;
    }
    let server = tokio::select! {
        s = TcpStream::connect(upstream) => match s {
            Ok(s) => s,
            Err(_) => {
                let _ = client.set_zero_linger();
                return;
            }
        },
        () = cut(&mut rx, generation) => {
            let _ = client.set_zero_linger();
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    let reset = loop {
        let outcome = tokio::select! {
            n = cr.read(&mut up) => match n {
                Ok(0) | Err(_) => break false,
                Ok(n) => forward(&up[..n], &mut sw, &mut rx, generation).await,
            },
            n = sr.read(&mut down) => match n {
                Ok(0) | Err(_) => break false,
                Ok(n) => forward(&down[..n], &mut cw, &mut rx, generation).await,
            },
            () = cut(&mut rx, generation) => Err(Cut),
        };
        match outcome {
            Ok(true) => {}
            Ok(false) => break false,
            Err(Cut) => break true,
        }
    };
    if reset {
        // With a zero linger, closing sends RST instead of FIN. Dropping a
        // write half would first send a FIN, so forget them: the sockets
        // close with the read halves.
        let _ = cr.as_ref().set_zero_linger();
        let _ = sr.as_ref().set_zero_linger();
        cw.forget();
        sw.forget();
    }
}

/// Passes one chunk on once the fault allows it; `Ok(false)` when the other
/// side is gone.
async fn forward(
    data: &[u8],
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    rx: &mut watch::Receiver<State>,
    generation: u64,
) -> Result<bool, Cut> {
    may_pass(rx, generation).await?;
    Ok(to.write_all(data).await.is_ok())
}
