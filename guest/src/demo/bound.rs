//! The longest a legal iteration of the demo can take with its settings:
//! what the demo declares to the host (`iteration.declare-bound`) as its
//! iteration's bound. Kept next to the workflow it models; a change there
//! that waits longer must change this too (the mock host's test of the
//! slow paths fails otherwise).

use mqtt_core::{Backoff, MAX_OUTGOING};

use crate::demo::MAX_RECONNECTS;
use crate::device::Settings;

/// The slowest legal iteration with `s`, milliseconds: every connect
/// attempt taking the whole time the WIT allows it (twice its timeout: a
/// wait for the host's turn, then the handshake) and failing, every backoff
/// window waited in full, the subscription rejected until its retries run
/// out, every process loop and idle wait run to its end, every send taking
/// its whole timeout, every idle wait's PINGRESP (when the wait reaches the
/// keep-alive) taking its whole timeout, and all that again for each
/// reconnect the demo allows after its Full-Jitter wait, plus a tenth for
/// scheduling. Retrying
/// forever, or connects without a timeout, have no bound: `u64::MAX` (the
/// host keeps its own maximum).
pub fn slowest_iteration_ms(s: &Settings) -> u64 {
    let retries = Backoff::new(s.backoff_base_ms, s.backoff_max_ms, s.backoff_max_attempts);
    let Some(backoff_ms) = retries.longest_total_ms() else {
        return u64::MAX;
    };
    if s.connect_timeout_ms == 0 {
        return u64::MAX;
    }
    let attempts = u64::from(s.backoff_max_attempts) + 1;
    let ms = u64::from;
    let connect = attempts * 2 * ms(s.connect_timeout_ms) + backoff_ms;
    let sends = attempts + 2 * ms(s.publish_count) + 4 + MAX_OUTGOING as u64;
    let session = ms(s.connack_timeout_ms)
        + attempts * ms(s.process_loop_ms)
        + backoff_ms
        + ms(s.publish_count) * (ms(s.process_loop_ms) + ms(s.publish_delay_ms))
        + ms(s.process_loop_ms)
        + sends * ms(s.transport_timeout_ms);
    // An idle wait that reaches the keep-alive sends a PINGREQ, and its
    // PINGRESP may come after the wait's end. The time since the last send
    // is the process loop and the wait, plus the calls between them: a
    // second of margin.
    let ping_ms = u64::from(s.keep_alive_secs) * 1000;
    let reach = ms(s.process_loop_ms) + ms(s.publish_delay_ms) + 1000;
    let pings = if ping_ms > 0 && ping_ms <= reach {
        ms(s.publish_count) * (ms(s.transport_timeout_ms) + ms(s.pingresp_timeout_ms))
    } else {
        0
    };
    let session = session + pings;
    let reconnects = s.backoff_max_attempts.min(MAX_RECONNECTS);
    // Each reconnect first waits its Full-Jitter window: at most the whole
    // backoff once more over all of them.
    let worst = (u64::from(reconnects) + 1)
        .saturating_mul(connect.saturating_add(session))
        .saturating_add(backoff_ms);
    worst.saturating_add(worst / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The original demo's settings.
    fn defaults() -> Settings {
        Settings {
            broker_host: "b".into(),
            broker_port: 8883,
            client_id: "d".into(),
            topic: "d/example/topic".into(),
            payload: "Hello World!".into(),
            publish_count: 5,
            publish_delay_ms: 2000,
            process_loop_ms: 2000,
            connack_timeout_ms: 1000,
            transport_timeout_ms: 200,
            connect_timeout_ms: 5000,
            keep_alive_secs: 60,
            pingresp_timeout_ms: 5000,
            backoff_base_ms: 500,
            backoff_max_ms: 5000,
            backoff_max_attempts: 5,
            clean_session: true,
            username: None,
            password: None,
        }
    }

    #[test]
    fn the_slowest_iteration_with_the_defaults() {
        let s = defaults();
        // Connect: 6 attempts of 5 s waiting for a turn and 5 s more, and
        // 12.5 s of backoff = 72.5 s.
        // Session: 1 s CONNACK + 6 loops of 2 s + 12.5 s backoff + 5 x (2 s
        // + 2 s) + 2 s + 35 sends of 0.2 s = 54.5 s. Six times (five
        // reconnects), 12.5 s of reconnect waits, plus a tenth.
        assert_eq!(
            slowest_iteration_ms(&s),
            (6 * (72_500 + 54_500) + 12_500) * 11 / 10
        );
        assert_eq!(slowest_iteration_ms(&s), 851_950);
        // A wait that reaches the keep-alive: each publish may also wait
        // out a send and a PINGRESP.
        let mut pinging = s.clone();
        pinging.keep_alive_secs = 5;
        assert_eq!(
            slowest_iteration_ms(&pinging) - slowest_iteration_ms(&s),
            6 * 5 * (200 + u64::from(s.pingresp_timeout_ms)) * 11 / 10
        );
        let mut forever = s.clone();
        forever.backoff_max_attempts = u32::MAX;
        assert_eq!(slowest_iteration_ms(&forever), u64::MAX);
        let mut unbounded = s.clone();
        unbounded.connect_timeout_ms = 0;
        assert_eq!(
            slowest_iteration_ms(&unbounded),
            u64::MAX,
            "0 = no connect timeout"
        );
    }
}
