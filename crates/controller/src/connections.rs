//! The controller's serving loop: it accepts connections itself (rather than through
//! `axum::serve`) so that no client can hold the API.
//!
//! - **Timeouts.** A connection must complete a request's header within
//!   [`Limits::header_timeout`] of its first byte, and may sit idle (no request in
//!   progress, no byte) for at most [`Limits::idle_timeout`]; otherwise it is closed. A
//!   request in progress (a desired-state long poll, say) is never cut.
//! - **A connection limit with authenticated clients first.** At most
//!   [`Limits::max_connections`] are open. When a new one arrives at the limit, the
//!   oldest connection that has not yet carried an authenticated request is closed to
//!   make room; only when every open connection is authenticated is the new one refused.
//!   So connections without a token (idle, half-sent, or asking public routes) can never
//!   lock out an operator or an engine: the whole capacity is a reserve for
//!   authenticated clients, and unauthenticated ones use it only while nobody else
//!   needs it. (A fixed per-address limit would not do: the CLI, an engine and an
//!   attacker may share an address, behind NAT or on loopback.)
//! - **Bounded shutdown.** On stop, accepting ends, every connection is told to finish
//!   (hyper's graceful shutdown: idle ones close, waiting polls answer 503 at once), and
//!   whatever is still open after [`SHUTDOWN_GRACE`] is dropped.
//!
//! Only HTTP/1.1 is served: the CLI and the engines speak it, and each of its requests
//! has a header whose arrival can be timed.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use crate::auth::Actor;

/// Default of [`Limits::max_connections`] (lowered to fit the descriptor limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default of [`Limits::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`Limits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping controller waits for connections to finish before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(700);
/// Descriptors kept free of connections: the store, blocking threads, logs.
const RESERVED_FDS: u64 = 64;

/// Limits on connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once (also capped below the descriptor limit).
    pub max_connections: usize,
    /// From a request's first byte to the end of its header (TLS handshake included).
    pub header_timeout: Duration,
    /// A connection with no request in progress and no byte received for this long is
    /// closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (soft before, soft now).
/// The default soft limit, 1,024, would let a thousand idle sockets exhaust the process.
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}

/// The connection limit that fits the current descriptor limit.
pub fn effective_max_connections(wanted: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return wanted;
    }
    let room = limit.rlim_cur.saturating_sub(RESERVED_FDS).max(16);
    wanted
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// What the serving loop knows of one open connection.
struct Conn {
    id: u64,
    /// Set once a request on it passed authentication: it is then never evicted.
    authenticated: AtomicBool,
    /// Requests in progress (hyper runs one at a time; a count keeps it simple).
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when it last became idle (opened or answered).
    idle_since: AtomicU64,
    /// Milliseconds since `epoch` (+1) of the first byte after it became idle; 0: none.
    first_byte: AtomicU64,
    /// Told to close (evicted to make room).
    evict: Notify,
    /// Its deadline moved (a first byte, a request started or ended).
    moved: Notify,
    epoch: Instant,
}

impl Conn {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When it must be closed unless something changes, or `None` while a request runs.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64, timeout: Duration| self.epoch + Duration::from_millis(ms) + timeout;
        Some(match self.first_byte.load(Ordering::Acquire) {
            0 => at(self.idle_since.load(Ordering::Acquire), limits.idle_timeout),
            first => at(first - 1, limits.header_timeout),
        })
    }
}

