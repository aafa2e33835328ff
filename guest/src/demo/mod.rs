//! The coreMQTT mutual-auth demo workflow, one iteration: TLS connect with
//! backoff, CONNECT, SUBSCRIBE with retries, QoS 1 publish loop with the
//! echo, UNSUBSCRIBE, DISCONNECT. Log lines follow the original's wording.
//! It declares its slowest legal iteration ([`bound`]) to the host first.

pub mod bound;

use mqttbytes::QoS;
use mqttbytes::v4::{ConnectReturnCode, SubscribeReasonCode};

use mqtt_core::{
    Backoff, Client, ClientError, Clock, Event, Flow, Level, Platform, TransportError,
};

use crate::device::{ConnackRefusal, Failure, Report, Settings};

/// Runs one demo iteration.
pub fn run_iteration<P: Platform>(
    platform: &mut P,
    settings: &Settings,
    iteration: u32,
) -> Result<Report, Failure> {
    platform.declare_iteration_bound(bound::slowest_iteration_ms(settings));
    let mut demo = Demo {
        settings,
        iteration,
        report: Report::default(),
        platform,
    };
    demo.run()
}

/// Reconnects allowed within one iteration at most (also bounded by the
/// backoff's maximum attempts).
pub const MAX_RECONNECTS: u32 = 8;

/// How far an iteration got, kept across reconnects.
#[derive(Debug, Default)]
struct Progress {
    /// Publishes sent (each is then acknowledged, or resent after a reconnect).
    publishes_sent: u32,
}

struct Demo<'a, P: Platform> {
    /// Which iteration this is, from 1.
    iteration: u32,
    platform: &'a mut P,
    settings: &'a Settings,
    report: Report,
}

