//! The outgoing queue's lock.
//!
//! Every send takes it, so uncontended it must cost as little as a lock can: it is a spin lock
//! taken with one compare-and-swap and released with a plain store (a std `Mutex` releases with
//! an atomic swap, since it must learn whether a thread sleeps on it). Nothing slow happens
//! under it: no copy of more than `LARGE_SEND` bytes (larger payloads are handed over as
//! `Bytes`), no compression, no masking of a large payload, so it is held for microseconds. A
//! thread that finds it held spins, doubling, and then yields its time slice until it is free;
//! it never sleeps, so a runtime worker is never parked behind it for a timer's granularity.
//!
//! Built with `--cfg wsc_std_mutex` it is a std `Mutex` instead, so that the benchmark can
//! compare the two (`scripts/bench`, the contended send case).

#[cfg(not(wsc_std_mutex))]
pub(crate) use spin_lock::{QueueGuard, QueueLock};
#[cfg(wsc_std_mutex)]
pub(crate) use std_lock::{QueueGuard, QueueLock};

#[cfg(not(wsc_std_mutex))]
mod spin_lock {
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

    /// One wait for the held lock: spins, doubling, for the first rounds (127 spins in all,
    /// well under a microsecond; a hold is an append or a take), then yields the thread (the
    /// holder may have been preempted, and a yield lets it run).
    fn backoff(round: u32) {
        if round < 7 {
            for _ in 0..1u32 << round {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
    }
}

#[cfg(wsc_std_mutex)]
mod std_lock {
    use std::sync::{Mutex, MutexGuard};

    pub(crate) struct QueueLock<T>(Mutex<T>);

    pub(crate) type QueueGuard<'a, T> = MutexGuard<'a, T>;

    impl<T> QueueLock<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(Mutex::new(value))
        }

        #[inline]
        pub(crate) fn lock(&self) -> QueueGuard<'_, T> {
            self.0.lock().unwrap_or_else(|p| p.into_inner())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

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
        // Long enough for the waiter to pass the spinning rounds into yielding.
        std::thread::sleep(Duration::from_millis(30));
        // Written just before the release: a waiter that got in while the lock was held
        // would have read 0.
        *held = 7;
        drop(held);
        assert_eq!(waiter.join().unwrap(), 7);
    }
}
