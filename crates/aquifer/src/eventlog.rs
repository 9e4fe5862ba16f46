//! The cluster's event log: warnings appended as JSON lines to a file, by a
//! thread of its own, so that writing never holds up a checkout.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{Duration, UNIX_EPOCH};

use crate::warning::Warning;

/// Lines queued for the writer before new ones are dropped (and counted).
const QUEUE: usize = 4096;

enum Msg {
    Line(Warning),
    Flush(SyncSender<()>),
}

/// The writer's handle. Dropping it lets the thread finish and exit.
pub(crate) struct EventLog {
    tx: SyncSender<Msg>,
    path: PathBuf,
    dropped: AtomicU64,
}

fn to_json(w: &Warning) -> String {
    let at_ms =
        w.at.duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    serde_json::json!({ "at_ms": at_ms, "pool": w.pool, "message": w.message }).to_string()
}

fn from_json(line: &str) -> Option<Warning> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(Warning {
        at: UNIX_EPOCH + Duration::from_millis(v.get("at_ms")?.as_u64()?),
        pool: v.get("pool")?.as_str().map(str::to_owned),
        message: v.get("message")?.as_str()?.to_owned(),
    })
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

impl EventLog {
    /// Opens (or creates) `path` for appending and starts the writer. Past
    /// `max_bytes` the file moves to `path.1` (replacing an older one) and a
    /// new file starts.
    pub(crate) fn open(path: &Path, max_bytes: u64) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, rx) = sync_channel(QUEUE);
        let owned = path.to_owned();
        std::thread::Builder::new()
            .name("aquifer-eventlog".into())
            .spawn(move || write_loop(rx, file, &owned, max_bytes))?;
        Ok(Self {
            tx,
            path: path.to_owned(),
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues a line; never waits. A full queue drops the line and counts it.
    pub(crate) fn append(&self, w: &Warning) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Line(w.clone())) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the writer fell behind.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits (up to a second) for queued lines to reach the file, then reads
    /// the rotated file and the current one back, oldest first. Lines that
    /// do not parse are skipped.
    pub(crate) fn read_back(&self) -> io::Result<Vec<Warning>> {
        let (done, wait) = sync_channel(1);
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(1));
        }
        let mut out = Vec::new();
        for p in [rotated(&self.path), self.path.clone()] {
            match File::open(&p) {
                Ok(f) => {
                    for line in BufReader::new(f).lines() {
                        if let Some(w) = from_json(&line?) {
                            out.push(w);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

fn write_loop(rx: Receiver<Msg>, mut file: File, path: &Path, max_bytes: u64) {
    let mut size = file.metadata().map_or(0, |m| m.len());
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Line(w) => {
                let mut line = to_json(&w);
                line.push('\n');
                if size > 0 && size + line.len() as u64 > max_bytes {
                    let _ = file.flush();
                    if std::fs::rename(path, rotated(path)).is_ok() {
                        if let Ok(f) = OpenOptions::new().create(true).append(true).open(path) {
                            file = f;
                            size = 0;
                        }
                    }
                }
                if let Err(e) = file.write_all(line.as_bytes()) {
                    tracing::error!(target: "aquifer::cluster", error = %e, path = %path.display(), "event log write failed");
                } else {
                    size += line.len() as u64;
                }
            }
            Msg::Flush(done) => {
                let _ = file.flush();
                let _ = done.send(());
            }
        }
    }
}
