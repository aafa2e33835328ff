"""A telemetry device logic in Python, for the mqtt-device:runtime `device`
world (the same world as the Rust demo).

Each iteration connects to the broker through the host's `mtls-socket`
(retrying with Full-Jitter backoff, as the demo does), sends MQTT CONNECT,
publishes one JSON reading with QoS 1 to the settings' topic, waits for its
PUBACK, and disconnects. Its generator is seeded once from the host's
`entropy`; time and waits go through the world's `clock`. It holds no key and
sees no certificate: the host does TLS.

Its own settings come from `wasi:config` (`host run --logic-config KEY=VALUE`):
`topic` (default: the settings' topic) and `interval-ms` (an iteration lasts
at least this long, from its start; default 0: the host's iteration delay
alone paces it).

Built into a component with componentize-py by scripts/build-python.
"""

import json
import random

import wit_world
from componentize_py_types import Err
from wit_world.imports import clock, entropy, log, mtls_socket, types
from wit_world.imports import wasi_config_store as config

ErrorCode = mtls_socket.ErrorCode

# Errors that retrying cannot help: the demo does not retry them either.
PERMANENT = {
    ErrorCode.NOT_PERMITTED,
    ErrorCode.SERVER_CERTIFICATE_UNKNOWN_ISSUER,
    ErrorCode.SERVER_CERTIFICATE_EXPIRED,
    ErrorCode.SERVER_CERTIFICATE_NAME_MISMATCH,
    ErrorCode.SERVER_CERTIFICATE_INVALID,
    ErrorCode.CLIENT_CERTIFICATE_REJECTED,
    ErrorCode.CLIENT_CERTIFICATE_REQUIRED,
    ErrorCode.PROTOCOL_VERSION_UNSUPPORTED,
}

REFUSALS = {
    1: types.ConnackRefusal.UNACCEPTABLE_PROTOCOL_VERSION,
    2: types.ConnackRefusal.IDENTIFIER_REJECTED,
    3: types.ConnackRefusal.SERVER_UNAVAILABLE,
    4: types.ConnackRefusal.BAD_USER_NAME_OR_PASSWORD,
    5: types.ConnackRefusal.NOT_AUTHORIZED,
}

PACKET_ID = 1

# Seeded on the first iteration (not at build time, when componentize-py
# runs this module once to snapshot it).
_rng = None


def info(message):
    log.write(log.Level.INFO, message)


def warn(message):
    log.write(log.Level.WARN, message)


def fail(error):
    """Ends the iteration with a WIT `iteration-error`."""
    log.write(log.Level.ERROR, f"Telemetry iteration failed: {error}")
    raise Err(error)


class ProtocolViolation(Exception):
    """The broker sent bytes that are not MQTT 3.1.1."""


def utf8(text):
    data = text.encode("utf-8")
    return len(data).to_bytes(2, "big") + data


def remaining_length(n):
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def packet(first_byte, body):
    return bytes([first_byte]) + remaining_length(len(body)) + body


def connect_packet(settings):
    flags = 0x02 if settings.clean_session else 0x00
    tail = utf8(settings.client_id)
    if settings.username is not None:
        flags |= 0x80
        tail += utf8(settings.username)
    # MQTT 3.1.1 allows a password only after a user name.
    if settings.username is not None and settings.password is not None:
        flags |= 0x40
        tail += utf8(settings.password)
    body = utf8("MQTT") + bytes([4, flags]) + settings.keep_alive_secs.to_bytes(2, "big") + tail
    return packet(0x10, body)


def publish_packet(topic, payload):
    body = utf8(topic) + PACKET_ID.to_bytes(2, "big") + payload
    return packet(0x32, body)


class Session:
    """One MQTT connection over the host's mTLS socket."""

    def __init__(self, conn, settings):
        self.conn = conn
        self.settings = settings
        self.buffer = bytearray()

    def send(self, data):
        try:
            self.conn.send(data, self.settings.transport_timeout_ms)
        except Err as e:
            self.close()
            fail(types.IterationError_Transport(e.value))

    def next_packet(self, deadline_ms):
        """The next (type, flags, body) before the deadline, or None."""
        while True:
            parsed = self.parse()
            if parsed is not None:
                return parsed
            left = deadline_ms - clock.now_ms()
            if left <= 0:
                return None
            try:
                data = self.conn.receive(4096, min(left, 1000))
            except Err as e:
                self.close()
                fail(types.IterationError_Transport(e.value))
            self.buffer += data

    def parse(self):
        if len(self.buffer) < 2:
            return None
        kind, flags = self.buffer[0] >> 4, self.buffer[0] & 0x0F
        if kind in (0, 15):
            raise ProtocolViolation(f"packet type {kind} is reserved")
        length, shift, i = 0, 0, 1
        while True:
            if i >= len(self.buffer):
                return None
            if i > 4:
                raise ProtocolViolation("remaining length over four bytes")
            byte = self.buffer[i]
            length |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if not byte & 0x80:
                break
        if len(self.buffer) < i + length:
            return None
        body = bytes(self.buffer[i:i + length])
        del self.buffer[:i + length]
        return kind, flags, body

    def close(self):
        self.conn.close()