impl<P: Platform> Demo<'_, P> {
    fn info(&self, message: &str) {
        self.platform.log(Level::Info, message);
    }

    fn backoff(&self) -> Backoff {
        let s = self.settings;
        Backoff::new(s.backoff_base_ms, s.backoff_max_ms, s.backoff_max_attempts)
    }

    fn run(&mut self) -> Result<Report, Failure> {
        let conn = self.open_with_backoff()?;
        let mut client = Client::new(conn, self.platform.clock(), self.settings.timing());
        if !self.settings.clean_session
            && let Some(store) = self.platform.session_store()
        {
            let ids = client.keep_session_in(store);
            if !ids.is_empty() {
                self.info(&format!(
                    "Restored unacknowledged publishes {ids:?} of the persistent session from the device's state."
                ));
            }
        }
        let mut progress = Progress::default();
        // A connection lost after set-up is reopened after a Full-Jitter
        // wait (so a fleet its broker dropped does not reconnect in lock
        // step) and the iteration goes on where it stopped, a bounded
        // number of times.
        let mut reconnects_left = self.settings.backoff_max_attempts.min(MAX_RECONNECTS);
        let mut reconnect = self.backoff();
        loop {
            match self.session(&mut client, &mut progress) {
                Err(Failure::Transport(code)) if reconnects_left > 0 => {
                    reconnects_left -= 1;
                    client.close();
                    let random = self.platform.random_u32();
                    let Some(delay_ms) = reconnect.next_delay_ms(random) else {
                        return Err(Failure::Transport(code));
                    };
                    self.platform.log(
                        Level::Warn,
                        &format!(
                            "Connection to the broker lost ({code}). Reconnecting with backoff and jitter: {delay_ms} ms."
                        ),
                    );
                    self.platform.clock().sleep_ms(delay_ms);
                    let conn = self.open_with_backoff()?;
                    client.replace_transport(conn);
                }
                Err(e) => {
                    client.close();
                    return Err(e);
                }
                Ok(()) => break,
            }
        }
        self.info("Demo completed successfully.");
        Ok(std::mem::take(&mut self.report))
    }

    /// Steps 2 to 6 on an open connection, resuming after `progress`.
    fn session(
        &mut self,
        client: &mut Client<P::Conn, P::Clock>,
        progress: &mut Progress,
    ) -> Result<(), Failure> {
        let s = self.settings;
        self.mqtt_connect(client)?;
        self.subscribe_with_backoff(client)?;
        while progress.publishes_sent < s.publish_count {
            self.publish_and_receive_echo(client, progress)?;
            self.info("Keeping Connection Idle...");
            self.idle(client, s.publish_delay_ms)?;
        }
        self.unsubscribe(client)?;
        self.info(&format!(
            "Disconnecting the MQTT connection with {}.",
            s.broker_host
        ));
        client.disconnect();
        let unacked = client.outstanding();
        if !unacked.is_empty() {
            return Err(Failure::TimedOut(format!(
                "PUBACK for packet ids {unacked:?} (QoS 1 publishes not acknowledged by the broker)"
            )));
        }
        Ok(())
    }

    /// Step 1: TLS connection, retried with Full-Jitter backoff.
    fn open_with_backoff(&mut self) -> Result<P::Conn, Failure> {
        let s = self.settings;
        let mut backoff = self.backoff();
        loop {
            self.info(&format!(
                "Creating a TLS connection to {}:{}.",
                s.broker_host, s.broker_port
            ));
            match self
                .platform
                .connect(&s.broker_host, s.broker_port, s.connect_timeout_ms)
            {
                Ok(conn) => {
                    self.report.connections += 1;
                    return Ok(conn);
                }
                Err(code) if code.is_permanent() => {
                    self.platform.log(
                        Level::Error,
                        &format!(
                            "Connection to the broker failed permanently: {code}. Not retrying."
                        ),
                    );
                    return Err(Failure::TransportPermanent(code));
                }
                Err(code) => {
                    let random = self.platform.random_u32();
                    match backoff.next_delay_ms(random) {
                        Some(delay_ms) => {
                            self.platform.log(
                                Level::Warn,
                                &format!(
                                    "Connection to the broker failed ({code}). Retrying connection with backoff and jitter: {delay_ms} ms."
                                ),
                            );
                            self.platform.clock().sleep_ms(delay_ms);
                        }
                        None => {
                            self.platform.log(
                                Level::Error,
                                "Connection to the broker failed, all attempts exhausted.",
                            );
                            return Err(Failure::ConnectRetriesExhausted(code));
                        }
                    }
                }
            }
        }
    }

    /// Step 2: MQTT CONNECT, clean session, keep-alive; CONNACK must accept.
    fn mqtt_connect(&mut self, client: &mut Client<P::Conn, P::Clock>) -> Result<(), Failure> {
        let s = self.settings;
        self.info(&format!(
            "Creating an MQTT connection to {}.",
            s.broker_host
        ));
        let ack = client
            .connect(&s.connect_packet(), s.connack_timeout_ms)
            .map_err(iteration_error)?;
        let refusal = match ack.code {
            ConnectReturnCode::Success => None,
            ConnectReturnCode::RefusedProtocolVersion => {
                Some(ConnackRefusal::UnacceptableProtocolVersion)
            }
            ConnectReturnCode::BadClientId => Some(ConnackRefusal::IdentifierRejected),
            ConnectReturnCode::ServiceUnavailable => Some(ConnackRefusal::ServerUnavailable),
            ConnectReturnCode::BadUserNamePassword => Some(ConnackRefusal::BadUserNameOrPassword),
            ConnectReturnCode::NotAuthorized => Some(ConnackRefusal::NotAuthorized),
        };
        if let Some(refusal) = refusal {
            self.platform.log(
                Level::Error,
                &format!("The broker refused the MQTT connection: {refusal:?}."),
            );
            return Err(Failure::ConnackRefused(refusal));
        }
        if ack.session_present && !s.clean_session {
            let ids = client.resend_outstanding().map_err(iteration_error)?;
            if !ids.is_empty() {
                self.info(&format!(
                    "Session resumed: resent unacknowledged publishes {ids:?} with DUP set."
                ));
            }
        } else {
            // The broker kept no session: the old packet ids mean nothing to
            // it, so unacknowledged messages go out again as new publishes.
            let forgotten = client.forget_outstanding();
            for publish in &forgotten {
                let pkid = client.republish(publish).map_err(iteration_error)?;
                self.platform.log(
                    Level::Warn,
                    &format!(
                        "Republished the message unacknowledged as packet Id {} as packet Id {pkid} on the new session.",
                        publish.pkid
                    ),
                );
            }
        }
        self.info(&format!(
            "An MQTT connection is established with {}.",
            s.broker_host
        ));
        Ok(())
    }

    /// Step 3: SUBSCRIBE, resubscribing rejected filters with backoff.
    fn subscribe_with_backoff(
        &mut self,
        client: &mut Client<P::Conn, P::Clock>,
    ) -> Result<(), Failure> {
        let s = self.settings;
        let topic = s.topic.clone();
        let mut backoff = self.backoff();
        loop {
            self.info(&format!("Attempt to subscribe to the MQTT topic {topic}."));
            let pkid = client
                .subscribe(&[(topic.clone(), QoS::AtLeastOnce)])
                .map_err(iteration_error)?;
            self.info(&format!("SUBSCRIBE sent for topic {topic} to broker."));
            let mut codes = None;
            self.await_answer(client, |event| match event {
                Event::SubAck(ack) if ack.pkid == pkid => {
                    codes = Some(ack.return_codes.clone());
                    true
                }
                _ => false,
            })?;
            let Some(codes) = codes else {
                return Err(Failure::TimedOut(format!(
                    "SUBACK for packet id {pkid} within {} ms",
                    s.process_loop_ms
                )));
            };
            match codes.first() {
                Some(SubscribeReasonCode::Success(qos)) => {
                    self.info(&format!(
                        "Subscribed to the topic {topic} with maximum QoS {}.",
                        *qos as u8
                    ));
                    return Ok(());
                }
                _ => {
                    let random = self.platform.random_u32();
                    match backoff.next_delay_ms(random) {
                        Some(delay_ms) => {
                            self.platform.log(
                                Level::Warn,
                                &format!(
                                    "Server rejected subscription request. Attempting to re-subscribe to topic {topic} in {delay_ms} ms."
                                ),
                            );
                            self.platform.clock().sleep_ms(delay_ms);
                        }
                        None => {
                            self.platform.log(
                                Level::Error,
                                &format!(
                                    "Server rejected subscription request. All retry attempts have exhausted. Topic={topic}"
                                ),
                            );
                            return Err(Failure::SubscribeRetriesExhausted(topic));
                        }
                    }
                }
            }
        }
    }

    /// "Keeping Connection Idle...": waits `ms` without reading, except to
    /// keep the connection alive when the wait is longer than the
    /// keep-alive ([`Client::idle`]); acknowledgements and echoes that come
    /// in with a PINGRESP are logged and counted.
    fn idle(&mut self, client: &mut Client<P::Conn, P::Clock>, ms: u32) -> Result<(), Failure> {
        let mut tally = Tally::default();
        let platform = &*self.platform;
        let topic = self.settings.topic.clone();
        let waited = client.idle(ms, &mut |event| {
            tally.note(&event, &topic);
            log_event(platform, &topic, event);
            Flow::Continue
        });
        tally.add_to(&mut self.report);
        waited.map_err(iteration_error)
    }

    /// Step 4, once: PUBLISH at QoS 1, then process until its PUBACK and the
    /// echo have arrived or the process loop's time is up.
    fn publish_and_receive_echo(
        &mut self,
        client: &mut Client<P::Conn, P::Clock>,
        progress: &mut Progress,
    ) -> Result<(), Failure> {
        let s = self.settings;
        self.info(&format!("Publish to the MQTT topic {}.", s.topic));
        let payload = expand_payload(&s.payload, self.iteration, progress.publishes_sent + 1);
        let clock = self.platform.clock();
        let sent_us = clock.now_us();
        let pkid = client
            .publish(&s.topic, payload.as_bytes())
            .map_err(iteration_error)?;
        progress.publishes_sent += 1;
        self.report.published += 1;
        self.info("Attempt to receive publish message from broker.");
        let (mut acked, mut echoed) = (false, false);
        let mut tally = Tally::default();
        let platform = &*self.platform;
        let topic = s.topic.clone();
        let waited = client.process_loop(s.process_loop_ms, &mut |event| {
            match tally.note(&event, &topic) {
                Some(Counted::Ack(id)) => acked |= id == pkid,
                Some(Counted::Echo) => echoed = true,
                None => {}
            }
            log_event(platform, &topic, event);
            if acked && echoed {
                Flow::Done
            } else {
                Flow::Continue
            }
        });
        // Counted even when the connection is lost meanwhile.
        tally.add_to(&mut self.report);
        waited.map_err(iteration_error)?;
        if acked && echoed {
            let rtt = clock.now_us().saturating_sub(sent_us);
            self.report
                .round_trips_us
                .push(u32::try_from(rtt).unwrap_or(u32::MAX));
        }
        if !acked {
            self.platform.log(
                Level::Warn,
                &format!(
                    "PUBACK for packet Id {pkid} not received within {} ms.",
                    s.process_loop_ms
                ),
            );
        }
        Ok(())
    }

    /// Processes packets until `wanted` takes one (answers true) or the
    /// process loop's time is up; returns whether it did. Everything else
    /// is logged and counted: after a reconnect, the acknowledgement and
    /// the echo of what was resent may come first.
    fn await_answer(
        &mut self,
        client: &mut Client<P::Conn, P::Clock>,
        mut wanted: impl FnMut(&Event) -> bool,
    ) -> Result<bool, Failure> {
        let topic = self.settings.topic.clone();
        let mut found = false;
        let mut tally = Tally::default();
        let platform = &*self.platform;
        let waited = client.process_loop(self.settings.process_loop_ms, &mut |event| {
            if wanted(&event) {
                found = true;
                return Flow::Done;
            }
            tally.note(&event, &topic);
            log_event(platform, &topic, event);
            Flow::Continue
        });
        tally.add_to(&mut self.report);
        waited.map_err(iteration_error)?;
        Ok(found)
    }

    /// Step 5: UNSUBSCRIBE and wait for UNSUBACK.
    fn unsubscribe(&mut self, client: &mut Client<P::Conn, P::Clock>) -> Result<(), Failure> {
        let s = self.settings;
        let topic = s.topic.clone();
        self.info(&format!("Unsubscribe from the MQTT topic {topic}."));
        let pkid = client
            .unsubscribe(std::slice::from_ref(&topic))
            .map_err(iteration_error)?;
        let done = self.await_answer(
            client,
            |event| matches!(event, Event::UnsubAck(id) if *id == pkid),
        )?;
        if !done {
            return Err(Failure::TimedOut(format!(
                "UNSUBACK for packet id {pkid} within {} ms",
                s.process_loop_ms
            )));
        }
        self.info(&format!("Unsubscribed from the topic {topic}."));
        Ok(())
    }
}

