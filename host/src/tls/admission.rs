//! Turns to connect (`--max-connecting`): at most N connects of a host in
//! flight at once, each holding its turn until the broker first answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use host_core::outcome::SocketFailure;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connects in flight at once per host, by default (`--max-connecting`):
/// below mosquitto's accept backlog (100), and enough to keep a broker busy
/// over a wide-area link (a turn there is about three round trips: TCP,
/// TLS 1.3 and CONNECT; at 100 ms each, 64 turns allow about 200 connects
/// a second).
pub const MAX_CONNECTING: usize = 64;

/// Longest a connect keeps its turn after the handshake while the broker
/// has not answered on the connection yet (see [`Turn`]).
pub const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// A connect's turn under `--max-connecting`. It lasts past the handshake,
/// until the broker first answers on the connection (for MQTT, its
/// CONNACK), the connection goes, or [`ANSWER_WAIT`] passes after the
/// handshake: the broker's work for a new connection does not end with the
/// handshake, and a fleet that hands it handshakes faster than it answers
/// CONNECTs only makes devices time out waiting for CONNACK and start over.
#[derive(Default)]
pub struct Turn {
    permit: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
    timer: Option<tokio::task::JoinHandle<()>>,
}

impl Turn {
    fn held(permit: OwnedSemaphorePermit) -> Self {
        Self {
            permit: Arc::new(Mutex::new(Some(permit))),
            timer: None,
        }
    }

    /// Ends the turn on its own after `wait` (on the tokio runtime).
    pub(super) fn expire_after(&mut self, wait: Duration) {
        if self.timer.is_some() || !self.is_held() {
            return;
        }
        let expiring = self.permit.clone();
        self.timer = Some(tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            drop(expiring.lock().unwrap_or_else(|p| p.into_inner()).take());
        }));
    }

    fn is_held(&self) -> bool {
        self.permit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Ends the turn (the broker answered, or the connection went).
    pub fn end(&mut self) {
        drop(self.permit.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.end();
    }
}

/// The turns of one host, shared by every clone of its TLS client.
#[derive(Clone)]
pub(super) struct Admission {
    turns: Arc<Semaphore>,
    /// How many there are, for messages.
    limit: usize,
}

impl Admission {
    /// `limit` turns; `None` for 0 (no limit).
    pub(super) fn new(limit: usize) -> Option<Self> {
        (limit > 0).then(|| Self {
            turns: Arc::new(Semaphore::new(limit)),
            limit,
        })
    }

    /// Waits for a turn to connect to `host`:`port`, in order, at most
    /// `timeout` (`None` = as long as it takes). The turn has no expiry
    /// until [`Turn::expire_after`].
    pub(super) async fn turn(
        &self,
        host: &str,
        port: u16,
        timeout: Option<Duration>,
    ) -> Result<Turn, SocketFailure> {
        let wait = self.turns.clone().acquire_owned();
        let permit = match timeout {
            Some(limit) => tokio::time::timeout(limit, wait).await.map_err(|_| {
                SocketFailure::no_turn(format!(
                    "no turn to connect to {host}:{port} within {} ms: this host's \
                     other devices held all {} connect turns",
                    limit.as_millis(),
                    self.limit
                ))
            })?,
            None => wait.await,
        };
        // The semaphore is never closed, so there is always a permit.
        Ok(permit.map(Turn::held).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use host_core::TransportError;

    use super::*;

    /// On real time, with a short answer wait: the host's build keeps
    /// tokio without its test clock, so tests share its compiled code.
    #[tokio::test]
    async fn a_turn_lasts_until_ended_or_the_answer_wait_passes() {
        let wait = Duration::from_millis(300);
        let turns = Arc::new(Semaphore::new(1));
        let mut answered = Turn::held(turns.clone().try_acquire_owned().unwrap());
        answered.expire_after(wait);
        assert!(answered.is_held() && turns.available_permits() == 0);
        answered.end();
        assert!(!answered.is_held() && turns.available_permits() == 1);

        let mut handshaking = Turn::held(turns.clone().try_acquire_owned().unwrap());
        tokio::time::sleep(wait * 2).await;
        assert!(
            handshaking.is_held(),
            "no expiry until the handshake has ended"
        );
        handshaking.end();

        let mut silent = Turn::held(turns.clone().try_acquire_owned().unwrap());
        silent.expire_after(wait);
        tokio::time::sleep(wait / 3).await;
        assert!(silent.is_held(), "held while the broker may still answer");
        tokio::time::sleep(wait * 2).await;
        assert!(!silent.is_held() && turns.available_permits() == 1);

        let dropped = Turn::held(turns.clone().try_acquire_owned().unwrap());
        drop(dropped);
        assert_eq!(
            turns.available_permits(),
            1,
            "a closed connection's turn ends"
        );
    }

    #[tokio::test]
    async fn a_turn_comes_in_order_or_times_out_as_no_turn() {
        let admission = Admission::new(1).unwrap();
        assert!(Admission::new(0).is_none(), "0 = no limit");
        let first = admission.turn("b", 1, None).await.unwrap();
        let err = admission
            .turn("b", 1, Some(Duration::from_millis(10)))
            .await
            .err()
            .unwrap();
        assert_eq!(err.error, TransportError::TimedOut);
        assert!(err.no_turn);
        assert!(err.detail.contains("all 1 connect turns"), "{}", err.detail);
        drop(first);
        assert!(admission.turn("b", 1, None).await.unwrap().is_held());
    }
}
