//! Lamport clocks: one per context, ordering events causally across contexts.
//!
//! A context's clock stays below [`LAMPORT_LIMIT`] (2^63) except through 2^63 local appends:
//! a received clock (from a request or a loaded snapshot) may raise it at most to
//! `LAMPORT_LIMIT − 1`, so no single request can push a context to a clock it cannot advance
//! from.

/// Clocks carried in from outside (a request's `received_lamport_clock`, a loaded snapshot's
/// entries) must keep the context's clock below this: 2^63. The other 2^63 values are
/// headroom that only local appends, one tick each, can use.
pub const LAMPORT_LIMIT: u64 = 1 << 63;

/// Largest `received_lamport_clock` a request may carry: the clock it leads to,
/// `received + 1`, is then `LAMPORT_LIMIT − 1` at most.
pub const MAX_RECEIVED_LAMPORT: u64 = LAMPORT_LIMIT - 2;

/// The Lamport clock of one context. Its value is the clock of the context's last entry
/// (0 before the first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LamportClock(u64);

impl LamportClock {
    /// A clock that has seen `value`.
    pub fn new(value: u64) -> Self {
        LamportClock(value)
    }

    /// Current value.
    pub fn value(self) -> u64 {
        self.0
    }

    /// A local event (an append without a received clock): `local + 1`.
    ///
    /// # Panics
    /// Only if the clock is at `u64::MAX`, which needs 2^64 events.
    pub fn tick(&mut self) -> u64 {
        self.0 = self.0.checked_add(1).expect("Lamport clock overflow");
        self.0
    }

    /// An event carrying a clock received from elsewhere: `max(local, received) + 1`.
    /// Returns `None` (and leaves the clock unchanged) if that would overflow.
    pub fn update(&mut self, received: u64) -> Option<u64> {
        let next = self.0.max(received).checked_add(1)?;
        self.0 = next;
        Some(next)
    }

    /// `update` when a clock was received, `tick` otherwise.
    pub fn advance(&mut self, received: Option<u64>) -> Option<u64> {
        match received {
            Some(r) => self.update(r),
            None => self.0.checked_add(1).inspect(|n| self.0 = *n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_increments() {
        let mut c = LamportClock::default();
        assert_eq!(c.tick(), 1);
        assert_eq!(c.tick(), 2);
    }

    #[test]
    fn update_takes_max_plus_one() {
        let mut c = LamportClock::new(5);
        assert_eq!(c.update(10), Some(11));
        assert_eq!(c.update(3), Some(12));
        assert_eq!(c.update(12), Some(13));
        assert_eq!(c.update(u64::MAX), None);
        assert_eq!(c.value(), 13);
    }

    #[test]
    fn advance_dispatches() {
        let mut c = LamportClock::new(1);
        assert_eq!(c.advance(None), Some(2));
        assert_eq!(c.advance(Some(7)), Some(8));
    }
}
