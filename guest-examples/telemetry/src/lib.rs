//! A telemetry logic with an offline queue. Every iteration it takes one
//! numbered reading and appends it to a bounded queue in the device's
//! durable state (`wasi:keyvalue`), publishes what is queued at QoS 1 while
//! the broker is reachable, and deletes each reading only on its PUBACK.
//! With the broker away it keeps reading; when the broker is back it
//! drains the queue in order. A host killed at any moment loses no
//! reading it acknowledged: a reading is on disk before it is sent, and
//! leaves the queue only once the broker has it (after a crash it may be
//! sent twice; the reading number lets a consumer drop the copy).
//!
//! Its settings (`wasi:config`, `--logic-config KEY=VALUE`):
//! `interval-ms` (one reading every so often, default 1000), `topic`
//! (default `<client-id>/telemetry`) and `queue-max` (readings kept at
//! most, default 1000; when full the oldest is dropped and counted).
//! Build: `cargo build -p guest-telemetry --target wasm32-wasip2 --profile
//! guest` (`scripts/build --all` copies it to target/telemetry.wasm).

#![deny(unsafe_code)]

pub mod queue;

use std::cell::RefCell;

use guest::bindings::mqtt_device::runtime::types::{IterationError, IterationReport, Settings};
use guest::device::{Failure, Report};
use guest::wit::clock::HostClock;
use guest::wit::keyvalue::State;
use guest::wit::{config, log, mtls_socket};
use mqtt_core::{Client, Clock, Event, Flow, Level, MAX_OUTGOING};
use mqttbytes::v4::ConnectReturnCode;

use crate::queue::{Queue, Taken};

type Conn = guest::bindings::mqtt_device::runtime::mtls_socket::Connection;

/// The logic's settings, from `wasi:config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// A reading every this many milliseconds.
    pub interval_ms: u32,
    /// Where readings are published.
    pub topic: String,
    /// Readings kept at most.
    pub queue_max: u64,
}

impl TelemetryConfig {
    /// The settings `get` gives, with defaults for the client `client_id`.
    pub fn from(get: impl Fn(&str) -> Option<String>, client_id: &str) -> Self {
        let number = |key: &str, default: u64| {
            get(key)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        };
        Self {
            interval_ms: u32::try_from(number("interval-ms", 1000)).unwrap_or(u32::MAX),
            topic: get("topic").unwrap_or_else(|| format!("{client_id}/telemetry")),
            queue_max: number("queue-max", 1000).max(1),
        }
    }
}

/// What lives as long as the instance: the open session, and which
/// reading each packet id in flight carries.
#[derive(Default)]
struct Link {
    client: Option<Client<Conn, HostClock>>,
    in_flight: Vec<(u16, u64)>,
    /// Readings already sent on this connection (the next is after it).
    sent_up_to: u64,
    /// Readings acknowledged whose delete the state refused (the write
    /// rate, a full disk): deleted later, never sent again meanwhile.
    acked: Vec<u64>,
}

impl Link {
    /// Deletes what was acknowledged and is still queued; keeps what the
    /// state refuses again.
    fn forget_acked(&mut self, queue: &Queue<'_>) {
        self.acked.retain(|n| queue.remove(*n).is_err());
    }
}

thread_local! {
    static LINK: RefCell<Link> = RefCell::new(Link::default());
}

/// The component's export.
pub struct Telemetry;

impl guest::bindings::Guest for Telemetry {
    fn run_iteration(
        settings: Settings,
        iteration: u32,
    ) -> Result<IterationReport, IterationError> {
        let settings = guest::device::Settings::from(settings);
        let config = TelemetryConfig::from(config::get, &settings.client_id);
        LINK.with(|link| run(&settings, &config, iteration, &mut link.borrow_mut()))
            .map(Into::into)
            .map_err(Into::into)
    }
}

fn info(message: &str) {
    log::write(Level::Info, message);
}

fn warn(message: &str) {
    log::write(Level::Warn, message);
}

