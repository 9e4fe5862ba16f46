//! Signs on the wire that the server's role changed: an error that says it
//! refuses writes (`25006`) or is shutting down (`57P01`, `57P02`), and
//! `in_hot_standby` as the server reports it at connect and pushes it
//! when a standby is promoted. An error marks the connection, so that the
//! pool evicts it, and raises the manager's [`RoleSignal`], so that a
//! replica set checks the server now.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use aquifer::RoleSignal;

use super::WireWatch;

/// The SQLSTATEs that say the server no longer takes this connection's
/// writes.
const EVIDENCE: [&[u8]; 3] = [b"25006", b"57P01", b"57P02"];

/// Bytes of an ErrorResponse or ParameterStatus kept: the code and the
/// start of the message come first.
const KEEP: usize = 512;

/// What one connection saw, shared with its pool's view of it.
#[derive(Debug, Default)]
pub(crate) struct RoleWire {
    pub(super) signal: Option<RoleSignal>,
    /// A read-only or shutdown error was read.
    refused: AtomicBool,
    /// The caller asked for a read-only transaction: a `25006` now is its
    /// own doing, not news about the server.
    read_only_intent: AtomicBool,
    /// `in_hot_standby`: 0 not reported, 1 off, 2 on.
    hot_standby: AtomicU8,
}

impl WireWatch {
    /// A status whose role evidence raises `signal`.
    pub(crate) fn with_signal(signal: RoleSignal) -> Self {
        let mut wire = super::Wire::default();
        wire.role.signal = Some(signal);
        WireWatch(std::sync::Arc::new(wire))
    }

    /// The connection read an error saying its server refuses writes or is
    /// shutting down: it must not be used again.
    pub(crate) fn refused(&self) -> bool {
        self.0.role.refused.load(Ordering::Acquire)
    }

    /// While set, a `25006` is the caller's read-only transaction refusing
    /// a write, not a sign that the server stopped taking writes.
    pub(crate) fn intend_read_only(&self, on: bool) {
        self.0.role.read_only_intent.store(on, Ordering::Release);
    }

    /// `in_hot_standby` as the server last reported it (PostgreSQL 14+).
    pub(crate) fn hot_standby(&self) -> Option<bool> {
        match self.0.role.hot_standby.load(Ordering::Acquire) {
            1 => Some(false),
            2 => Some(true),
            _ => None,
        }
    }

    fn raise(&self, why: String) {
        if let Some(s) = &self.0.role.signal {
            s.raise(why);
        }
    }

    fn refuse(&self, why: String) {
        if let Some(s) = &self.0.role.signal {
            s.refused(why);
        }
    }
}

/// Collects the payload of the backend message being read when it is one
/// of interest, and looks at it once it is complete.
#[derive(Debug, Default)]
pub(super) struct Collector {
    /// `E`, `S`, or 0 while passing over anything else.
    kind: u8,
    buf: Vec<u8>,
    /// A ReadyForQuery was read: the start-up is over, so a pushed
    /// `in_hot_standby` is news.
    started: bool,
}

impl Collector {
    pub(super) fn begin(&mut self, kind: u8) {
        self.kind = if matches!(kind, b'E' | b'S') { kind } else { 0 };
        self.buf.clear();
        if kind == b'Z' {
            self.started = true;
        }
    }

    pub(super) fn take(&mut self, payload: &[u8]) {
        if self.kind != 0 {
            let room = KEEP.saturating_sub(self.buf.len());
            self.buf
                .extend_from_slice(&payload[..payload.len().min(room)]);
        }
    }

    /// The message is complete.
    pub(super) fn end(&mut self, status: &WireWatch) {
        match std::mem::take(&mut self.kind) {
            b'E' => self.error(status),
            b'S' => self.parameter(status),
            _ => {}
        }
    }

    fn error(&self, status: &WireWatch) {
        let mut code = None;
        let mut message: &[u8] = b"";
        for field in self.buf.split(|&b| b == 0) {
            match field.split_first() {
                Some((b'C', v)) => code = Some(v),
                Some((b'M', v)) => message = v,
                _ => {}
            }
        }
        let Some(code) = code.filter(|c| EVIDENCE.contains(c)) else {
            return;
        };
        if code == b"25006" && status.0.role.read_only_intent.load(Ordering::Acquire) {
            return;
        }
        // Counted once per connection: it is evicted after this.
        if status.0.role.refused.swap(true, Ordering::AcqRel) {
            return;
        }
        status.refuse(format!(
            "SQLSTATE {}: {}",
            String::from_utf8_lossy(code),
            String::from_utf8_lossy(message)
        ));
    }

    fn parameter(&self, status: &WireWatch) {
        let mut parts = self.buf.split(|&b| b == 0);
        if parts.next() != Some(b"in_hot_standby") {
            return;
        }
        let on = parts.next() == Some(b"on");
        let before = status
            .0
            .role
            .hot_standby
            .swap(if on { 2 } else { 1 }, Ordering::AcqRel);
        if self.started && before != if on { 2 } else { 1 } {
            status.raise(format!(
                "the server reported in_hot_standby = {}",
                if on { "on" } else { "off" }
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Frame;
    use super::*;

    fn message(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend(u32::try_from(payload.len() + 4).unwrap().to_be_bytes());
        m.extend(payload);
        m
    }

    /// Feeds `back` one byte at a time: messages split anywhere.
    fn feed(back: &[u8]) -> (WireWatch, RoleSignal) {
        let signal = RoleSignal::new();
        let status = WireWatch::with_signal(signal.clone());
        let mut frame = Frame::default();
        for b in back {
            frame.feed(std::slice::from_ref(b), &status);
        }
        (status, signal)
    }

    #[test]
    fn read_only_and_shutdown_errors_mark_the_connection_and_raise_the_signal() {
        for code in ["25006", "57P01", "57P02"] {
            let mut back = message(b'Z', b"I");
            back.extend(message(
                b'E',
                format!("SERROR\0C{code}\0Mcannot execute INSERT\0\0").as_bytes(),
            ));
            let (status, signal) = feed(&back);
            assert!(status.refused(), "{code}");
            assert_eq!((signal.raised(), signal.refusals()), (1, 1));
            let why = signal.last_reason().unwrap();
            assert_eq!(why, format!("SQLSTATE {code}: cannot execute INSERT"));
        }
        // Any other error is the caller's business.
        let (status, signal) = feed(&message(b'E', b"SERROR\0C22012\0Mdivision by zero\0\0"));
        assert!(!status.refused());
        assert_eq!(signal.raised(), 0);
    }

    #[test]
    fn in_hot_standby_at_connect_is_noted_and_a_push_later_raises_the_signal() {
        let mut back = message(b'S', b"in_hot_standby\0on\0");
        back.extend(message(b'S', b"server_version\x0015.1\0"));
        back.extend(message(b'Z', b"I"));
        let (status, signal) = feed(&back);
        assert_eq!(status.hot_standby(), Some(true));
        assert_eq!(signal.raised(), 0, "reported at connect: no news");
        back.extend(message(b'S', b"in_hot_standby\0off\0"));
        let (status, signal) = feed(&back);
        assert_eq!(status.hot_standby(), Some(false));
        assert_eq!(signal.raised(), 1);
        assert!(
            !status.refused(),
            "a promotion does not spoil the connection"
        );
    }
}
