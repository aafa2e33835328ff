//! The `mtls-socket` interface: converts between WIT types and the TLS
//! client in [`crate::tls`], and enforces the endpoint allow list and the
//! per-guest connection and buffer limits.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmtime::component::Resource;

use crate::bindings::mtls_socket::{ErrorCode, Host, HostConnection};
use crate::bindings::types::Settings;
use crate::fleet::FleetStats;
use crate::state::DeviceState;
use crate::tls::{Failure, FailureKind, TlsClient, TlsConnection, classify_io};

/// Most bytes one `receive` returns (a TLS record's plaintext is at most 16 KiB).
const RECEIVE_CHUNK: u32 = 64 * 1024;

/// An endpoint a guest may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name (compared case-insensitively).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// Per-guest socket state: TLS configuration, allow list, limits.
#[derive(Debug)]
pub struct SocketCtx {
    /// The TLS client with root CA and client credentials.
    pub tls: TlsClient,
    /// Endpoints the guest may reach.
    pub allowed: Vec<Endpoint>,
    /// Connections open now.
    pub open: usize,
    /// Connections the guest may hold at once.
    pub max_open: usize,
    /// Last failure, with detail, for the host's final message.
    pub last_failure: Option<Failure>,
    /// Fleet counters (connections open), in fleet mode.
    pub stats: Option<Arc<FleetStats>>,
}

impl SocketCtx {
    /// A context allowing only `allowed`.
    pub fn new(tls: TlsClient, allowed: Vec<Endpoint>) -> Self {
        Self {
            tls,
            allowed,
            open: 0,
            max_open: 4,
            last_failure: None,
            stats: None,
        }
    }

    /// A context that allows exactly the broker in `settings` and `extra`.
    pub fn for_broker(settings: &Settings, tls: TlsClient, extra: &[Endpoint]) -> Self {
        let mut allowed = vec![Endpoint {
            host: settings.broker_host.clone(),
            port: settings.broker_port,
        }];
        allowed.extend_from_slice(extra);
        Self::new(tls, allowed)
    }

