//! The outgoing queue's lock.
//!
//! Every send takes it, so it is the cheapest lock there is: a spin lock, taken with one
//! compare-and-swap and released with a plain store. A std `Mutex` releases with an atomic swap
//! (it must learn whether a thread sleeps on it); on this project's Intel VM that second locked
//! instruction, which waits for the frame bytes just written to leave the store buffer, cost
//! about a third of a 16-byte send (the bench crate's raw send case, pinned: 1.00–1.11 s
//! against 0.72–0.88 s per 20 M messages). With the session's handles and driver on one
//! current-thread runtime it is never contended.
//!
//! It is held for an append or a take, so a thread that finds it held spins briefly, then
//! yields, then sleeps in short steps: a sender compressing or copying a large message can
//! hold it for milliseconds, and a waiting thread must not burn its core meanwhile.

use std::time::Duration;

use spin::mutex::{SpinMutex, SpinMutexGuard};

pub(crate) struct QueueLock<T>(SpinMutex<T>);

pub(crate) type QueueGuard<'a, T> = SpinMutexGuard<'a, T>;

impl<T> QueueLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(SpinMutex::new(value))
    }

    #[inline]
    pub(crate) fn lock(&self) -> QueueGuard<'_, T> {
        match self.0.try_lock() {
            Some(g) => g,
            None => self.contended(),
        }
    }

    #[cold]
    #[inline(never)]
    fn contended(&self) -> QueueGuard<'_, T> {
        let mut round = 0u32;
        loop {
            while self.0.is_locked() {
                backoff(round);
                round = round.saturating_add(1);
            }
            if let Some(g) = self.0.try_lock() {
                return g;
            }
        }
    }
}

/// One wait for the held lock: spins, doubling, for the first rounds (127 spins in all; an
/// append takes well under a microsecond), then yields the thread, then sleeps 50 µs a round.
fn backoff(round: u32) {
    if round < 7 {
        for _ in 0..1u32 << round {
            std::hint::spin_loop();
        }
    } else if round < 20 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn threads_taking_turns_lose_no_update() {
        let lock = Arc::new(QueueLock::new(Vec::new()));
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        let mut v = lock.lock();
                        let n = v.len();
                        v.push((t, i));
                        // Held a little longer now and then, to reach the yielding rounds.
                        if i % 1000 == 0 {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        assert_eq!(v.len(), n + 1, "another thread got in");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let v = lock.lock();
        assert_eq!(v.len(), 80_000);
        for t in 0..4 {
            let mine: Vec<u32> = v.iter().filter(|(o, _)| *o == t).map(|(_, i)| *i).collect();
            assert_eq!(mine, (0..20_000).collect::<Vec<_>>(), "thread {t}'s order");
        }
    }

    #[test]
    fn a_long_hold_is_waited_out_and_its_write_seen() {
        let lock = Arc::new(QueueLock::new(0u64));
        let mut held = lock.lock();
        let waiter = {
            let lock = lock.clone();
            std::thread::spawn(move || *lock.lock())
        };
        // Long enough for the waiter to pass the spinning and yielding rounds into sleeping.
        std::thread::sleep(Duration::from_millis(30));
        // Written just before the release: a waiter that got in while the lock was held
        // would have read 0.
        *held = 7;
        drop(held);
        assert_eq!(waiter.join().unwrap(), 7);
    }
}