/// The payload of one publish: `{iteration}` and `{publish}` (1-based
/// within the iteration) in the template are replaced by their numbers, so a
/// subscriber can tell every message apart.
pub fn expand_payload(template: &str, iteration: u32, publish: u32) -> String {
    // By hand on bytes: `str::replace` and `str` patterns bring a substring
    // searcher that costs the component about 12 KB.
    use std::fmt::Write;
    let mut out = String::with_capacity(template.len() + 8);
    let mut rest = template;
    while let Some(at) = rest.bytes().position(|b| b == b'{') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        rest = if tail.as_bytes().starts_with(b"{iteration}") {
            let _ = write!(out, "{iteration}");
            &tail["{iteration}".len()..]
        } else if tail.as_bytes().starts_with(b"{publish}") {
            let _ = write!(out, "{publish}");
            &tail["{publish}".len()..]
        } else {
            out.push('{');
            &tail[1..]
        };
    }
    out.push_str(rest);
    out
}

/// The event callback of the original (`prvEventCallback`): logs each
/// incoming packet the way the demo does.
/// What a wait on the connection counted: PUBACKs and echoes on the
/// demo's topic, for the iteration's report.
#[derive(Default)]
struct Tally {
    acks: u32,
    echoes: u32,
}

/// What [`Tally::note`] counted one event as.
enum Counted {
    /// A PUBACK, with its packet id.
    Ack(u16),
    /// A PUBLISH on the demo's topic.
    Echo,
}

