//! The fault proxy, against a local echo server (and once against PostgreSQL).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aquifer_testkit::{Fault, FaultProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(msg).await?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).await?;
    Ok(got)
}

async fn wait_for(mut cond: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < give_up, "condition not reached in 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn passes_traffic_and_counts_connections() {
    let proxy = FaultProxy::start(echo_server().await).unwrap();
    let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut a, b"hello").await.unwrap(), b"hello");
    assert_eq!(round_trip(&mut b, b"world").await.unwrap(), b"world");
    assert_eq!(proxy.accepted(), 2);
    assert_eq!(proxy.open_connections(), 2);
    drop(a);
    wait_for(|| proxy.open_connections() == 1).await;
}

#[tokio::test]
async fn latency_delays_each_direction() {
    let proxy = FaultProxy::start(echo_server().await).unwrap();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut s, b"warm").await.unwrap();
    proxy.set(Fault::Latency(Duration::from_millis(100)));
    let start = Instant::now();
    round_trip(&mut s, b"slow").await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    proxy.set(Fault::Pass);
    assert_eq!(proxy.fault(), Fault::Pass);
}

#[tokio::test]
async fn blackhole_holds_data_without_error_until_lifted() {
    let proxy = FaultProxy::start(echo_server().await).unwrap();
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut open, b"before").await.unwrap();
    proxy.set(Fault::Blackhole);
    // An open connection: the data goes nowhere, and nothing fails.
    let stuck =
        tokio::time::timeout(Duration::from_millis(200), round_trip(&mut open, b"lost?")).await;
    assert!(
        stuck.is_err(),
        "a blackholed connection must hang, got {stuck:?}"
    );
    // A new connection is accepted and held too.
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    fresh.write_all(b"new").await.unwrap();
    let mut buf = [0u8; 3];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), fresh.read_exact(&mut buf))
            .await
            .is_err()
    );
    proxy.set(Fault::Pass);
    // Held data is delivered once the path is back.
    tokio::time::timeout(Duration::from_secs(5), fresh.read_exact(&mut buf))
        .await
        .expect("delivered after the blackhole lifts")
        .unwrap();
    assert_eq!(&buf, b"new");
}

#[tokio::test]
async fn refuse_resets_new_connections_but_not_open_ones() {
    let proxy = FaultProxy::start(echo_server().await).unwrap();
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut open, b"a").await.unwrap();
    proxy.set(Fault::Refuse);
    // The reset may arrive before connect() returns, or at the first read.
    for _ in 0..20 {
        let r = async {
            let mut s = TcpStream::connect(proxy.addr()).await?;
            round_trip(&mut s, b"x").await
        }
        .await;
        assert!(r.is_err(), "a refused connection must fail, got {r:?}");
    }
    assert_eq!(round_trip(&mut open, b"still").await.unwrap(), b"still");
}

#[tokio::test]
async fn reset_all_cuts_open_connections_with_rst() {
    let proxy = FaultProxy::start(echo_server().await).unwrap();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut s, b"hi").await.unwrap();
    proxy.reset_all();
    wait_for(|| proxy.open_connections() == 0).await;
    let mut buf = [0u8; 1];
    let err = s.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    // New connections work again.
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut again, b"ok").await.unwrap(), b"ok");
}
