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
    /// Reading loops sharing the slots (one per partition read).
    readers: Arc<AtomicUsize>,
}

impl Slots {
    pub fn new(size: usize) -> Self {
        Slots {
            semaphore: Arc::new(Semaphore::new(size)),
            size: Mutex::new(size),
            deficit: AtomicUsize::new(0),
            readers: Arc::default(),
        }
    }

    /// Counts a reading loop among those sharing the slots until the guard
    /// is dropped.
    pub(super) fn reader(&self) -> ReaderGuard {
        self.readers.fetch_add(1, Ordering::AcqRel);
        ReaderGuard(self.readers.clone())
    }

    /// How many reading loops share the slots.
    pub(super) fn readers(&self) -> usize {
        self.readers.load(Ordering::Acquire)
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

/// A reading loop's place among those sharing a queue's slots.
#[derive(Debug)]
pub(super) struct ReaderGuard(Arc<AtomicUsize>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
