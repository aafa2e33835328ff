//! The mock host's implementations of the world's imports: a scripted
//! broker behind `mtls-socket`, seeded `entropy`, a virtual `clock`, a
//! captured `log`, and a recorded `iteration` bound (the state and the
//! logic's settings are the real host's, on the scenario's store and
//! settings: see the crate's `MockRuntime`). Every call is
//! recorded. The broker, the clock and the record outlive an instance, so
//! a restarted guest meets the same broker.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use host_core::state::ctx::StateCtx;
use host_core::wit::mtls_socket::{Connection, ErrorCode, Host as SocketHost, HostConnection};
use host_core::wit::{clock, entropy, iteration, log, types};
use host_core::{Level, TransportError};
use mqtt_core::packets::{Decoder, encode, packet_name};
use mqttbytes::v4::Packet;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;

use crate::script::{AfterScript, Delivery, Script, Step, auto_reply};

/// One recorded import call or broker event, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `connect(host, port)` and its answer.
    Connect {
        /// Host asked for.
        host: String,
        /// Port asked for.
        port: u16,
        /// Error answered, if any.
        refused: Option<TransportError>,
    },
    /// A packet the guest sent, decoded, at a virtual time.
    Sent {
        /// The packet.
        packet: Packet,
        /// Virtual time, milliseconds.
        at_ms: u64,
    },
    /// Bytes the guest received.
    Received(Vec<u8>),
    /// A `sleep-ms` call.
    Sleep(u32),
    /// A receive that waited out its timeout with nothing to deliver.
    WaitedOut(u32),
    /// A `close` of a connection.
    Close,
    /// `get-random-bytes(len)`.
    Entropy(u32),
    /// A log line.
    Log(Level, String),
    /// The host waited between iterations or before a restart (virtual
    /// time), milliseconds.
    HostWait(u32),
    /// The host made a new instance of the component.
    Instantiate,
    /// `iteration.declare-bound(ms)`: the bound the logic declared for its
    /// iteration, milliseconds.
    DeclaredBound(u64),
}

/// A guest-held connection in the mock.
pub struct MockConnection {
    /// Which connection this is, counting from 0.
    pub index: usize,
}

/// Store data of a mock instance: its own WASI and resources, and the
/// broker shared by every instance of a run.
pub struct MockState {
    wasi: WasiCtx,
    table: ResourceTable,
    broker: Arc<Mutex<Broker>>,
    pub(crate) limits: host_core::limiter::GrowthLimiter,
    /// `wasi:keyvalue`: the scenario's store.
    pub(crate) state: StateCtx,
    /// `wasi:config`: the scenario's logic settings.
    pub(crate) config: Arc<WasiConfigVariables>,
}

impl MockState {
    /// The state of instance number `instance` of a run seeded `seed`, its
    /// memory and tables within `limits`.
    pub(crate) fn new(
        broker: Arc<Mutex<Broker>>,
        seed: u64,
        instance: u64,
        limits: &crate::MockLimits,
    ) -> Self {
        Self {
            wasi: crate::wasi::context(&broker, seed, instance),
            table: ResourceTable::new(),
            broker,
            limits: host_core::limiter::GrowthLimiter {
                max_memory_bytes: limits.max_memory_bytes,
                max_table_elements: limits.max_table_elements,
            },
            state: StateCtx::new(
                "mock-device".into(),
                host_core::state::memory::MemoryBackend::new(Default::default()),
                Box::new(|_| true),
                0,
            ),
            config: Arc::default(),
        }
    }

    pub(crate) fn broker(&self) -> MutexGuard<'_, Broker> {
        // A panic while the lock is held fails the test anyway.
        self.broker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The scripted broker, the virtual clock and the record of a run.
pub struct Broker {
    pub(crate) script: Script,
    pub(crate) rng: ChaCha20Rng,
    /// Virtual time, milliseconds.
    pub(crate) now_ms: u64,
    pub(crate) calls: Vec<Call>,
    /// Bytes queued for the guest on the current connection.
    inbound: VecDeque<u8>,
    decoder: Decoder,
    /// Index of the open connection, if one is open and not closed by the broker.
    current: Option<usize>,
    connections: usize,
    /// First scripting failure; ends the run with a trap carrying it.
    pub(crate) failure: Option<String>,
    /// Import calls so far (a guard against a looping guest).
    pub(crate) import_calls: u64,
    /// Bytes of log lines and sent data recorded so far (a guard against a
    /// flooding guest).
    recorded_bytes: usize,
    /// Instances made so far.
    pub(crate) instances: u64,
    /// When the iteration in flight started, virtual milliseconds.
    pub(crate) iteration_started_ms: u64,
    /// The bound the logic declared for it, if any.
    pub(crate) declared_ms: Option<u64>,
    /// The scenario's iteration timeout (`--iteration-timeout-ms`), if set.
    pub(crate) timeout_ms: Option<u64>,
}

/// Import calls after which the mock stops a guest as looping.
pub const MAX_IMPORT_CALLS: u64 = 1_000_000;

/// Bytes of log lines and sent data a run may record before the mock stops
/// the guest as flooding.
pub const MAX_RECORDED_BYTES: usize = 64 << 20;

impl Broker {
    pub(crate) fn new(script: Script, rng: ChaCha20Rng) -> Self {
        Self {
            script,
            rng,
            now_ms: 0,
            calls: Vec::new(),
            inbound: VecDeque::new(),
            decoder: Decoder::default(),
            current: None,
            connections: 0,
            failure: None,
            import_calls: 0,
            iteration_started_ms: 0,
            declared_ms: None,
            timeout_ms: None,
            recorded_bytes: 0,
            instances: 0,
        }
    }

