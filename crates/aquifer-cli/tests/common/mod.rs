//! Running the binary and talking to `aquifer serve`, shared by the CLI
//! tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn aquifer() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aquifer"));
    c.env_remove("AQUIFER_CONFIG").env("RUST_LOG", "info");
    c
}

pub fn run(c: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// A plain HTTP/1.1 request: status and body.
pub fn http(addr: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // Chunked bodies (axum's default for streams) are not used by these
    // endpoints; bodies here have a Content-Length.
    (status, body.to_owned())
}

pub fn json(addr: &str, path: &str) -> Value {
    let (status, body) = http(addr, "GET", path, None);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// A running `aquifer serve`, its address and token, and everything it
/// printed.
pub struct Serving {
    child: Child,
    pub addr: String,
    pub token: Option<String>,
    out: mpsc::Receiver<String>,
    pub printed: Vec<String>,
}

impl Serving {
    pub fn start(c: &mut Command) -> Self {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, out) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut s = Serving {
            child,
            addr: String::new(),
            token: None,
            out,
            printed: Vec::new(),
        };
        let end = Instant::now() + Duration::from_secs(30);
        while s.addr.is_empty() {
            let line = s
                .out
                .recv_timeout(end.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("serve printed no address: {:?}", s.printed));
            if let Some(rest) = line.strip_prefix("aquifer is serving the dashboard at http://") {
                s.addr = rest.trim_end_matches('/').to_owned();
            }
            if let Some((_, t)) = line.split_once("): ") {
                if line.starts_with("admin token") {
                    s.token = Some(t.to_owned());
                }
            }
            s.printed.push(line);
        }
        // The token line follows the address line.
        if let Ok(line) = s.out.recv_timeout(Duration::from_millis(500)) {
            if line.starts_with("admin token") {
                s.token = line.split_once("): ").map(|(_, t)| t.to_owned());
            }
            s.printed.push(line);
        }
        s
    }

    /// SIGTERM, then the exit code and everything printed.
    pub fn stop(mut self) -> (i32, String) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let end = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < end, "serve did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(100));
        self.printed.extend(self.out.try_iter());
        (status.code().unwrap_or(-1), self.printed.join("\n"))
    }
}

pub fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}
