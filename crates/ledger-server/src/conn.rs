//! Connections and file descriptors: storage never runs short because of sockets.
//!
//! - At start the soft `RLIMIT_NOFILE` is raised to the hard limit ([`raise_nofile_limit`]),
//!   and the descriptors are budgeted ([`FdBudget`]): RocksDB keeps at most `max_open_files`
//!   table files open, a fixed reserve covers its logs and manifests, and client connections
//!   get at most the rest.
//! - [`incoming`] accepts connections up to that cap. Past it, or when `accept` itself runs out
//!   of descriptors, new connections are refused (closed at once); storage writes never are.
//! - A connection must send the HTTP/2 preface within the handshake timeout or it is closed
//!   ([`Conn`]); after the handshake, HTTP/2 keepalive pings (set on the server) close
//!   connections whose peer stopped answering.
//! - With TLS ([`crate::tls::ServerTls`]) the handshake runs off the accept loop, several at
//!   once (each holding its connection slot), bounded by the same timeout; the configuration
//!   in force at accept time is used, so a reload never touches established connections.
//! - Every request of a connection sees its [`ConnInfo`] (address, what its certificate
//!   proved, its open-request count) in its extensions.

use crate::tls::{PeerIdentity, ServerTls};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

/// Descriptors kept for storage beyond RocksDB's table files: write-ahead logs, manifests,
/// info logs, the lock file, and the node's own files.
pub const STORAGE_RESERVE: u64 = 128;
/// Descriptors kept for everything else (stdio, the listener, the runtime, DNS, …).
pub const PROCESS_RESERVE: u64 = 64;
/// Length of the HTTP/2 client connection preface.
const PREFACE_LEN: usize = 24;

/// Raises the soft limit on open files to the hard limit; returns the soft limit in force.
pub fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit; assuming 1024");
            1024
        }
    }
}

/// How the process's descriptors are shared out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft open-file limit.
    pub limit: u64,
    /// Table files RocksDB may keep open.
    pub rocksdb_open_files: u64,
    /// Client connections accepted at once.
    pub max_connections: u64,
}

impl FdBudget {
    /// Shares `limit` descriptors out. `rocksdb_open_files` and `max_connections` of 0 mean
    /// "derive from the limit": a quarter of it (at most 1,024) for RocksDB, the rest after the
    /// reserves (at most 10,000) for connections. Explicit values are capped so the budget
    /// never exceeds the limit.
    pub fn new(limit: u64, rocksdb_open_files: u64, max_connections: u64) -> Self {
        let rocks = match rocksdb_open_files {
            0 => (limit / 4).clamp(16, 1024),
            n => n.max(16),
        };
        let left = limit.saturating_sub(rocks + STORAGE_RESERVE + PROCESS_RESERVE);
        let conns = match max_connections {
            0 => left.min(10_000),
            n => n.min(left),
        };
        FdBudget {
            limit,
            rocksdb_open_files: rocks,
            max_connections: conns.max(1),
        }
    }
}

/// What every request of a connection knows about it (in its extensions).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    pub tls: bool,
    pub peer: PeerIdentity,
    /// Requests open on this connection right now (shared by all of them).
    pub open_requests: Arc<AtomicU32>,
}

impl ConnInfo {
    /// The peer presented a node certificate.
    pub fn is_node(&self) -> bool {
        self.peer == PeerIdentity::Node
    }
}

/// The accept loop's state.
struct Accepting {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    refused: u64,
    max_connections: usize,
    handshake_timeout: Duration,
    tls: Option<Arc<ServerTls>>,
    /// TLS handshakes under way; a connection is handed out once its handshake is done.
    handshakes: FuturesUnordered<BoxFuture<'static, Option<Conn>>>,
}