    /// A new instance starts with no connection open.
    pub(crate) fn instantiated(&mut self) {
        self.current = None;
        self.inbound.clear();
        self.instances += 1;
        self.calls.push(Call::Instantiate);
    }

    /// Counts `bytes` more recorded; past [`MAX_RECORDED_BYTES`] the run fails.
    fn record(&mut self, bytes: usize) -> wasmtime::Result<()> {
        self.recorded_bytes = self.recorded_bytes.saturating_add(bytes);
        if self.recorded_bytes > MAX_RECORDED_BYTES {
            return Err(self.fail(format!(
                "mock host: the guest logged and sent over {} MiB; it is flooding",
                MAX_RECORDED_BYTES >> 20
            )));
        }
        Ok(())
    }

    /// Runs the steps that act by themselves (Send, Close, Trap) at the head.
    fn advance(&mut self) -> wasmtime::Result<()> {
        loop {
            match self.script.steps.front() {
                Some(Step::Send(_)) => {
                    if let Some(Step::Send(bytes)) = self.script.steps.pop_front() {
                        self.inbound.extend(bytes);
                    }
                }
                Some(Step::Close) => {
                    self.script.steps.pop_front();
                    self.current = None;
                    self.inbound.clear();
                }
                Some(Step::Trap(_)) => {
                    if let Some(Step::Trap(message)) = self.script.steps.pop_front() {
                        return Err(wasmtime::Error::msg(message));
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// Lets `ms` of virtual time pass, unless the iteration's timeout comes
    /// first: then time stops there and the guest is stopped with the limit
    /// `host run` would stop it with.
    pub(crate) fn wait(&mut self, ms: u64) -> wasmtime::Result<()> {
        let (limit, set_by) =
            host_core::timeout::iteration_timeout(self.timeout_ms, self.declared_ms);
        let deadline = self.iteration_started_ms.saturating_add(limit);
        if limit > 0 && self.now_ms.saturating_add(ms) > deadline {
            self.now_ms = self.now_ms.max(deadline);
            return Err(wasmtime::Error::new(
                host_core::outcome::LimitHit::IterationTimeout {
                    limit_ms: limit,
                    set_by,
                },
            ));
        }
        self.now_ms += ms;
        Ok(())
    }

    /// Every import call passes here: counts calls, fails scripted faults.
    fn enter(&mut self) -> wasmtime::Result<()> {
        self.import_calls += 1;
        if self.import_calls > MAX_IMPORT_CALLS {
            // Ends the run: a restart would loop the same way.
            return Err(self.fail(format!(
                "mock host: the guest made over {MAX_IMPORT_CALLS} import calls; it is looping"
            )));
        }
        if let Some(f) = &self.failure {
            return Err(wasmtime::Error::msg(f.clone()));
        }
        self.advance()
    }

    /// Fails the run with `message` (the first failure wins).
    pub(crate) fn fail(&mut self, message: String) -> wasmtime::Error {
        let message = self.failure.get_or_insert(message).clone();
        wasmtime::Error::msg(message)
    }

    /// The broker's handling of one guest packet.
    fn on_packet(&mut self, packet: Packet) -> wasmtime::Result<()> {
        self.calls.push(Call::Sent {
            packet: packet.clone(),
            at_ms: self.now_ms,
        });
        let replies = match self.script.steps.pop_front() {
            Some(Step::Expect(kind, reply)) => {
                if packet_name(&packet) != kind {
                    return Err(self.fail(format!("mock broker expected {kind}, got {packet:?}")));
                }
                reply(&packet)
            }
            Some(Step::ExpectWhere(kind, check, reply)) => {
                if packet_name(&packet) != kind {
                    return Err(self.fail(format!("mock broker expected {kind}, got {packet:?}")));
                }
                if let Err(why) = check(&packet) {
                    return Err(self.fail(format!(
                        "mock broker: {kind} not as expected: {why}; got {packet:?}"
                    )));
                }
                reply(&packet)
            }
            Some(Step::Auto(n)) => {
                if n > 1 {
                    self.script.steps.push_front(Step::Auto(n - 1));
                }
                auto_reply(&packet)
            }
            Some(other) => {
                let expected = format!("{other:?}");
                self.script.steps.push_front(other);
                return Err(self.fail(format!("mock broker expected {expected}, got {packet:?}")));
            }
            None if self.script.after == AfterScript::Auto => auto_reply(&packet),
            None => return Err(self.fail(format!("mock broker: script ended, got {packet:?}"))),
        };
        for reply in replies {
            let bytes = encode(&reply).map_err(|e| self.fail(format!("mock broker: {e}")))?;
            self.inbound.extend(bytes);
        }
        self.advance()
    }
}

impl WasiView for MockState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for MockState {}

fn connection(conn: &Resource<Connection>) -> Resource<MockConnection> {
    Resource::new_borrow(conn.rep())
}

impl SocketHost for MockState {
    async fn connect(
        &mut self,
        host: String,
        port: u16,
        _timeout_ms: u32,
    ) -> wasmtime::Result<Result<Resource<Connection>, ErrorCode>> {
        let index = {
            let mut b = self.broker();
            b.enter()?;
            if let Some(Step::RefuseConnect(code)) = b.script.steps.front() {
                let code = *code;
                b.script.steps.pop_front();
                b.calls.push(Call::Connect {
                    host,
                    port,
                    refused: Some(code),
                });
                return Ok(Err(code.into()));
            }
            b.calls.push(Call::Connect {
                host,
                port,
                refused: None,
            });
            let index = b.connections;
            b.connections += 1;
            b.current = Some(index);
            b.inbound.clear();
            b.decoder.clear();
            index
        };
        let handle = self.table.push(MockConnection { index })?;
        Ok(Ok(Resource::new_own(handle.rep())))
    }
}

impl HostConnection for MockState {
    async fn send(
        &mut self,
        conn: Resource<Connection>,
        data: Vec<u8>,
        _timeout_ms: u32,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let index = self.table.get(&connection(&conn))?.index;
        let mut b = self.broker();
        b.enter()?;
        b.record(data.len())?;
        if b.current != Some(index) {
            return Ok(Err(ErrorCode::ConnectionClosed));
        }
        b.decoder.push(&data);
        loop {
            match b.decoder.next_packet() {
                Ok(Some(packet)) => b.on_packet(packet)?,
                Ok(None) => break,
                Err(e) => {
                    return Err(b.fail(format!("mock broker: the guest sent malformed bytes: {e}")));
                }
            }
            if b.current != Some(index) {
                break;
            }
        }
        Ok(Ok(()))
    }

    async fn receive(
        &mut self,
        conn: Resource<Connection>,
        max_len: u32,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, ErrorCode>> {
        let index = self.table.get(&connection(&conn))?.index;
        let mut b = self.broker();
        b.enter()?;
        if b.current != Some(index) {
            return Ok(Err(ErrorCode::ConnectionClosed));
        }
        if b.inbound.is_empty() {
            b.calls.push(Call::WaitedOut(timeout_ms));
            b.wait(u64::from(timeout_ms))?;
            return Ok(Ok(Vec::new()));
        }
        let limit = match b.script.delivery {
            Delivery::Coalesced => max_len as usize,
            Delivery::OneByte => 1,
        };
        let n = limit.min(b.inbound.len());
        let bytes: Vec<u8> = b.inbound.drain(..n).collect();
        b.calls.push(Call::Received(bytes.clone()));
        Ok(Ok(bytes))
    }

    async fn close(&mut self, conn: Resource<Connection>) -> wasmtime::Result<()> {
        let index = self.table.get(&connection(&conn))?.index;
        let mut b = self.broker();
        if b.current == Some(index) {
            b.current = None;
        }
        b.calls.push(Call::Close);
        Ok(())
    }

    async fn drop(&mut self, conn: Resource<Connection>) -> wasmtime::Result<()> {
        self.table
            .delete(Resource::<MockConnection>::new_own(conn.rep()))?;
        Ok(())
    }
}

impl entropy::Host for MockState {
    async fn get_random_bytes(&mut self, len: u32) -> wasmtime::Result<Vec<u8>> {
        let mut b = self.broker();
        b.enter()?;
        b.calls.push(Call::Entropy(len));
        let mut bytes = vec![0u8; len.min(4096) as usize];
        b.rng.fill_bytes(&mut bytes);
        Ok(bytes)
    }
}

impl clock::Host for MockState {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        let mut b = self.broker();
        b.enter()?;
        Ok(b.now_ms)
    }

    fn now_us(&mut self) -> wasmtime::Result<u64> {
        let mut b = self.broker();
        b.enter()?;
        Ok(b.now_ms * 1000)
    }

    async fn sleep_ms(&mut self, duration_ms: u32) -> wasmtime::Result<()> {
        let mut b = self.broker();
        b.enter()?;
        b.calls.push(Call::Sleep(duration_ms));
        b.wait(u64::from(duration_ms))?;
        Ok(())
    }
}

impl iteration::Host for MockState {
    fn declare_bound(&mut self, ms: u64) -> wasmtime::Result<()> {
        let mut b = self.broker();
        b.enter()?;
        b.calls.push(Call::DeclaredBound(ms));
        b.declared_ms = Some(ms);
        Ok(())
    }
}

impl log::Host for MockState {
    async fn write(
        &mut self,
        level: host_core::wit::log::WitLevel,
        message: String,
    ) -> wasmtime::Result<()> {
        let mut b = self.broker();
        b.enter()?;
        b.record(message.len())?;
        b.calls.push(Call::Log(level.into(), message));
        Ok(())
    }
}
