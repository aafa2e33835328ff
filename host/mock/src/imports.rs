//! The mock host's implementations of the world's imports: a scripted
//! broker behind `mtls-socket`, seeded `entropy`, a virtual `clock`, a
//! captured `log`, and a recorded `iteration` bound (the state and the
//! logic's settings are the real host's, on the scenario's store and
//! settings: see the crate's `MockRuntime`). Every call is
//! recorded. The broker, the clock and the record outlive an instance, so
//! a restarted guest meets the same broker. The sandbox's limits are
//! host-core's, as under `host run`: the connect gate and rate, the output
//! meter and the state's write rate count on virtual time; what they cost
//! the guest (a refusal's wait, a dropped line's) passes on it too.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use host_core::limits::Limits;
use host_core::limits::connects::{ConnectGate, RECEIVE_CHUNK, REFUSAL_WAIT, Refusal};
use host_core::limits::cpu::CpuMeter;
use host_core::limits::output::{OVER_LIMIT_WAIT, OutputMeter, shown};
use host_core::limits::rate::TokenBucket;
use host_core::outcome::LimitHit;
use host_core::state::ctx::{Permit, StateCtx};
use host_core::wit::mtls_socket::{Connection, ErrorCode, Host as SocketHost, HostConnection};
use host_core::wit::{clock, entropy, iteration, log, types};
use host_core::{Level, TransportError};
use mqtt_core::packets::{Decoder, Version, connect_version, encode_for, packet_name};
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
    Sleep {
        /// Its duration, milliseconds.
        ms: u32,
        /// Whether the logic held a connection it opened (and had not
        /// closed or dropped) as it slept.
        connected: bool,
    },
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
    /// Whether the guest has not closed it yet (it counts against
    /// `max-connections` until it closes or drops it).
    open: bool,
}

/// Store data of a mock instance: its own WASI and resources, and the
/// broker shared by every instance of a run.
pub struct MockState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) broker: Arc<Mutex<Broker>>,
    pub(crate) limits: host_core::limiter::GrowthLimiter,
    /// The guest's computation, against the CPU limit and budget.
    pub(crate) cpu: CpuMeter,
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
        limits: &Limits,
    ) -> Self {
        Self {
            wasi: crate::wasi::context(&broker, seed, instance),
            table: ResourceTable::new(),
            broker,
            limits: limits.limiter(),
            cpu: CpuMeter::default(),
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

    /// An import call: counted for the CPU limit (as the host's linker
    /// counts it), then the broker's checks.
    fn call(&mut self) -> wasmtime::Result<MutexGuard<'_, Broker>> {
        self.cpu.host_calls = self.cpu.host_calls.wrapping_add(1);
        let mut b = self.broker();
        b.enter()?;
        Ok(b)
    }

    /// Counts a call of an import the real host implements (state,
    /// settings, WASI) for the CPU limit.
    pub(crate) fn counted(&mut self) -> &mut Self {
        self.cpu.host_calls = self.cpu.host_calls.wrapping_add(1);
        self
    }
}

/// The state's write rate on the broker's virtual time.
pub(crate) fn state_write_permit(broker: &Arc<Mutex<Broker>>) -> Permit {
    let broker = broker.clone();
    Box::new(move |n| {
        let mut b = broker.lock().unwrap_or_else(|p| p.into_inner());
        let now = b.virtual_now();
        b.state_writes.try_take_n(n, now)
    })
}

/// Bytes on their way to the guest, in order, each chunk there from its
/// virtual time on (never before the chunk ahead of it: one stream).
#[derive(Debug, Default)]
struct Inbound {
    chunks: VecDeque<(u64, Vec<u8>)>,
}

impl Inbound {
    /// Queues `bytes`, there at `at_ms` or when the chunk ahead is.
    fn push(&mut self, at_ms: u64, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let at = self
            .chunks
            .back()
            .map_or(at_ms, |(ahead, _)| at_ms.max(*ahead));
        self.chunks.push_back((at, bytes));
    }

    /// When the next bytes are there, if any are on their way.
    fn next_at(&self) -> Option<u64> {
        self.chunks.front().map(|(at, _)| *at)
    }

    /// When the last bytes on their way are there.
    fn last_at(&self) -> Option<u64> {
        self.chunks.back().map(|(at, _)| *at)
    }