/// Accepts connections from `listener`, at most `max_connections` open at once, each closed if
/// it completes no TLS handshake (with `tls`) or sends no HTTP/2 preface within
/// `handshake_timeout`.
pub fn incoming(
    listener: TcpListener,
    max_connections: usize,
    handshake_timeout: Duration,
    tls: Option<Arc<ServerTls>>,
) -> impl futures::Stream<Item = io::Result<Conn>> + Send + 'static {
    let state = Accepting {
        listener,
        slots: Arc::new(Semaphore::new(max_connections)),
        refused: 0,
        max_connections,
        handshake_timeout,
        tls,
        handshakes: FuturesUnordered::new(),
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            let accepted = tokio::select! {
                Some(done) = st.handshakes.next(), if !st.handshakes.is_empty() => {
                    match done {
                        Some(conn) => return Some((Ok(conn), st)),
                        None => continue,
                    }
                }
                a = st.listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(s) => s,
                Err(e) if is_fd_exhaustion(&e) => {
                    // Out of descriptors: leave the connection in the backlog, refuse
                    // nothing that is stored, and try again shortly.
                    st.refused += 1;
                    if st.refused.is_power_of_two() {
                        tracing::warn!(error = %e, refused = st.refused, "out of file descriptors: not accepting connections for now");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&st.slots).try_acquire_owned() else {
                st.refused += 1;
                if st.refused.is_power_of_two() {
                    tracing::warn!(%peer, max_connections = st.max_connections, refused = st.refused, "connection limit reached: refusing new connections (setting max_connections)");
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let timeout = st.handshake_timeout;
            let info = ConnInfo {
                remote: Some(peer),
                tls: st.tls.is_some(),
                peer: PeerIdentity::Anonymous,
                open_requests: Arc::default(),
            };
            let acceptor = match &st.tls {
                Some(tls) => tls.acceptor(),
                None => {
                    return Some((Ok(Conn::new(Io::Plain(stream), permit, info, timeout)), st));
                }
            };
            st.handshakes.push(Box::pin(async move {
                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok((tls_stream, identity))) => {
                        let info = ConnInfo {
                            peer: identity,
                            ..info
                        };
                        Some(Conn::new(
                            Io::Tls(Box::new(tls_stream)),
                            permit,
                            info,
                            timeout,
                        ))
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "no TLS handshake within the handshake timeout");
                        None
                    }
                }
            }));
        }
    })
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
        || e.kind() == io::ErrorKind::OutOfMemory
}

/// The byte stream of a connection.
#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection: holds a connection slot until it closes, and fails its reads if
/// the HTTP/2 preface does not arrive in time.
#[derive(Debug)]
pub struct Conn {
    io: Io,
    info: ConnInfo,
    _permit: OwnedSemaphorePermit,
    received: usize,
    /// Until the preface has arrived.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Conn {
    fn new(io: Io, permit: OwnedSemaphorePermit, info: ConnInfo, timeout: Duration) -> Conn {
        Conn {
            io,
            info,
            _permit: permit,
            received: 0,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(d) = self.deadline.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 handshake within the handshake timeout",
            )));
        }
        let before = buf.filled().len();
        let r = match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if let Poll::Ready(Ok(())) = r
            && self.deadline.is_some()
        {
            self.received += buf.filled().len() - before;
            if self.received >= PREFACE_LEN {
                self.deadline = None;
            }
        }
        r
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_keeps_room_for_storage() {
        let b = FdBudget::new(1024, 0, 0);
        assert_eq!(b.rocksdb_open_files, 256);
        assert_eq!(
            b.max_connections,
            1024 - 256 - STORAGE_RESERVE - PROCESS_RESERVE
        );
        // An explicit connection cap above what the limit allows is lowered.
        let b = FdBudget::new(1024, 100, 5000);
        assert_eq!(
            b.max_connections,
            1024 - 100 - STORAGE_RESERVE - PROCESS_RESERVE
        );
        let b = FdBudget::new(1 << 20, 0, 0);
        assert_eq!((b.rocksdb_open_files, b.max_connections), (1024, 10_000));
        let b = FdBudget::new(1 << 20, 0, 50);
        assert_eq!(b.max_connections, 50);
    }

    #[tokio::test]
    async fn silent_connections_are_closed_and_slots_are_capped() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut conns = Box::pin(incoming(listener, 2, Duration::from_millis(200), None));
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let mut first = conns.next().await.unwrap().unwrap();
        let _second = conns.next().await.unwrap().unwrap();
        // A third connection is refused (closed by the node) while both slots are held.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let accept_more = tokio::spawn(async move {
            let x = conns.next().await;
            (x.map(|r| r.is_ok()), conns)
        });
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("refused connection is closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
        // The silent connection's reads fail once the handshake timeout passes.
        let err = first.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        accept_more.abort();
    }
}
