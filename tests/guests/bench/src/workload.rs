//! The benchmark workload, over mqtt-core's client and [`Platform`]: QoS 1
//! echo round trips one at a time, then publishes pipelined in a window of
//! outstanding messages. Built into the bench component and run natively by
//! the comparison benchmark, so both measure the same logic.

use mqtt_core::{
    Client, ClientError, Clock, Event, Flow, MAX_OUTGOING, Platform, Timing, TransportError,
};
use mqttbytes::QoS;
use mqttbytes::v4::{Connect, ConnectReturnCode};

/// Publishes outstanding at once in the pipelined phase (the client's
/// outgoing records, as coreMQTT's).
pub const WINDOW: usize = MAX_OUTGOING;

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct BenchResult {
    /// Each sequential round trip (PUBLISH sent to PUBACK and echo both
    /// received), microseconds.
    pub round_trips_us: Vec<u32>,
    /// Messages in the pipelined phase.
    pub pipelined: u32,
    /// Time of the pipelined phase, from the first PUBLISH to the last PUBACK
    /// and echo, microseconds.
    pub pipelined_us: u64,
}

/// What a run needs to know: where, who, how many, and how long to wait.
#[derive(Debug, Clone)]
pub struct Config {
    /// Broker host name.
    pub broker_host: String,
    /// Broker port.
    pub broker_port: u16,
    /// MQTT client id.
    pub client_id: String,
    /// Topic published and subscribed to.
    pub topic: String,
    /// Messages in each phase.
    pub messages: u32,
    /// Payload of every message.
    pub payload: String,
    /// Longest the TLS connect may take, milliseconds.
    pub connect_timeout_ms: u32,
    /// Longest wait for CONNACK, milliseconds.
    pub connack_timeout_ms: u32,
    /// Longest wait for what a phase waits for, milliseconds.
    pub process_loop_ms: u32,
    /// The client's keep-alive and send timings.
    pub timing: Timing,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq)]
pub enum BenchError {
    /// The connection could not be opened.
    Connect(TransportError),
    /// The client failed (transport, protocol, encoding); describes it.
    Client(String),
    /// An awaited acknowledgement did not arrive in time; names it.
    TimedOut(String),
}

fn fail(e: ClientError) -> BenchError {
    BenchError::Client(format!("{e:?}"))
}

/// Connects to the broker in `config` and runs both phases with
/// `config.messages` messages each.
pub fn run<P: Platform>(platform: &mut P, config: &Config) -> Result<BenchResult, BenchError> {
    let s = config;
    let topic = &s.topic;
    let conn = platform
        .connect(&s.broker_host, s.broker_port, s.connect_timeout_ms)
        .map_err(BenchError::Connect)?;
    let clock = platform.clock();
    let mut client = Client::new(conn, clock.clone(), s.timing);
    let mut connect = Connect::new(s.client_id.clone());
    connect.keep_alive = s.timing.keep_alive_secs;
    let ack = client
        .connect(&connect, s.connack_timeout_ms)
        .map_err(fail)?;
    if ack.code != ConnectReturnCode::Success {
        return Err(BenchError::Client(format!("CONNACK {:?}", ack.code)));
    }
    let sub = client
        .subscribe(&[(topic.clone(), QoS::AtLeastOnce)])
        .map_err(fail)?;
    let mut subscribed = false;
    client
        .process_loop(s.process_loop_ms, &mut |e| match e {
            Event::SubAck(a) if a.pkid == sub => {
                subscribed = true;
                Flow::Done
            }
            _ => Flow::Continue,
        })
        .map_err(fail)?;
    if !subscribed {
        return Err(BenchError::TimedOut("SUBACK".into()));
    }
    let payload = s.payload.as_bytes();
    let mut result = BenchResult::default();

    for _ in 0..s.messages {
        let start = clock.now_us();
        let pkid = client.publish(topic, payload).map_err(fail)?;
        let (mut acked, mut echoed) = (false, false);
        client
            .process_loop(s.process_loop_ms, &mut |e| {
                match e {
                    Event::PubAck(id) if id == pkid => acked = true,
                    Event::Publish(_) => echoed = true,
                    _ => {}
                }
                if acked && echoed {
                    Flow::Done
                } else {
                    Flow::Continue
                }
            })
            .map_err(fail)?;
        if !(acked && echoed) {
            return Err(BenchError::TimedOut(format!(
                "PUBACK and echo of packet id {pkid}"
            )));
        }
        result
            .round_trips_us
            .push(u32::try_from(clock.now_us() - start).unwrap_or(u32::MAX));
    }

    let n = s.messages;
    let (mut sent, mut acked, mut echoes) = (0u32, 0u32, 0u32);
    let start = clock.now_us();
    while acked < n || echoes < n {
        while sent < n && client.outstanding().len() < WINDOW {
            client.publish(topic, payload).map_err(fail)?;
            sent += 1;
        }
        let before = (acked, echoes);
        client
            .process_loop(s.process_loop_ms, &mut |e| match e {
                Event::PubAck(_) => {
                    acked += 1;
                    Flow::Done
                }
                Event::Publish(_) => {
                    echoes += 1;
                    Flow::Continue
                }
                _ => Flow::Continue,
            })
            .map_err(fail)?;
        if (acked, echoes) == before {
            return Err(BenchError::TimedOut(format!(
                "pipelined acks ({acked}/{n} acknowledged)"
            )));
        }
    }
    result.pipelined = n;
    result.pipelined_us = clock.now_us() - start;
    client.disconnect();
    Ok(result)
}

/// The `p`th percentile (0..=100) of `sorted` values; 0 when there are none.
/// The benchmark's own, so the sandboxed and native runs count alike.
pub fn percentile(sorted: &[u32], p: usize) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}
