//! Opening the socket: each host of the configuration in turn, with the
//! connect timeout and TCP keepalives it asks for.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::Host;

/// A TCP or unix-domain socket.
#[derive(Debug)]
pub(crate) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// How many hosts the configuration names (at least one: `localhost`).
pub(crate) fn host_count(config: &tokio_postgres::Config) -> usize {
    config
        .get_hosts()
        .len()
        .max(config.get_hostaddrs().len())
        .max(1)
}

/// Connects to host `i` of the configuration (its `hostaddr` if given),
/// within the connect timeout, with TCP keepalives as configured. Returns
/// the socket and the host's name (for TLS).
pub(crate) async fn open_host(
    config: &tokio_postgres::Config,
    i: usize,
) -> io::Result<(Socket, String)> {
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    let port = match config.get_ports() {
        [] => 5432,
        [one] => *one,
        many => many.get(i).copied().unwrap_or(5432),
    };
    let name = match (hosts.get(i), addrs.get(i)) {
        (Some(Host::Tcp(name)), _) => name.clone(),
        (_, Some(ip)) => ip.to_string(),
        _ => "localhost".to_owned(),
    };
    let attempt = async {
        if let Some(ip) = addrs.get(i) {
            return connect_tcp((*ip, port), config).await;
        }
        match hosts.get(i) {
            Some(Host::Tcp(name)) => connect_tcp((name.as_str(), port), config).await,
            Some(Host::Unix(dir)) => UnixStream::connect(dir.join(format!(".s.PGSQL.{port}")))
                .await
                .map(Socket::Unix),
            None => connect_tcp(("localhost", port), config).await,
        }
    };
    let socket = match config.get_connect_timeout() {
        Some(&t) => tokio::time::timeout(t, attempt).await.unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {}", aquifer::human_duration(t)),
            ))
        })?,
        None => attempt.await?,
    };
    Ok((socket, name))
}

async fn connect_tcp(
    addr: impl tokio::net::ToSocketAddrs,
    config: &tokio_postgres::Config,
) -> io::Result<Socket> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    if config.get_keepalives() {
        let mut keepalive = socket2::TcpKeepalive::new().with_time(config.get_keepalives_idle());
        if let Some(interval) = config.get_keepalives_interval() {
            keepalive = keepalive.with_interval(interval);
        }
        if let Some(retries) = config.get_keepalives_retries() {
            keepalive = keepalive.with_retries(retries);
        }
        socket2::SockRef::from(&s).set_tcp_keepalive(&keepalive)?;
    }
    Ok(Socket::Tcp(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_keepalives_follow_the_configuration() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(port)
            .keepalives_idle(std::time::Duration::from_secs(77))
            .keepalives_interval(std::time::Duration::from_secs(9))
            .keepalives_retries(4);
        let (socket, name) = open_host(&config, 0).await.unwrap();
        assert_eq!(name, "127.0.0.1");
        let Socket::Tcp(tcp) = &socket else {
            panic!("a TCP host gives a TCP socket")
        };
        let sock = socket2::SockRef::from(tcp);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap().as_secs(), 77);
        assert_eq!(sock.tcp_keepalive_interval().unwrap().as_secs(), 9);
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);

        config.keepalives(false);
        let (socket, _) = open_host(&config, 0).await.unwrap();
        let Socket::Tcp(tcp) = &socket else {
            panic!("a TCP host gives a TCP socket")
        };
        assert!(!socket2::SockRef::from(tcp).keepalive().unwrap());
    }
}