/// One iteration: a reading into the queue, then the queue towards the
/// broker for the rest of the interval.
fn run(
    s: &guest::device::Settings,
    config: &TelemetryConfig,
    iteration: u32,
    link: &mut Link,
) -> Result<Report, Failure> {
    let clock = HostClock;
    let started = clock.now_ms();
    guest::wit::iteration::declare_bound(
        u64::from(config.interval_ms)
            + 2 * u64::from(s.connect_timeout_ms)
            + u64::from(s.connack_timeout_ms)
            + 10_000,
    );
    let state = State::open().map_err(|e| {
        Failure::ProtocolViolation(format!("the device's state cannot be opened: {e}"))
    })?;
    let queue = Queue::new(&state, config.queue_max);
    let mut report = Report::default();
    match queue.take(started, &link.acked) {
        Ok(Taken { number, dropped }) => {
            info(&format!("Reading {number} taken (iteration {iteration})."));
            match dropped {
                Some(Ok(oldest)) => warn(&format!(
                    "The queue is full ({} readings): dropped reading {oldest}.",
                    config.queue_max
                )),
                Some(Err(e)) => warn(&format!(
                    "The queue is over its {} readings: the oldest could not be dropped ({e}).",
                    config.queue_max
                )),
                None => {}
            }
        }
        Err(e) => warn(&format!("Could not keep a reading: {e}.")),
    }
    let deadline = started + u64::from(config.interval_ms);
    link.forget_acked(&queue);
    if link.client.is_none() {
        match connect(s, &mut report) {
            Ok(client) => {
                link.client = Some(client);
                link.in_flight.clear();
                link.sent_up_to = 0;
            }
            Err(e) => {
                warn(&format!(
                    "The broker is unreachable ({e}); {} readings queued.",
                    queue.queued().unwrap_or(0)
                ));
                clock.sleep_ms(deadline.saturating_sub(clock.now_ms()) as u32);
                return Ok(report);
            }
        }
    }
    if let Err(e) = drain(config, &queue, link, deadline, &mut report) {
        warn(&format!(
            "Connection to the broker lost ({e}); the queue is kept."
        ));
        if let Some(mut client) = link.client.take() {
            client.close();
        }
        link.in_flight.clear();
    }
    clock.sleep_ms(deadline.saturating_sub(clock.now_ms()) as u32);
    Ok(report)
}

/// A TLS connection and an MQTT session (clean: the queue, not the
/// broker, remembers what is unacknowledged).
fn connect(
    s: &guest::device::Settings,
    report: &mut Report,
) -> Result<Client<Conn, HostClock>, String> {
    let conn = mtls_socket::connect(&s.broker_host, s.broker_port, s.connect_timeout_ms)
        .map_err(|e| e.to_string())?;
    report.connections += 1;
    let mut client = Client::new(conn, HostClock, s.timing());
    let mut connect = s.connect_packet();
    connect.clean_session = true;
    let ack = client
        .connect(&connect, s.connack_timeout_ms)
        .map_err(|e| format!("{e:?}"))?;
    if ack.code != ConnectReturnCode::Success {
        client.close();
        return Err(format!("the broker refused the connection: {:?}", ack.code));
    }
    info(&format!(
        "Connected to {}:{}.",
        s.broker_host, s.broker_port
    ));
    Ok(client)
}

/// Publishes queued readings in order, at most [`MAX_OUTGOING`] in flight,
/// and deletes each on its PUBACK, until `deadline`.
fn drain(
    config: &TelemetryConfig,
    queue: &Queue<'_>,
    link: &mut Link,
    deadline: u64,
    report: &mut Report,
) -> Result<(), String> {
    let clock = HostClock;
    let Link {
        client,
        in_flight,
        sent_up_to,
        acked: still_queued,
    } = link;
    let Some(client) = client.as_mut() else {
        return Ok(());
    };
    loop {
        if in_flight.len() < MAX_OUTGOING {
            let room = MAX_OUTGOING - in_flight.len();
            for (number, payload) in queue
                .after(*sent_up_to, room, still_queued)
                .map_err(|e| format!("the queue: {e}"))?
            {
                let pkid = client
                    .publish(&config.topic, &payload)
                    .map_err(|e| format!("{e:?}"))?;
                in_flight.push((pkid, number));
                *sent_up_to = number;
                report.published += 1;
            }
        }
        let now = clock.now_ms();
        if now >= deadline {
            return Ok(());
        }
        let mut acked = Vec::new();
        client
            .process_loop((deadline - now) as u32, &mut |event| match event {
                Event::PubAck(id) => {
                    acked.push(id);
                    Flow::Done
                }
                Event::StalePubAck(id) => {
                    warn(&format!(
                        "PUBACK for packet Id {id}, which is not outstanding; ignored."
                    ));
                    Flow::Continue
                }
                _ => Flow::Continue,
            })
            .map_err(|e| format!("{e:?}"))?;
        for id in acked {
            let Some(i) = in_flight.iter().position(|(p, _)| *p == id) else {
                continue;
            };
            let (_, number) = in_flight.remove(i);
            report.acknowledged += 1;
            match queue.remove(number) {
                Ok(()) => info(&format!("Reading {number} acknowledged.")),
                Err(e) => {
                    warn(&format!(
                        "Reading {number} acknowledged; its delete is retried ({e})."
                    ));
                    still_queued.push(number);
                }
            }
        }
        still_queued.retain(|n| queue.remove(*n).is_err());
    }
}

#[allow(unsafe_code, reason = "generated by wit-bindgen's export macro")]
mod export {
    use super::Telemetry;
    guest::bindings::export!(Telemetry with_types_in guest::bindings);
}
