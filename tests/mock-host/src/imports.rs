//! The mock host's implementations of the world's imports: a scripted
//! broker behind `mtls-socket`, seeded `entropy`, a virtual `clock`, and a
//! captured `log`. Every call is recorded.

use std::collections::VecDeque;

use mqttbytes::v4::Packet;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use guest::packets::{Decoder, encode, packet_name};

use crate::bindings::log::Level;
use crate::bindings::mtls_socket::{ErrorCode, Host as SocketHost, HostConnection};
use crate::bindings::{clock, entropy, log, types};
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
        refused: Option<ErrorCode>,
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
}

/// A guest-held connection in the mock.
pub struct MockConnection {
    /// Which connection this is, counting from 0.
    pub index: usize,
}

/// Store data of a mock run.
pub struct MockState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
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
}

/// Import calls after which the mock stops a guest as looping.
pub const MAX_IMPORT_CALLS: u64 = 1_000_000;

impl MockState {
    pub(crate) fn new(script: Script, rng: ChaCha20Rng) -> Self {
        Self {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
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
        }
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

    /// Every import call passes here: counts calls, fails scripted faults.
    fn enter(&mut self) -> wasmtime::Result<()> {
        self.import_calls += 1;
        if self.import_calls > MAX_IMPORT_CALLS {
            return Err(wasmtime::Error::msg(format!(
                "mock host: the guest made over {MAX_IMPORT_CALLS} import calls; it is looping"
            )));
        }
        if let Some(f) = &self.failure {
            return Err(wasmtime::Error::msg(f.clone()));
        }
        self.advance()
    }

    fn fail(&mut self, message: String) -> wasmtime::Error {
        self.failure = Some(message.clone());
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
            self.inbound.extend(encode(&reply));
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

impl SocketHost for MockState {
    fn connect(
        &mut self,
        host: String,
        port: u16,
        _timeout_ms: u32,
    ) -> wasmtime::Result<Result<Resource<MockConnection>, ErrorCode>> {
        self.enter()?;
        if let Some(Step::RefuseConnect(code)) = self.script.steps.front() {
            let code = *code;
            self.script.steps.pop_front();
            self.calls.push(Call::Connect {
                host,
                port,
                refused: Some(code),
            });
            return Ok(Err(code));
        }
        self.calls.push(Call::Connect {
            host,
            port,
            refused: None,
        });
        let index = self.connections;
        self.connections += 1;
        self.current = Some(index);
        self.inbound.clear();
        self.decoder.clear();
        Ok(Ok(self.table.push(MockConnection { index })?))
    }
}

impl HostConnection for MockState {
    fn send(
        &mut self,
        conn: Resource<MockConnection>,
        data: Vec<u8>,
        _timeout_ms: u32,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        self.enter()?;
        let index = self.table.get(&conn)?.index;
        if self.current != Some(index) {
            return Ok(Err(ErrorCode::ConnectionClosed));
        }
        self.decoder.push(&data);
        loop {
            match self.decoder.next_packet() {
                Ok(Some(packet)) => self.on_packet(packet)?,
                Ok(None) => break,
                Err(e) => {
                    return Err(
                        self.fail(format!("mock broker: the guest sent malformed bytes: {e}"))
                    );
                }
            }
            if self.current != Some(index) {
                break;
            }
        }
        Ok(Ok(()))
    }

    fn receive(
        &mut self,
        conn: Resource<MockConnection>,
        max_len: u32,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, ErrorCode>> {
        self.enter()?;
        let index = self.table.get(&conn)?.index;
        if self.current != Some(index) {
            return Ok(Err(ErrorCode::ConnectionClosed));
        }
        if self.inbound.is_empty() {
            self.now_ms += u64::from(timeout_ms);
            self.calls.push(Call::WaitedOut(timeout_ms));
            return Ok(Ok(Vec::new()));
        }
        let limit = match self.script.delivery {
            Delivery::Coalesced => max_len as usize,
            Delivery::OneByte => 1,
        };
        let n = limit.min(self.inbound.len());
        let bytes: Vec<u8> = self.inbound.drain(..n).collect();
        self.calls.push(Call::Received(bytes.clone()));
        Ok(Ok(bytes))
    }

    fn close(&mut self, conn: Resource<MockConnection>) -> wasmtime::Result<()> {
        let index = self.table.get(&conn)?.index;
        if self.current == Some(index) {
            self.current = None;
        }
        self.calls.push(Call::Close);
        Ok(())
    }

    fn drop(&mut self, conn: Resource<MockConnection>) -> wasmtime::Result<()> {
        self.table.delete(conn)?;
        Ok(())
    }
}

impl entropy::Host for MockState {
    fn get_random_bytes(&mut self, len: u32) -> wasmtime::Result<Vec<u8>> {
        self.enter()?;
        self.calls.push(Call::Entropy(len));
        let mut bytes = vec![0u8; len.min(4096) as usize];
        self.rng.fill_bytes(&mut bytes);
        Ok(bytes)
    }
}

impl clock::Host for MockState {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        self.enter()?;
        Ok(self.now_ms)
    }

    fn now_us(&mut self) -> wasmtime::Result<u64> {
        self.enter()?;
        Ok(self.now_ms * 1000)
    }

    fn sleep_ms(&mut self, duration_ms: u32) -> wasmtime::Result<()> {
        self.enter()?;
        self.now_ms += u64::from(duration_ms);
        self.calls.push(Call::Sleep(duration_ms));
        Ok(())
    }
}

impl log::Host for MockState {
    fn write(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.enter()?;
        self.calls.push(Call::Log(level, message));
        Ok(())
    }
}