    fn opened(&mut self) {
        self.open += 1;
        if let Some(s) = &self.stats {
            s.connected.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn closed(&mut self) {
        self.open = self.open.saturating_sub(1);
        if let Some(s) = &self.stats {
            s.connected.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn permits(&self, host: &str, port: u16) -> bool {
        self.allowed
            .iter()
            .any(|e| e.port == port && e.host.eq_ignore_ascii_case(host))
    }

    fn record(&mut self, failure: Failure) -> ErrorCode {
        tracing::debug!(target: "host::socket", "{failure}");
        let code = error_code(failure.kind);
        self.last_failure = Some(failure);
        code
    }
}

impl Drop for SocketCtx {
    fn drop(&mut self) {
        // A store dropped with connections open (trap, end of run) does not
        // drop them one by one.
        if let Some(s) = &self.stats {
            s.connected.fetch_sub(self.open, Ordering::Relaxed);
        }
    }
}

/// One guest connection: the TLS stream, or nothing once closed.
pub struct Connection {
    stream: Option<TlsConnection>,
}

fn error_code(kind: FailureKind) -> ErrorCode {
    match kind {
        FailureKind::NameUnresolvable => ErrorCode::NameUnresolvable,
        FailureKind::Refused => ErrorCode::ConnectionRefused,
        FailureKind::TimedOut => ErrorCode::TimedOut,
        FailureKind::Reset => ErrorCode::ConnectionReset,
        FailureKind::Closed => ErrorCode::ConnectionClosed,
        FailureKind::ServerCertUnknownIssuer => ErrorCode::ServerCertificateUnknownIssuer,
        FailureKind::ServerCertExpired => ErrorCode::ServerCertificateExpired,
        FailureKind::ServerCertNameMismatch => ErrorCode::ServerCertificateNameMismatch,
        FailureKind::ServerCertInvalid => ErrorCode::ServerCertificateInvalid,
        FailureKind::ClientCertRejected => ErrorCode::ClientCertificateRejected,
        FailureKind::ClientCertRequired => ErrorCode::ClientCertificateRequired,
        FailureKind::ProtocolVersion => ErrorCode::ProtocolVersionUnsupported,
        FailureKind::Handshake => ErrorCode::TlsHandshakeFailed,
        FailureKind::Io => ErrorCode::IoFailed,
    }
}

fn limit(timeout_ms: u32) -> Option<Duration> {
    (timeout_ms > 0).then(|| Duration::from_millis(u64::from(timeout_ms)))
}

impl Host for DeviceState {
    async fn connect(
        &mut self,
        host: String,
        port: u16,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Resource<Connection>, ErrorCode>> {
        let sockets = &mut self.sockets;
        if !sockets.permits(&host, port) {
            tracing::warn!(target: "host::socket", "guest asked for {host}:{port}, which is not allowed; answered not-permitted");
            return Ok(Err(ErrorCode::NotPermitted));
        }
        if sockets.open >= sockets.max_open {
            return Ok(Err(ErrorCode::TooManyConnections));
        }
        match sockets.tls.connect(&host, port, limit(timeout_ms)).await {
            Ok(stream) => {
                sockets.opened();
                let conn = self.table.push(Connection {
                    stream: Some(stream),
                })?;
                Ok(Ok(conn))
            }
            Err(failure) => {
                tracing::warn!(target: "host::socket", "connection to {host}:{port} failed: {failure}");
                Ok(Err(sockets.record(failure)))
            }
        }
    }
}

impl HostConnection for DeviceState {
    async fn send(
        &mut self,
        conn: Resource<Connection>,
        data: Vec<u8>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        if data.len() > self.limits.max_io_bytes as usize {
            return Ok(Err(ErrorCode::MessageTooLarge));
        }
        let Some(stream) = self.table.get_mut(&conn)?.stream.as_mut() else {
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
        Ok(result.map_err(|e| self.sockets.record(classify_io(&e))))
    }

    async fn receive(
        &mut self,
        conn: Resource<Connection>,
        max_len: u32,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, ErrorCode>> {
        if max_len > self.limits.max_io_bytes {
            return Ok(Err(ErrorCode::MessageTooLarge));
        }
        let Some(stream) = self.table.get_mut(&conn)?.stream.as_mut() else {
            return Ok(Err(ErrorCode::ConnectionClosed));
        };
        // Allocate what a TLS record can hold at most, not what was asked.
        let mut buf = vec![0u8; max_len.min(RECEIVE_CHUNK) as usize];
        // Zero waits not at all: only what is ready now. `read` is
        // cancel-safe: bytes not returned stay in the TLS buffers.
        let wait = Duration::from_millis(u64::from(timeout_ms));
        let Ok(read) = tokio::time::timeout(wait, stream.read(&mut buf)).await else {
            return Ok(Ok(Vec::new()));
        };
        match read {
            Ok(0) if !buf.is_empty() => Ok(Err(self.sockets.record(Failure {
                kind: FailureKind::Closed,
                detail: "the broker closed the connection".into(),
            }))),
            Ok(n) => {
                buf.truncate(n);
                Ok(Ok(buf))
            }
            Err(e) => Ok(Err(self.sockets.record(classify_io(&e)))),
        }
    }

    async fn close(&mut self, conn: Resource<Connection>) -> wasmtime::Result<()> {
        if let Some(mut stream) = self.table.get_mut(&conn)?.stream.take() {
            self.sockets.closed();
            let _ = tokio::time::timeout(Duration::from_millis(200), stream.shutdown()).await;
        }
        Ok(())
    }

    async fn drop(&mut self, conn: Resource<Connection>) -> wasmtime::Result<()> {
        if self.table.delete(conn)?.stream.is_some() {
            self.sockets.closed();
        }
        Ok(())
    }
}