    /// Up to `max` bytes of those there at `now_ms`.
    fn take(&mut self, now_ms: u64, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((at, chunk)) = self.chunks.front_mut() else {
                break;
            };
            if *at > now_ms {
                break;
            }
            let n = (max - out.len()).min(chunk.len());
            out.extend(chunk.drain(..n));
            if chunk.is_empty() {
                self.chunks.pop_front();
            }
        }
        out
    }

    fn clear(&mut self) {
        self.chunks.clear();
    }
}

/// The scripted broker, the virtual clock and the record of a run.
pub struct Broker {
    pub(crate) script: Script,
    pub(crate) rng: ChaCha20Rng,
    /// Virtual time, milliseconds.
    pub(crate) now_ms: u64,
    pub(crate) calls: Vec<Call>,
    /// Bytes on their way to the guest on the current connection.
    inbound: Inbound,
    decoder: Decoder,
    /// Index of the open connection, if one is open and not closed by the broker.
    current: Option<usize>,
    connections: usize,
    /// First scripting failure; ends the run with a trap carrying it.
    pub(crate) failure: Option<String>,
    /// Bytes of the record so far.
    recorded_bytes: usize,
    /// Calls left out of the record once it was full.
    pub(crate) calls_cut: u64,
    /// Instances made so far.
    pub(crate) instances: u64,
    /// When the iteration in flight started, virtual milliseconds.
    iteration_started_ms: u64,
    /// The bound the logic declared for it, if any.
    declared_ms: Option<u64>,
    /// The sandbox's limits.
    limits: Limits,
    /// The endpoint the logic may connect to: the settings' broker.
    endpoint: (String, u16),
    /// The connect policy and its refusals in the iteration.
    gate: ConnectGate,
    /// The connect rate, kept across restarts as the host keeps it.
    connect_rate: TokenBucket,
    /// Connections the guest holds (opened, not closed or dropped).
    open: usize,
    /// The output limit, shared by the log import and WASI stdio.
    pub(crate) output: OutputMeter,
    /// Output lines dropped over it, in all.
    pub(crate) dropped_lines: u64,
    /// The state's write rate.
    state_writes: TokenBucket,
    /// The instant virtual time 0 stands for, for host-core's meters.
    origin: Instant,
    /// The delay of the broker's next reply (an `after-ms` step), ms.
    reply_delay_ms: u64,
    /// Script steps done so far (the index of the step at the head).
    steps_taken: usize,
    /// When a `close` step waiting for delayed bytes closes the connection.
    close_at: Option<u64>,
    /// The MQTT version of the connection, from its CONNECT.
    version: Version,
}

/// Bytes the record of calls may hold (each call's size with the text and
/// data it carries); the calls past it are counted, not kept, so a logic
/// that calls without end costs the mock host bounded memory until a limit
/// stops it.
pub const MAX_RECORDED_BYTES: usize = 64 << 20;

impl Broker {
    /// A broker for `script`, its limits `limits`, the logic allowed to
    /// connect to `endpoint`.
    pub(crate) fn new(
        script: Script,
        rng: ChaCha20Rng,
        limits: Limits,
        endpoint: (&str, u16),
    ) -> Self {
        let origin = Instant::now();
        Self {
            script,
            rng,
            now_ms: 0,
            calls: Vec::new(),
            inbound: Inbound::default(),
            decoder: Decoder::default(),
            current: None,
            connections: 0,
            failure: None,
            iteration_started_ms: 0,
            declared_ms: None,
            recorded_bytes: 0,
            calls_cut: 0,
            instances: 0,
            limits,
            endpoint: (endpoint.0.to_string(), endpoint.1),
            gate: ConnectGate::new(limits.sockets()),
            connect_rate: limits.connect_bucket(origin),
            open: 0,
            output: OutputMeter::new(limits.output, origin),
            dropped_lines: 0,
            state_writes: limits.state_write_bucket(origin),
            origin,
            reply_delay_ms: 0,
            steps_taken: 0,
            close_at: None,
            version: Version::V311,
        }
    }

    /// The broker closes the connection: what the guest has not read is
    /// lost, its next receive or send fails.
    fn close_now(&mut self) {
        self.current = None;
        self.inbound.clear();
        self.close_at = None;
    }

    /// The step at the head of the script: its label from the file, or
    /// its number.
    fn step_label(&self) -> String {
        self.script
            .labels
            .get(self.steps_taken)
            .cloned()
            .unwrap_or_else(|| format!("step {}", self.steps_taken + 1))
    }

