//! The connect policy both hosts apply to a logic's `connect` calls, in
//! order: the allow list (`not-permitted`), the connections it holds
//! (`too-many-connections`), the rate (`rate-limited`); and the sizes of
//! `send` and `receive` (`message-too-large`). Each refusal costs the
//! guest [`REFUSAL_WAIT`] and counts; past the iteration's allowance the
//! guest is stopped as a connect storm.

use std::time::{Duration, Instant};

use crate::TransportError;
use crate::limits::SocketLimits;
use crate::limits::rate::TokenBucket;
use crate::outcome::LimitHit;

/// What a call the policy refuses costs the guest: the answer comes after
/// this wait, still fast next to a TLS handshake. A guest retrying without
/// pause makes about a thousand calls a second, and is stopped as a storm
/// once it passes its allowance of refusals.
pub const REFUSAL_WAIT: Duration = Duration::from_millis(1);

/// Most bytes one `receive` returns, whatever it asks for (a TLS record's
/// plaintext is at most 16 KiB).
pub const RECEIVE_CHUNK: u32 = 64 * 1024;

/// A refused call: the error the guest gets and the host's line about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The error answered.
    pub code: TransportError,
    /// The host's warning, naming the cause.
    pub line: String,
}

/// One guest's connect policy and its count of refusals in the iteration
/// in flight.
#[derive(Debug, Clone)]
pub struct ConnectGate {
    limits: SocketLimits,
    refusals: u32,
}

impl ConnectGate {
    /// A gate with these limits.
    pub fn new(limits: SocketLimits) -> Self {
        Self {
            limits,
            refusals: 0,
        }
    }

    /// Starts counting a new iteration's refusals.
    pub fn new_iteration(&mut self) {
        self.refusals = 0;
    }

    /// Whether a connect to `host:port` may go ahead at `now`: `permitted`
    /// says whether the endpoint is allowed, `open` how many connections
    /// the guest holds, `rate` is its connect rate (kept across restarts).
    /// `Ok(Err(..))` is a refusal to answer; `Err` stops the guest.
    pub fn admit(
        &mut self,
        (host, port): (&str, u16),
        permitted: bool,
        open: usize,
        rate: &mut TokenBucket,
        now: Instant,
    ) -> Result<Result<(), Refusal>, LimitHit> {
        let refusal = if !permitted {
            Refusal {
                code: TransportError::NotPermitted,
                line: format!(
                    "guest asked for {host}:{port}, which is not allowed; answered not-permitted"
                ),
            }
        } else if open >= self.limits.max_connections {
            Refusal {
                code: TransportError::TooManyConnections,
                line: format!(
                    "guest holds {open} connections already; answered too-many-connections"
                ),
            }
        } else if !rate.try_take(now) {
            Refusal {
                code: TransportError::RateLimited,
                line: format!(
                    "guest connects to {host}:{port} faster than allowed; answered rate-limited"
                ),
            }
        } else {
            return Ok(Ok(()));
        };
        self.refuse(refusal).map(Err)
    }

    /// Whether a `send` of `len` bytes fits.
    pub fn send(&mut self, len: usize) -> Result<Result<(), Refusal>, LimitHit> {
        if len <= self.limits.max_io_bytes as usize {
            return Ok(Ok(()));
        }
        self.refuse(Refusal {
            code: TransportError::MessageTooLarge,
            line: format!("guest sent {len} bytes at once; answered message-too-large"),
        })
        .map(Err)
    }

    /// Whether a `receive` of up to `max_len` bytes fits.
    pub fn receive(&mut self, max_len: u32) -> Result<Result<(), Refusal>, LimitHit> {
        if max_len <= self.limits.max_io_bytes {
            return Ok(Ok(()));
        }
        self.refuse(Refusal {
            code: TransportError::MessageTooLarge,
            line: format!(
                "guest asked to receive {max_len} bytes at once; answered message-too-large"
            ),
        })
        .map(Err)
    }

    /// Counts a refusal; past the iteration's allowance, the storm.
    fn refuse(&mut self, refusal: Refusal) -> Result<Refusal, LimitHit> {
        self.refusals += 1;
        if self.refusals > self.limits.max_refusals {
            return Err(LimitHit::ConnectStorm {
                refused: self.refusals,
                limit: self.limits.max_refusals,
            });
        }
        Ok(refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;

    #[test]
    fn refusals_in_order_then_a_storm() {
        let limits = Limits {
            connect_burst: 2,
            ..Limits::default()
        };
        let t0 = Instant::now();
        let mut rate = limits.connect_bucket(t0);
        let mut gate = ConnectGate::new(limits.sockets());
        let to = ("b", 1);
        let code = |r: Result<Result<(), Refusal>, LimitHit>| r.map(|a| a.err().map(|r| r.code));
        assert_eq!(
            code(gate.admit(to, false, 0, &mut rate, t0)),
            Ok(Some(TransportError::NotPermitted))
        );
        assert_eq!(
            code(gate.admit(to, true, 4, &mut rate, t0)),
            Ok(Some(TransportError::TooManyConnections))
        );
        assert_eq!(code(gate.admit(to, true, 0, &mut rate, t0)), Ok(None));
        assert_eq!(code(gate.admit(to, true, 0, &mut rate, t0)), Ok(None));
        assert_eq!(
            code(gate.admit(to, true, 0, &mut rate, t0)),
            Ok(Some(TransportError::RateLimited))
        );
        let later = t0 + Duration::from_millis(1000);
        assert_eq!(code(gate.admit(to, true, 0, &mut rate, later)), Ok(None));
        // 3 refusals so far; the allowance is 20.
        for _ in 0..17 {
            assert!(gate.admit(to, true, 0, &mut rate, later).unwrap().is_err());
        }
        assert_eq!(
            gate.admit(to, true, 0, &mut rate, later),
            Err(LimitHit::ConnectStorm {
                refused: 21,
                limit: 20
            })
        );
        gate.new_iteration();
        assert!(gate.send(1 << 20).unwrap().is_ok());
        assert_eq!(
            gate.send((1 << 20) + 1).unwrap().unwrap_err().code,
            TransportError::MessageTooLarge
        );
        assert_eq!(
            gate.receive((1 << 20) + 1).unwrap().unwrap_err().code,
            TransportError::MessageTooLarge
        );
    }
}
