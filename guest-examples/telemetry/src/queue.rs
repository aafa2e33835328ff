//! The offline queue in the device's state: one key per reading,
//! `telemetry/q/<number, 20 digits>` (so keys sort by number), and the
//! last number taken, `telemetry/last`, written in one batch with its
//! reading (this host makes a batch durable whole), so a crash never
//! leaves a number taken without its reading. Dropped readings are
//! counted in `telemetry/dropped`.

use guest::wit::keyvalue::State;

const PREFIX: &str = "telemetry/q/";
const LAST: &str = "telemetry/last";
const DROPPED: &str = "telemetry/dropped";

/// The key of reading `number`.
pub fn key(number: u64) -> String {
    format!("{PREFIX}{number:020}")
}

/// A reading just queued.
pub struct Taken {
    /// Its number, from 1.
    pub number: u64,
    /// The oldest reading, dropped to make room (or why it could not be).
    pub dropped: Option<Result<u64, String>>,
}

/// The queue of readings not yet acknowledged.
pub struct Queue<'a> {
    state: &'a State,
    max: u64,
}

impl<'a> Queue<'a> {
    /// The queue in `state`, keeping at most `max` readings.
    pub fn new(state: &'a State, max: u64) -> Self {
        Self { state, max }
    }

    fn numbers(&self) -> Result<Vec<u64>, String> {
        Ok(self
            .state
            .keys(PREFIX)?
            .iter()
            .filter_map(|k| k[PREFIX.len()..].parse().ok())
            .collect())
    }

    /// Readings queued.
    pub fn queued(&self) -> Result<usize, String> {
        self.numbers().map(|n| n.len())
    }

    /// Takes the next reading (taken at `now_ms`) into the queue, then,
    /// when that made it hold more than its maximum, drops the oldest one
    /// not yet `acknowledged` (an acknowledged one is deleted anyway).
    pub fn take(&self, now_ms: u64, acknowledged: &[u64]) -> Result<Taken, String> {
        let last = match self.state.get(LAST)? {
            Some(bytes) => {
                u64::from_le_bytes(bytes.try_into().map_err(|_| "telemetry/last is damaged")?)
            }
            None => 0,
        };
        let number = last + 1;
        let payload = format!(r#"{{"reading":{number},"taken_ms":{now_ms}}}"#);
        // The new reading first: a failure below loses nothing kept.
        self.state.set_many(&[
            (key(number), payload.into_bytes()),
            (LAST.to_string(), number.to_le_bytes().to_vec()),
        ])?;
        let queued: Vec<u64> = self
            .numbers()?
            .into_iter()
            .filter(|n| !acknowledged.contains(n))
            .collect();
        let mut dropped = None;
        if queued.len() as u64 > self.max
            && let Some(oldest) = queued.first()
        {
            let drop = self
                .state
                .delete(&key(*oldest))
                .and_then(|()| self.state.increment(DROPPED, 1))
                .map(|_| *oldest);
            dropped = Some(drop);
        }
        Ok(Taken { number, dropped })
    }

    /// Up to `n` queued readings numbered after `after`, oldest first,
    /// leaving out those `acknowledged` (still queued, to be deleted).
    pub fn after(
        &self,
        after: u64,
        n: usize,
        acknowledged: &[u64],
    ) -> Result<Vec<(u64, Vec<u8>)>, String> {
        let mut out = Vec::new();
        for number in self
            .numbers()?
            .into_iter()
            .filter(|m| *m > after && !acknowledged.contains(m))
            .take(n)
        {
            if let Some(payload) = self.state.get(&key(number))? {
                out.push((number, payload));
            }
        }
        Ok(out)
    }

    /// Removes reading `number` (acknowledged).
    pub fn remove(&self, number: u64) -> Result<(), String> {
        self.state.delete(&key(number))
    }
}
