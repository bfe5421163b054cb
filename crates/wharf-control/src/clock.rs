//! Time and identity sources, injected so that tests control them.

use std::sync::atomic::{AtomicI64, Ordering};

/// The wall clock, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Now, in epoch milliseconds.
    fn now_millis(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that only moves when told to, for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock reading `millis`.
    pub fn at(millis: i64) -> Self {
        ManualClock(AtomicI64::new(millis))
    }
    /// Moves the clock forward.
    pub fn advance(&self, millis: i64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