    /// Takes the step at the head of the script.
    fn take_step(&mut self) -> Option<Step> {
        let step = self.script.steps.pop_front();
        if step.is_some() {
            self.steps_taken += 1;
        }
        step
    }

    /// Virtual time as an instant, for host-core's meters.
    fn virtual_now(&self) -> Instant {
        self.origin + Duration::from_millis(self.now_ms)
    }

    /// Starts iteration `iteration`: its timeout, refusals and dropped
    /// lines count from now.
    pub(crate) fn new_iteration(&mut self, iteration: u32) {
        self.iteration_started_ms = self.now_ms;
        self.declared_ms = None;
        self.gate.new_iteration();
        self.output.new_iteration(iteration);
    }

    /// Records `call`, while the record has room.
    pub(crate) fn push(&mut self, call: Call) {
        let size = std::mem::size_of::<Call>() + heap_bytes(&call);
        if self.recorded_bytes.saturating_add(size) > MAX_RECORDED_BYTES {
            self.calls_cut += 1;
            return;
        }
        self.recorded_bytes += size;
        self.calls.push(call);
    }

    /// A new instance starts with no connection open.
    pub(crate) fn instantiated(&mut self) {
        self.close_now();
        // The store that held its connections is gone, and a flood that
        // stopped the last instance is not this one's.
        self.open = 0;
        self.output.restarted();
        self.instances += 1;
        self.push(Call::Instantiate);
    }

