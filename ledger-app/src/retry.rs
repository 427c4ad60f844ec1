//! The bounded retry of optimistic concurrency: an attempt that lost a race with another
//! writer ([`Error::VersionConflict`]) loads what it read again and decides again, at most a
//! given number of times; every other outcome is final.
//!
//! ```text
//! let mut attempts = Attempts::up_to(COMMAND_ATTEMPTS_MAX);
//! loop {
//!     let outcome = attempt(attempts.is_first()).await;
//!     if !attempts.retry(&outcome) {
//!         return outcome;
//!     }
//! }
//! ```
//!
//! A counter rather than a function taking the attempt as an async closure: rustc could not
//! prove such a closure's future `Send` for every lifetime, which axum's handlers need.

use crate::error::{Error, Result};

/// The attempts of one command or batch.
#[derive(Debug)]
pub struct Attempts {
    made: usize,
    max: usize,
}

impl Attempts {
    /// # Panics
    /// When `max` is 0.
    pub fn up_to(max: usize) -> Attempts {
        assert!(max >= 1, "at least one attempt");
        Attempts { made: 0, max }
    }

    /// Whether no attempt was made yet (a later one loads again what it reads).
    pub fn is_first(&self) -> bool {
        self.made == 0
    }

    /// Counts an attempt that ended in `outcome`; whether to make another: only after a
    /// version conflict, and only while attempts are left.
    pub fn retry<T>(&mut self, outcome: &Result<T>) -> bool {
        self.made += 1;
        matches!(outcome, Err(Error::VersionConflict(_))) && self.made < self.max
    }
}
