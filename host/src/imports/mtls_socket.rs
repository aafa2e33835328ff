//! The `mtls-socket` interface: the endpoint allow list, the per-guest
//! connection and buffer limits, and the calls into [`crate::tls`].
//! Connections live in this context's own resource table; each guest
//! handle's rep indexes it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use host_core::TransportError;
use host_core::observer::{Event, Observer};
use host_core::outcome::{LimitHit, SocketFailure};
use host_core::wit::mtls_socket::{Connection, ErrorCode, Host, HostConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmtime::component::{Resource, ResourceTable};

use crate::limits::SocketLimits;
use crate::limits::connects::{ConnectGate, RECEIVE_CHUNK, REFUSAL_WAIT, Refusal};
use crate::limits::output::GuestOutput;
use crate::limits::rate::TokenBucket;
use crate::tls::{Endpoint, TlsClient, TlsConnection, Turn, classify_io};

/// One guest connection: the TLS stream, or nothing once closed.
struct Stream(Option<TlsConnection>);

/// A device's sockets: TLS configuration, allow list, limits, connections.
pub struct SocketCtx {
    tls: TlsClient,
    allowed: Vec<Endpoint>,
    /// The connect policy and its count of refusals (host-core's, as the
    /// mock host's).
    gate: ConnectGate,
    connections: ResourceTable,

    open: usize,
    /// The last failure, with the host's detail, for messages.
    last_failure: Option<SocketFailure>,
    observer: Arc<dyn Observer>,
    /// The host's lines about this guest's sockets go through its output
    /// limit: a guest cannot flood the log through them either.
    output: Arc<GuestOutput>,
    /// Connections opened: a burst, then a steady rate; kept across
    /// restarts of the guest.
    connects: Arc<Mutex<TokenBucket>>,
    /// The turn of the latest connect (`--max-connecting`) and its
    /// connection's handle, until the broker answers on it: one per device
    /// at most, so a logic that opens connections and keeps them silent
    /// holds one of the host's turns, not one per connection.
    turn: Option<(u32, Turn)>,
}

/// What a device's sockets report to and are limited by.
pub struct SocketShared {
    /// Where connection events go.
    pub observer: Arc<dyn Observer>,
    /// Where the host's lines about them go.
    pub output: Arc<GuestOutput>,
    /// The connect rate limit.
    pub connects: Arc<Mutex<TokenBucket>>,
}

impl SocketCtx {
    /// A context allowing only `allowed`.
    pub fn new(
        tls: TlsClient,
        allowed: Vec<Endpoint>,
        limits: SocketLimits,
        shared: SocketShared,
    ) -> Self {
        Self {
            tls,
            allowed,
            gate: ConnectGate::new(limits),
            connections: ResourceTable::new(),

            open: 0,
            last_failure: None,
            observer: shared.observer,
            output: shared.output,
            connects: shared.connects,
            turn: None,
        }
    }

    /// Ends the connect's turn if `rep` is the connection holding it.
    fn end_turn(&mut self, rep: u32) {
        if self.turn.as_ref().is_some_and(|(holder, _)| *holder == rep) {
            self.turn = None;
        }
    }

    fn warn(&self, line: &str) {
        self.output.line(host_core::Level::Warn, "host: ", line);
    }

    /// Starts counting a new iteration's refused connects.
    pub fn new_iteration(&mut self) {
        self.gate.new_iteration();
    }

    /// Answers a call the policy refused, after [`REFUSAL_WAIT`], with its
    /// line in the guest's output; a storm stops the guest.
    async fn refuse<T>(
        &mut self,
        verdict: Result<Result<(), Refusal>, LimitHit>,
    ) -> wasmtime::Result<Option<Result<T, ErrorCode>>> {
        let refusal = match verdict? {
            Ok(()) => return Ok(None),
            Err(refusal) => refusal,
        };
        self.warn(&refusal.line);
        tokio::time::sleep(REFUSAL_WAIT).await;
        Ok(Some(Err(refusal.code.into())))
    }

    /// The last socket failure and forgets it.
    pub fn take_last_failure(&mut self) -> Option<SocketFailure> {
        self.last_failure.take()
    }

    fn permits(&self, host: &str, port: u16) -> bool {
        self.allowed
            .iter()
            .any(|e| e.port == port && e.host.eq_ignore_ascii_case(host))
    }

    fn record(&mut self, failure: SocketFailure) -> ErrorCode {
        tracing::debug!(target: "host::socket", "{failure}");
        let code = ErrorCode::from(failure.error);
        self.last_failure = Some(failure);
        code
    }

    fn opened(&mut self, started: Instant, resumed: bool) {
        self.open += 1;
        let connect_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.observer.observe(&Event::ConnectionOpened {
            connect_us,
            resumed,
        });
    }

    fn closed(&mut self) {
        self.open = self.open.saturating_sub(1);
        self.observer.observe(&Event::ConnectionClosed);
    }

    fn stream(
        &mut self,
        conn: &Resource<Connection>,
    ) -> wasmtime::Result<&mut Option<TlsConnection>> {
        let handle = Resource::<Stream>::new_borrow(conn.rep());
        Ok(&mut self.connections.get_mut(&handle)?.0)
    }
}

impl Drop for SocketCtx {
    fn drop(&mut self) {
        // A store dropped with connections open (a trap, the end of a run)
        // does not drop them one by one.
        for _ in 0..self.open {
            self.observer.observe(&Event::ConnectionClosed);
        }
    }
}

fn limit(timeout_ms: u32) -> Option<Duration> {
    (timeout_ms > 0).then(|| Duration::from_millis(u64::from(timeout_ms)))
}

impl Host for SocketCtx {
    async fn connect(
        &mut self,
        host: String,
        port: u16,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Resource<Connection>, ErrorCode>> {
        let verdict = self.gate.admit(
            (&host, port),
            self.permits(&host, port),
            self.open,
            &mut self.connects.lock().unwrap_or_else(|p| p.into_inner()),
            Instant::now(),
        );
        if let Some(refused) = self.refuse(verdict).await? {
            return Ok(refused);
        }
        // A device waits for its turn having given back any it held.
        self.turn = None;
        let started = Instant::now();
        match self.tls.connect(&host, port, limit(timeout_ms)).await {
            Ok((stream, turn)) => {
                let resumed = crate::tls::resumed(&stream);
                let handle = self.connections.push(Stream(Some(stream)))?;
                self.turn = Some((handle.rep(), turn));
                self.opened(started, resumed);
                Ok(Ok(Resource::new_own(handle.rep())))
            }
            Err(failure) => {
                // Its line counts against the guest's output limit, as the
                // guest's own lines do: connects cannot flood the log.
                if self.output.permit(1) == 1 {
                    self.observer.observe(&Event::ConnectFailed {
                        host: host.clone(),
                        port,
                        failure: failure.clone(),
                    });
                }
                Ok(Err(self.record(failure)))
            }
        }
    }
}

impl HostConnection for SocketCtx {
    async fn send(
        &mut self,
        conn: Resource<Connection>,
        data: Vec<u8>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let verdict = self.gate.send(data.len());
        if let Some(refused) = self.refuse(verdict).await? {
            return Ok(refused);
        }
        let Some(stream) = self.stream(&conn)?.as_mut() else {
            return Ok(Err(ErrorCode::ConnectionClosed));
        };
        let work = async {
            stream.write_all(&data).await?;
            stream.flush().await
        };
        let result = match limit(timeout_ms) {
            Some(d) => tokio::time::timeout(d, work)
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
            None => work.await,
        };
        Ok(result.map_err(|e| self.record(classify_io(&e))))
    }

    async fn receive(
        &mut self,
        conn: Resource<Connection>,
        max_len: u32,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, ErrorCode>> {
        let verdict = self.gate.receive(max_len);
        if let Some(refused) = self.refuse(verdict).await? {
            return Ok(refused);
        }
        let handle = Resource::<Stream>::new_borrow(conn.rep());
        let Some(stream) = self.connections.get_mut(&handle)?.0.as_mut() else {
            return Ok(Err(ErrorCode::ConnectionClosed));
        };
        // At most what a TLS record can hold, not what was asked; read into
        // spare capacity (no zeroing), returned as it is.
        let len = max_len.min(RECEIVE_CHUNK) as usize;
        if len == 0 {
            return Ok(Ok(Vec::new()));
        }
        let mut buf = Vec::with_capacity(len);
        // Zero waits not at all: only what is ready now. `read` is
        // cancel-safe: bytes not returned stay in the TLS buffers.
        let wait = Duration::from_millis(u64::from(timeout_ms));
        let Ok(read) = tokio::time::timeout(wait, stream.read_buf(&mut buf)).await else {
            return Ok(Ok(Vec::new()));
        };
        // The broker answered, or the connection went: the connect is over.
        self.end_turn(conn.rep());
        match read {
            Ok(0) => Ok(Err(self.record(SocketFailure::new(
                TransportError::ConnectionClosed,
                "the broker closed the connection",
            )))),
            Ok(_) => Ok(Ok(buf)),
            Err(e) => Ok(Err(self.record(classify_io(&e)))),
        }
    }

    async fn close(&mut self, conn: Resource<Connection>) -> wasmtime::Result<()> {
        self.end_turn(conn.rep());
        if let Some(mut stream) = self.stream(&conn)?.take() {
            self.closed();
            let _ = tokio::time::timeout(Duration::from_millis(200), stream.shutdown()).await;
        }
        Ok(())
    }

    async fn drop(&mut self, conn: Resource<Connection>) -> wasmtime::Result<()> {
        self.end_turn(conn.rep());
        let handle = Resource::<Stream>::new_own(conn.rep());
        if self.connections.delete(handle)?.0.is_some() {
            self.closed();
        }
        Ok(())
    }
}
