//! One budget of memory for all webhook requests in flight. A request holds a share for its
//! body, then for what parsing it will take (`admission::cost`), and gives it back when it
//! is answered. A request that would overdraw the budget is refused at once rather than
//! queued, so however many clients send at once, the bodies and parsed reviews held never
//! exceed the budget.
//!
//! A quarter of the budget is kept for small requests: a flood of large bodies cannot crowd
//! out the apiserver's ordinary reviews, a few KiB each.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A request whose share stays at or below this is small: it may use the whole budget.
pub const SMALL_REQUEST: usize = 256 * 1024;

#[derive(Debug)]
pub struct MemoryBudget {
    capacity: usize,
    used: AtomicUsize,
}

/// What a request holds; given back when dropped.
#[derive(Debug)]
pub struct Share {
    budget: Arc<MemoryBudget>,
    held: usize,
}

/// May a request holding `held` bytes take `more`, with `used` bytes taken by all requests?
pub fn fits(capacity: usize, used: usize, held: usize, more: usize) -> bool {
    let limit = if held.saturating_add(more) <= SMALL_REQUEST {
        capacity
    } else {
        large_limit(capacity)
    };
    used.checked_add(more).is_some_and(|after| after <= limit)
}

/// What all large requests together may hold.
fn large_limit(capacity: usize) -> usize {
    capacity - capacity / 4
}

impl MemoryBudget {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            used: AtomicUsize::new(0),
        })
    }

    /// An empty share, for one request.
    pub fn share(self: &Arc<Self>) -> Share {
        Share {
            budget: self.clone(),
            held: 0,
        }
    }

    /// The most one request may ever hold: more can never be granted, whatever else is in
    /// flight.
    pub fn largest_request(&self) -> usize {
        large_limit(self.capacity).max(SMALL_REQUEST.min(self.capacity))
    }

    /// Bytes held by requests in flight now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Share {
    /// Takes `bytes` more; `false` (and nothing taken) when the budget cannot give them now.
    pub fn try_grow(&mut self, bytes: usize) -> bool {
        let budget = &self.budget;
        let granted = budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                fits(budget.capacity, used, self.held, bytes).then(|| used + bytes)
            })
            .is_ok();
        if granted {
            self.held += bytes;
        }
        granted
    }

    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