def backoff_delay(attempt, settings):
    window = min(settings.backoff_max_ms, settings.backoff_base_ms * 2 ** attempt)
    return _rng.randint(0, window)


def open_connection(settings):
    """Connects, retrying transient failures with Full-Jitter backoff."""
    attempt = 0
    while True:
        info(f"Creating a TLS connection to {settings.broker_host}:{settings.broker_port}.")
        try:
            return mtls_socket.connect(
                settings.broker_host, settings.broker_port, settings.connect_timeout_ms
            )
        except Err as e:
            code = e.value
            if code in PERMANENT:
                fail(types.IterationError_TransportPermanent(code))
            if attempt >= settings.backoff_max_attempts:
                fail(types.IterationError_ConnectRetriesExhausted(code))
            delay = backoff_delay(attempt, settings)
            warn(f"Connection failed ({code.name.lower().replace('_', '-')}); retrying in {delay} ms.")
            clock.sleep_ms(delay)
            attempt += 1


def reading(settings, iteration):
    return {
        "device": settings.client_id,
        "iteration": iteration,
        "temperature_c": round(21.0 + _rng.uniform(-2.0, 2.0), 2),
        "humidity_pct": round(45.0 + _rng.uniform(-5.0, 5.0), 1),
        "uptime_ms": clock.now_ms(),
    }


def setting(key):
    """The logic's own setting `key`, or None."""
    try:
        return config.get(key)
    except Err:
        return None


def telemetry(settings, iteration):
    global _rng
    if _rng is None:
        _rng = random.Random(int.from_bytes(entropy.get_random_bytes(32), "big"))
    started = clock.now_ms()
    settings.topic = setting("topic") or settings.topic
    try:
        interval_ms = max(0, int(setting("interval-ms") or 0))
    except ValueError:
        fail(types.IterationError_InvalidSettings("interval-ms must be a whole number of milliseconds"))
    session = Session(open_connection(settings), settings)
    try:
        report = converse(session, settings, iteration)
    except ProtocolViolation as e:
        session.close()
        fail(types.IterationError_ProtocolViolation(str(e)))
    left = started + interval_ms - clock.now_ms()
    if left > 0:
        clock.sleep_ms(left)
    return report


def converse(session, settings, iteration):
    """CONNECT, one PUBLISH and its PUBACK, DISCONNECT."""
    session.send(connect_packet(settings))
    answer = session.next_packet(clock.now_ms() + settings.connack_timeout_ms)
    if answer is None:
        session.close()
        fail(types.IterationError_TimedOut("CONNACK"))
    kind, _, body = answer
    if kind != 2 or len(body) != 2:
        raise ProtocolViolation(f"expected CONNACK, got packet type {kind}")
    if body[1] != 0:
        session.close()
        refusal = REFUSALS.get(body[1])
        if refusal is None:
            raise ProtocolViolation(f"CONNACK return code {body[1]}")
        fail(types.IterationError_ConnackRefused(refusal))
    info(f"An MQTT connection is established with {settings.broker_host}.")

    payload = json.dumps(reading(settings, iteration), separators=(",", ":")).encode()
    sent_us = clock.now_us()
    session.send(publish_packet(settings.topic, payload))
    info(f"Published reading {iteration} to {settings.topic}: {payload.decode()}")
    deadline = clock.now_ms() + settings.process_loop_ms
    round_trip = None
    echoes = 0
    while round_trip is None:
        answer = session.next_packet(deadline)
        if answer is None:
            session.close()
            fail(types.IterationError_TimedOut(f"PUBACK for packet id {PACKET_ID}"))
        kind, flags, body = answer
        if kind == 4 and len(body) == 2 and int.from_bytes(body, "big") == PACKET_ID:
            round_trip = clock.now_us() - sent_us
        elif kind == 3:
            # A message from the broker (if the topic is subscribed to
            # elsewhere in the session): acknowledge QoS 1.
            echoes += 1
            if (flags >> 1) & 0x03 == 1:
                topic_len = int.from_bytes(body[:2], "big") if len(body) >= 2 else len(body)
                pid = body[2 + topic_len:4 + topic_len]
                if len(pid) != 2:
                    raise ProtocolViolation("PUBLISH too short for its packet id")
                session.send(packet(0x40, pid))
    info(f"PUBACK received for packet Id {PACKET_ID} after {round_trip} us.")
    session.send(packet(0xE0, b""))
    session.close()
    info("Disconnected. Telemetry iteration completed.")
    return types.IterationReport(
        published=1,
        acknowledged=1,
        echoes=echoes,
        connections=1,
        round_trips_us=[min(round_trip, 2**32 - 1)],
    )


class WitWorld(wit_world.WitWorld):
    def run_iteration(self, settings, iteration):
        return telemetry(settings, iteration)