impl Tally {
    fn note(&mut self, event: &Event, topic: &str) -> Option<Counted> {
        match event {
            Event::PubAck(id) => {
                self.acks += 1;
                Some(Counted::Ack(*id))
            }
            Event::Publish(p) if p.topic == topic => {
                self.echoes += 1;
                Some(Counted::Echo)
            }
            _ => None,
        }
    }

    fn add_to(self, report: &mut Report) {
        report.acknowledged += self.acks;
        report.echoes += self.echoes;
    }
}

fn log_event<P: Platform>(platform: &P, topic: &str, event: Event) {
    match event {
        Event::PubAck(id) => {
            platform.log(Level::Info, &format!("PUBACK received for packet Id {id}."))
        }
        Event::StalePubAck(id) => platform.log(
            Level::Warn,
            &format!("PUBACK received for packet Id {id}, which is not outstanding; ignored."),
        ),
        Event::Publish(p) => {
            platform.log(Level::Info, &format!("Incoming QoS : {}", p.qos as u8));
            if p.topic == topic {
                platform.log(
                    Level::Info,
                    &format!(
                        "Incoming Publish Topic Name: {} matches subscribed topic.",
                        p.topic
                    ),
                );
            } else {
                platform.log(
                    Level::Info,
                    &format!(
                        "Incoming Publish Topic Name: {} does not match subscribed topic.",
                        p.topic
                    ),
                );
            }
            platform.log(
                Level::Info,
                &format!(
                    "Incoming Publish Message : {}",
                    String::from_utf8_lossy(&p.payload)
                ),
            );
        }
        Event::SubAck(ack) => platform.log(
            Level::Warn,
            &format!(
                "SUBACK for packet Id {} that is not awaited; ignored.",
                ack.pkid
            ),
        ),
        Event::UnsubAck(id) => platform.log(
            Level::Warn,
            &format!("UNSUBACK for packet Id {id} that is not awaited; ignored."),
        ),
        Event::Unexpected(name) => platform.log(
            Level::Warn,
            &format!("Unexpected packet {name} from the broker; ignored."),
        ),
    }
}

