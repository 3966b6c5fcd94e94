//! Keeping a pool's workers awake while a command runs.
//!
//! The CPU backend splits each matrix product (and the larger element-wise kernels) across
//! rayon's workers, some hundred times per training step. A rayon worker that finds no work
//! goes to sleep after a short spin, and waking it takes a system call and, on a virtual
//! machine, an interrupt through the hypervisor: `perf` puts about a tenth of a run's samples
//! in the kernel's scheduler. [`install_polling`] runs a command on one worker while the other
//! workers (up to one per core, the command's included) poll for work instead of sleeping (`rayon::yield_now`, which steals a pending job and
//! runs it), the way OpenMP runtimes keep their threads spinning between parallel regions. A
//! worker that found nothing for [`SPIN`] sleeps in short naps, so a long serial phase (loading
//! data, writing a checkpoint) does not hold a core.
//!
//! Results do not depend on it: which thread runs a block never changes what the block
//! computes (every kernel's partition is a function of the shape).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a polling worker spins without finding work before it starts to nap.
pub const SPIN: Duration = Duration::from_millis(2);
/// Idle looks between two `sched_yield`s of a spinning worker.
const YIELD_EVERY: u32 = 32;
/// A polling worker's nap once it is idle.
const NAP: Duration = Duration::from_micros(200);

/// Runs `f` on a worker of `pool` (as [`rayon::ThreadPool::install`]) while the pool's other
/// workers, up to one per core, poll for its parallel work until `f` returns.
pub fn install_polling<R: Send>(pool: &rayon::ThreadPool, f: impl FnOnce() -> R + Send) -> R {
    pool.install(|| {
        if rayon::current_num_threads() < 2 {
            return f();
        }
        let done = Arc::new(AtomicBool::new(false));
        let me = rayon::current_thread_index().unwrap_or(0);
        let flag = done.clone();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let threads = rayon::current_num_threads();
        // One job per worker; those that are not to poll return at once.
        pool.spawn_broadcast(move |ctx| {
            if polls(ctx.index(), me, threads, cores) {
                poll(&flag);
            }
        });
        // Ends the polling when `f` returns, or unwinds.
        struct Stop(Arc<AtomicBool>);
        impl Drop for Stop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _stop = Stop(done);
        f()
    })
}

/// Whether worker `i` of `threads` polls while worker `me` runs the command, on a machine of
/// `cores`. The command's worker never does (nothing would end its polling), and at most one
/// worker per core polls, the command's included: with more workers than cores, the others
/// would take the cores the command and its work need.
fn polls(i: usize, me: usize, threads: usize, cores: usize) -> bool {
    let pollers = threads.min(cores).saturating_sub(1);
    let rank = if i < me { i } else { i.wrapping_sub(1) };
    i != me && i < threads && rank < pollers
}

/// Runs the pool's pending jobs as they appear until `done`. Between two looks it spins, giving the core to another runnable thread every
/// [`YIELD_EVERY`] looks (where the machine is shared, a spinning worker must not hold a core
/// another process needs).
fn poll(done: &AtomicBool) {
    let mut last_work = Instant::now();
    let mut idle = 0u32;
    while !done.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => {
                last_work = Instant::now();
                idle = 0;
            }
            _ if last_work.elapsed() < SPIN => {
                idle = idle.wrapping_add(1);
                if idle % YIELD_EVERY == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            _ => std::thread::sleep(NAP),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// The command's parallel work is done (by both workers), its result returned, and the
    /// pollers stop: a second command on the same pool runs too, and one after a command that
    /// panicked.
    /// Every worker but the command's polls, up to one per core in all.
    #[test]
    fn one_poller_per_core_at_most_never_the_command_s_worker() {
        let who = |me, threads, cores| (0..threads).filter(|&i| polls(i, me, threads, cores)).collect::<Vec<_>>();
        assert_eq!(who(0, 2, 2), [1]);
        assert_eq!(who(1, 2, 2), [0]);
        assert_eq!(who(0, 8, 2), [1]);
        assert_eq!(who(3, 8, 4), [0, 1, 2]);
        assert_eq!(who(0, 4, 16), [1, 2, 3]);
        assert_eq!(who(0, 1, 2), Vec::<usize>::new());
        assert_eq!(who(0, 2, 1), Vec::<usize>::new());
    }

    #[test]
    fn a_command_runs_with_polling_workers_and_they_stop() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for _ in 0..2 {
            let sum = install_polling(&pool, || (0..1_000_000u64).into_par_iter().map(|x| x % 7).sum::<u64>());
            assert_eq!(sum, (0..1_000_000u64).map(|x| x % 7).sum::<u64>());
        }
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            install_polling(&pool, || panic!("the command fails"));
        }));
        assert!(panicked.is_err());
        assert_eq!(install_polling(&pool, || (0..1000u64).into_par_iter().sum::<u64>()), 499_500);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(install_polling(&one, || 5), 5);
    }
}