/// The open connections, by id (ids grow: the first evictable one is the oldest).
#[derive(Default)]
struct Registry {
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new connection, evicting the oldest unauthenticated one at the limit;
    /// `None`: refused (every open connection is authenticated).
    fn admit(&self, id: u64, epoch: Instant, max: usize) -> Option<Arc<Conn>> {
        let mut open = self.lock();
        if open.len() >= max {
            let victim = open
                .values()
                .find(|c| !c.authenticated.load(Ordering::Acquire))
                .map(|c| c.id)?;
            if let Some(victim) = open.remove(&victim) {
                victim.evict.notify_one();
            }
        }
        let conn = Arc::new(Conn {
            id,
            authenticated: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(0),
            evict: Notify::new(),
            moved: Notify::new(),
            epoch,
        });
        conn.idle_since.store(conn.now_ms(), Ordering::Release);
        open.insert(id, Arc::clone(&conn));
        Some(conn)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// A connection's handle in each of its requests' extensions.
#[derive(Clone)]
struct ConnHandle(Arc<Conn>);

/// Middleware inside authentication: a request that reached it with an actor marks its
/// connection authenticated (public routes carry none).
pub async fn mark_authenticated(request: Request, next: Next) -> Response {
    if request.extensions().get::<Actor>().is_some() {
        if let Some(ConnHandle(conn)) = request.extensions().get::<ConnHandle>() {
            conn.authenticated.store(true, Ordering::Release);
        }
    }
    next.run(request).await
}

/// TLS, if the API is served over it.
pub type Acceptor = Option<tokio_rustls::TlsAcceptor>;

/// Serves `router` on `listener` until `stop` completes, within `limits`; returns when
/// every connection is closed, [`SHUTDOWN_GRACE`] after `stop` at the latest.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Acceptor,
    limits: Limits,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let registry = Arc::new(Registry::default());
    let (closing, closing_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let epoch = Instant::now();
    let mut next_id = 0u64;
    let mut refused = 0u64;
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stop => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: the
                    // listener still works; pause so as not to spin.
                    warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        next_id += 1;
        let Some(conn) = registry.admit(next_id, epoch, limits.max_connections) else {
            refused += 1;
            if refused.is_power_of_two() {
                warn!(
                    "{} connections open, all authenticated: refused {peer} ({refused} refused so far)",
                    limits.max_connections
                );
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (router, tls, registry, closing) = (
            router.clone(),
            tls.clone(),
            Arc::clone(&registry),
            closing_rx.clone(),
        );
        tasks.spawn(async move {
            let id = conn.id;
            serve_connection(tcp, peer, tls, router, conn, limits, closing).await;
            registry.remove(id);
        });
    }

    drop(listener);
    let open = tasks.len();
    info!("stopping: {open} connections open; waiting at most {SHUTDOWN_GRACE:?} for them");
    let _ = closing.send(true);
    let all_closed = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, all_closed)
        .await
        .is_err()
    {
        info!(
            "closing {} connections that did not finish in time",
            tasks.len()
        );
        tasks.shutdown().await;
    }
}

/// One connection: TLS handshake if any, then HTTP/1.1 under the timeouts.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Acceptor,
    router: Router,
    conn: Arc<Conn>,
    limits: Limits,
    closing: watch::Receiver<bool>,
) {
    let io = Watched {
        inner: tcp,
        conn: Arc::clone(&conn),
    };
    match tls {
        None => http(io, router, conn, limits, closing).await,
        Some(acceptor) => {
            // The handshake counts as part of the first request's header.
            let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(io));
            let evicted = conn.evict.notified();
            let stream = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        debug!("TLS handshake with {peer} failed: {e}");
                        return;
                    }
                    Err(_) => {
                        debug!("TLS handshake with {peer} timed out");
                        return;
                    }
                },
                () = evicted => return,
            };
            http(stream, router, conn, limits, closing).await;
        }
    }
}

/// A request body that records whether it was read to its end.
struct TrackedBody {
    inner: hyper::body::Incoming,
    read_to_end: Arc<AtomicBool>,
}

impl hyper::body::Body for TrackedBody {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || this.inner.is_end_stream() {
            this.read_to_end.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

async fn http<IO>(
    io: IO,
    router: Router,
    conn: Arc<Conn>,
    limits: Limits,
    mut closing: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handle = ConnHandle(Arc::clone(&conn));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        let (router, handle) = (router.clone(), handle.clone());
        let conn = Arc::clone(&handle.0);
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.first_byte.store(0, Ordering::Release);
        let guard = InFlight(conn);
        request.extensions_mut().insert(handle);
        let has_body = !hyper::body::Body::is_end_stream(request.body());
        let read_to_end = Arc::new(AtomicBool::new(false));
        let request = request.map(|inner| {
            axum::body::Body::new(TrackedBody {
                inner,
                read_to_end: Arc::clone(&read_to_end),
            })
        });
        async move {
            let mut response = router.oneshot(request).await;
            drop(guard);
            // A refusal (no token, too large, wrong method) answers without reading the
            // body; hyper then closes the connection. Say so, or a client reusing the
            // connection for its next request loses it ("peer disconnected").
            if has_body && !read_to_end.load(Ordering::Acquire) {
                if let Ok(response) = response.as_mut() {
                    response.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
            }
            response
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(served);
    let mut shutting_down = false;
    loop {
        // Recomputed at every turn: a request may have started or ended.
        let deadline = conn
            .deadline(&limits)
            .unwrap_or_else(|| Instant::now() + limits.idle_timeout);
        tokio::select! {
            _ = served.as_mut() => return,
            () = conn.evict.notified() => {
                debug!(conn = conn.id, "closed to make room for another connection");
                return;
            }
            () = conn.moved.notified() => {}
            changed = closing.changed(), if !shutting_down => {
                shutting_down = true;
                if changed.is_ok() {
                    served.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                if conn.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    debug!(conn = conn.id, "closed: idle, or a request header too slow");
                    return;
                }
            }
        }
    }
}

/// Marks a request finished when its response is ready (or it is dropped).
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.moved.notify_one();
    }
}

/// A socket that notes when the first byte of a request header arrives.
struct Watched<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let conn = &self.conn;
        if buf.filled().len() > before
            && conn.in_flight.load(Ordering::Acquire) == 0
            && conn.first_byte.load(Ordering::Acquire) == 0
        {
            conn.first_byte.store(conn.now_ms() + 1, Ordering::Release);
            conn.moved.notify_one();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