    /// Runs the steps that act by themselves (Send, Close, Trap) at the head.
    fn advance(&mut self) -> wasmtime::Result<()> {
        loop {
            match self.script.steps.front() {
                Some(Step::Send(_)) => {
                    if let Some(Step::Send(bytes)) = self.take_step() {
                        let at = self.now_ms + std::mem::take(&mut self.reply_delay_ms);
                        self.inbound.push(at, bytes);
                    }
                }
                Some(Step::After(_)) => {
                    // It delays what comes next: bytes to send now, or the
                    // reply to the next packet.
                    if let Some(Step::After(ms)) = self.take_step() {
                        self.reply_delay_ms = self.reply_delay_ms.saturating_add(ms);
                    }
                    if !matches!(self.script.steps.front(), Some(Step::Send(_))) {
                        return Ok(());
                    }
                }
                Some(Step::Close) => {
                    self.take_step();
                    // Bytes still on their way (`after-ms`) arrive first:
                    // the close is behind them on the stream.
                    match self.inbound.last_at() {
                        Some(at) if at > self.now_ms => self.close_at = Some(at),
                        _ => self.close_now(),
                    }
                }
                Some(Step::Trap(_)) => {
                    if let Some(Step::Trap(message)) = self.take_step() {
                        return Err(wasmtime::Error::msg(message));
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// Waits what the policy costs the guest, on virtual time.
    fn cost(&mut self, wait: Duration) -> wasmtime::Result<()> {
        self.wait(wait.as_millis() as u64)
    }

    /// A guest output line at `level` from `source` ("", "stdout: ",
    /// "host: "), through the output limit: recorded as the host writes
    /// it (the line cut and escaped, then its source), or dropped and
    /// counted (the write then costs [`OVER_LIMIT_WAIT`]).
    pub(crate) fn output_line(&mut self, level: Level, source: &str, line: &str) {
        let (allowed, _) = self.output.permit(1, self.virtual_now());
        if allowed == 1 {
            self.push(Call::Log(level, format!("{source}{}", shown(line))));
        } else {
            self.dropped_lines += 1;
            self.now_ms += OVER_LIMIT_WAIT.as_millis() as u64;
        }
    }

    /// Answers a call the policy refused: its line in the output, the
    /// refusal's wait; a storm stops the guest.
    fn refuse(
        &mut self,
        verdict: Result<Result<(), Refusal>, LimitHit>,
    ) -> wasmtime::Result<Option<TransportError>> {
        match verdict? {
            Ok(()) => Ok(None),
            Err(refusal) => {
                self.output_line(Level::Warn, "host: ", &refusal.line);
                self.cost(REFUSAL_WAIT)?;
                Ok(Some(refusal.code))
            }
        }
    }

    /// Lets `ms` of virtual time pass, unless the iteration's timeout comes
    /// first: then time stops there and the guest is stopped with the limit
    /// `host run` would stop it with.
    pub(crate) fn wait(&mut self, ms: u64) -> wasmtime::Result<()> {
        let (limit, set_by) = host_core::timeout::iteration_timeout(
            self.limits.iteration_timeout_ms,
            self.declared_ms,
        );
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

    /// Every import call passes here: a flood over the output limit
    /// stops the guest, a scripted fault fails it.
    fn enter(&mut self) -> wasmtime::Result<()> {
        if let Some(f) = &self.failure {
            return Err(wasmtime::Error::msg(f.clone()));
        }
        if self.close_at.is_some_and(|at| at <= self.now_ms) {
            self.close_now();
        }
        self.output.flood()?;
        self.advance()
    }

    /// Fails the run with `message` (the first failure wins).
    pub(crate) fn fail(&mut self, message: String) -> wasmtime::Error {
        let message = self.failure.get_or_insert(message).clone();
        wasmtime::Error::msg(message)
    }

    /// The broker's handling of one guest packet.
    fn on_packet(&mut self, packet: Packet) -> wasmtime::Result<()> {
        self.push(Call::Sent {
            packet: packet.clone(),
            at_ms: self.now_ms,
        });
        let at = self.now_ms + std::mem::take(&mut self.reply_delay_ms);
        let label = self.step_label();
        let replies = match self.script.steps.pop_front() {
            Some(Step::Expect(kind, reply)) => {
                self.steps_taken += 1;
                if packet_name(&packet) != kind {
                    return Err(self.fail(format!(
                        "mock broker, {label}: expected {kind}, got {packet:?}"
                    )));
                }
                reply(&packet)
            }
            Some(Step::ExpectWhere(kind, check, reply)) => {
                self.steps_taken += 1;
                if packet_name(&packet) != kind {
                    return Err(self.fail(format!(
                        "mock broker, {label}: expected {kind}, got {packet:?}"
                    )));
                }
                if let Err(why) = check(&packet) {
                    return Err(self.fail(format!(
                        "mock broker, {label}: {kind} not as expected: {why}; got {packet:?}"
                    )));
                }
                reply(&packet)
            }
            Some(Step::Auto(n)) => {
                if n > 1 {
                    self.script.steps.push_front(Step::Auto(n - 1));
                } else {
                    self.steps_taken += 1;
                }
                auto_reply(&packet)
            }
            Some(other) => {
                let expected = other.to_string();
                self.script.steps.push_front(other);
                return Err(self.fail(format!(
                    "mock broker, {label}: expected {expected}, got {packet:?}"
                )));
            }
            None if self.script.after == AfterScript::Auto => auto_reply(&packet),
            None => {
                return Err(self.fail(format!(
                    "mock broker: the script ended (after = \"strict\"), got {packet:?}"
                )));
            }
        };
        for reply in replies {
            let bytes = encode_for(&reply, self.version)
                .map_err(|e| self.fail(format!("mock broker: {e}")))?;
            self.inbound.push(at, bytes);
        }
        self.advance()
    }
}

impl WasiView for MockState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.cpu.host_calls = self.cpu.host_calls.wrapping_add(1);
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
            let mut b = self.call()?;
            let permitted = b.endpoint.1 == port && b.endpoint.0.eq_ignore_ascii_case(&host);
            let now = b.virtual_now();
            let open = b.open;
            let Broker {
                gate, connect_rate, ..
            } = &mut *b;
            let verdict = gate.admit((&host, port), permitted, open, connect_rate, now);
            if let Some(code) = b.refuse(verdict)? {
                b.push(Call::Connect {
                    host,
                    port,
                    refused: Some(code),
                });
                return Ok(Err(code.into()));
            }
            if let Some(Step::RefuseConnect(code)) = b.script.steps.front() {
                let code = *code;
                b.take_step();
                // The host's line about a failed connect counts against
                // the guest's output limit (its text is the host's own).
                let now = b.virtual_now();
                b.output.permit(1, now);
                b.push(Call::Connect {
                    host,
                    port,
                    refused: Some(code),
                });
                return Ok(Err(code.into()));
            }
            b.push(Call::Connect {
                host,
                port,
                refused: None,
            });
            let index = b.connections;
            b.connections += 1;
            b.open += 1;
            b.current = Some(index);
            b.inbound.clear();
            b.close_at = None;
            b.decoder.clear();
            b.version = Version::V311;
            b.decoder.set_version(Version::V311);
            index
        };
        let handle = self.table.push(MockConnection { index, open: true })?;
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
        let mut b = self.call()?;
        let verdict = b.gate.send(data.len());
        if let Some(code) = b.refuse(verdict)? {
            return Ok(Err(code.into()));
        }
        if b.current != Some(index) {
            return Ok(Err(ErrorCode::ConnectionClosed));
        }
        // A connection's first bytes say its MQTT version (its CONNECT's
        // protocol level); the broker answers in it.
        if b.decoder.buffered() == 0
            && let Some(version) = connect_version(&data)
        {
            b.version = version;
            b.decoder.set_version(version);
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
        let mut b = self.call()?;
        let verdict = b.gate.receive(max_len);
        if let Some(code) = b.refuse(verdict)? {
            return Ok(Err(code.into()));
        }
        if b.current != Some(index) {
            return Ok(Err(ErrorCode::ConnectionClosed));
        }
        // Bytes on their way within the timeout arrive then; with none,
        // the whole timeout passes.
        let within = b.now_ms.saturating_add(u64::from(timeout_ms));
        match b.inbound.next_at() {
            Some(at) if at <= within => {
                let wait = at.saturating_sub(b.now_ms);
                b.wait(wait)?;
            }
            _ => {
                b.push(Call::WaitedOut(timeout_ms));
                b.wait(u64::from(timeout_ms))?;
                return Ok(Ok(Vec::new()));
            }
        }
        let limit = match b.script.delivery {
            Delivery::Coalesced => max_len.min(RECEIVE_CHUNK) as usize,
            Delivery::OneByte => 1,
        };
        let now = b.now_ms;
        let bytes = b.inbound.take(now, limit);
        b.push(Call::Received(bytes.clone()));
        Ok(Ok(bytes))
    }

    async fn close(&mut self, conn: Resource<Connection>) -> wasmtime::Result<()> {
        let c = self.counted().table.get_mut(&connection(&conn))?;
        let (index, was_open) = (c.index, std::mem::replace(&mut c.open, false));
        let mut b = self.broker();
        if was_open {
            b.open = b.open.saturating_sub(1);
        }
        if b.current == Some(index) {
            b.current = None;
        }
        b.push(Call::Close);
        Ok(())
    }

    async fn drop(&mut self, conn: Resource<Connection>) -> wasmtime::Result<()> {
        let c = self
            .counted()
            .table
            .delete(Resource::<MockConnection>::new_own(conn.rep()))?;
        if c.open {
            let mut b = self.broker();
            b.open = b.open.saturating_sub(1);
        }
        Ok(())
    }
}

impl entropy::Host for MockState {
    async fn get_random_bytes(&mut self, len: u32) -> wasmtime::Result<Vec<u8>> {
        let mut b = self.call()?;
        b.push(Call::Entropy(len));
        let mut bytes = vec![0u8; len.min(4096) as usize];
        b.rng.fill_bytes(&mut bytes);
        Ok(bytes)
    }
}

impl clock::Host for MockState {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(self.call()?.now_ms)
    }

    fn now_us(&mut self) -> wasmtime::Result<u64> {
        Ok(self.call()?.now_ms * 1000)
    }

    async fn sleep_ms(&mut self, duration_ms: u32) -> wasmtime::Result<()> {
        let mut b = self.call()?;
        let connected = b.open > 0;
        b.push(Call::Sleep {
            ms: duration_ms,
            connected,
        });
        b.wait(u64::from(duration_ms))?;
        Ok(())
    }
}

impl iteration::Host for MockState {
    fn declare_bound(&mut self, ms: u64) -> wasmtime::Result<()> {
        let mut b = self.call()?;
        b.push(Call::DeclaredBound(ms));
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
        let mut b = self.call()?;
        b.output_line(level.into(), "", &message);
        b.output.flood()?;
        Ok(())
    }
}

/// The text and data a call carries, bytes (what the record holds apart
/// from the call itself).
fn heap_bytes(call: &Call) -> usize {
    match call {
        Call::Connect { host, .. } => host.len(),
        Call::Sent { packet, .. } => match packet {
            Packet::Publish(p) => p.topic.len() + p.payload.len(),
            Packet::Connect(c) => c.client_id.len(),
            Packet::Subscribe(s) => s.filters.iter().map(|f| f.path.len() + 24).sum(),
            Packet::Unsubscribe(u) => u.topics.iter().map(|t| t.len() + 24).sum(),
            _ => 0,
        },
        Call::Received(bytes) => bytes.len(),
        Call::Log(_, line) => line.len(),
        _ => 0,
    }
}
