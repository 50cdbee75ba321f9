//! A queue's handler slots: its concurrency, resizable while messages run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A queue's handler slots: its concurrency, resizable while messages run.
#[derive(Debug)]
pub struct Slots {
    pub(super) semaphore: Arc<Semaphore>,
    size: Mutex<usize>,
    /// Slots to retire as running handlers finish (after a decrease that
    /// found them busy).
    deficit: AtomicUsize,
}

impl Slots {
    pub fn new(size: usize) -> Self {
        Slots {
            semaphore: Arc::new(Semaphore::new(size)),
            size: Mutex::new(size),
            deficit: AtomicUsize::new(0),
        }
    }

    /// Changes the number of slots; running handlers are never interrupted.
    pub fn resize(&self, new: usize) {
        let mut size = self.size.lock().expect("slots lock");
        if new > *size {
            let mut grow = new - *size;
            // Cancel retirements still due before adding slots.
            while grow > 0 {
                let due = self.deficit.load(Ordering::Acquire);
                if due == 0 {
                    break;
                }
                let take = due.min(grow);
                if self
                    .deficit
                    .compare_exchange(due, due - take, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    grow -= take;
                }
            }
            self.semaphore.add_permits(grow);
        } else if new < *size {
            let shrink = *size - new;
            let forgotten = self.semaphore.forget_permits(shrink);
            self.deficit.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
        *size = new;
    }

    /// The number of slots.
    pub fn size(&self) -> usize {
        *self.size.lock().expect("slots lock")
    }

    /// Gives a slot back when its handler is done (or retires it).
    pub(super) fn release(&self, permit: OwnedSemaphorePermit) {
        let retired = self
            .deficit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok();
        if retired {
            permit.forget();
        }
    }
}
