//! The outgoing queue's lock.
//!
//! Every send takes it, so uncontended it must cost as little as a lock can: a
//! `parking_lot` mutex, taken with one compare-and-swap and released with another. Nothing
//! slow happens under it: no copy or mask of more than `LARGE_SEND` bytes (larger payloads are
//! handed over as `Bytes` and masked as they are transmitted), no compression, so it is held
//! for microseconds. A thread that finds it held spins a few rounds, yields a few times and
//! then parks until the holder lets go: a waiting thread never burns its core for longer than
//! a bounded spin, whatever the holder does (a preempted holder is waited out asleep).
//!
//! Built with `--cfg wsc_std_mutex` it is a std `Mutex` instead, so that the benchmark can
//! compare the two (`scripts/bench`, the contended send case).

#[cfg(not(wsc_std_mutex))]
pub(crate) use parking::{QueueGuard, QueueLock};
#[cfg(wsc_std_mutex)]
pub(crate) use std_lock::{QueueGuard, QueueLock};

#[cfg(not(wsc_std_mutex))]
mod parking {
    pub(crate) struct QueueLock<T>(parking_lot::Mutex<T>);

    pub(crate) type QueueGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

    impl<T> QueueLock<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(parking_lot::Mutex::new(value))
        }

        #[inline]
        pub(crate) fn lock(&self) -> QueueGuard<'_, T> {
            self.0.lock()
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
                        // Held a little longer now and then, so that waiters get past spinning and park.
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
        // Long enough for the waiter to get past spinning and park.
        std::thread::sleep(Duration::from_millis(30));
        // Written just before the release: a waiter that got in while the lock was held
        // would have read 0.
        *held = 7;
        drop(held);
        assert_eq!(waiter.join().unwrap(), 7);
    }
}