/// Maps a client failure to the iteration's error.
fn iteration_error(e: ClientError) -> Failure {
    match e {
        ClientError::Transport(code) if code.is_permanent() => Failure::TransportPermanent(code),
        ClientError::Transport(code) => Failure::Transport(code),
        ClientError::Encode(what) => Failure::InvalidSettings(what),
        ClientError::Protocol(what) => Failure::ProtocolViolation(what),
        ClientError::Timeout(what) => Failure::TimedOut(what.to_string()),
        ClientError::KeepAliveTimeout => {
            // MQTT 3.1.1 3.1.2.10: no PINGRESP in time means the connection
            // is dead; close it and reconnect like any lost connection.
            Failure::Transport(TransportError::TimedOut)
        }
        ClientError::OutgoingFull => Failure::ProtocolViolation(
            "all outgoing publish records are in use: the broker is not acknowledging".to_string(),
        ),
        // The persistent session could not be kept: not sent, so not lost.
        ClientError::NotKept(why) => Failure::InvalidSettings(format!(
            "the device's state did not keep the publish, so it was not sent: {why}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_placeholders_are_numbered() {
        assert_eq!(expand_payload("Hello World!", 3, 2), "Hello World!");
        assert_eq!(expand_payload("m-{iteration}-{publish}", 3, 2), "m-3-2");
        assert_eq!(expand_payload("{x}{publish}{", 1, 9), "{x}9{");
    }
}
