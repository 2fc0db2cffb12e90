//! A persistent helper pool for the fused linear kernel (`matmul.rs`), built for decode-sized calls made
//! back to back by another framework's thread (torch's) whose own worker threads compete for the cores.
//!
//! A call splits its output rows into tasks; the calling thread takes tasks from a shared counter, and so do
//! the pool's helpers. The caller waits only for tasks a helper has *claimed* and not yet finished, never for
//! a helper to wake up: a helper that is descheduled (e.g. by torch's spinning OpenMP workers) and comes late
//! finds the counter exhausted or moved on to a later call, and runs nothing. So a call is never slower than
//! the calling thread alone, beyond one task. Helpers stay alive between calls: after a job they spin for
//! [`SPIN`] (calls arriving within it cost no wake-up), then sleep on a condition variable.
//!
//! Soundness of sharing the caller's closure (borrowed from its stack) with helpers: a helper dereferences
//! the job only after claiming a task index below the job's task count *in the job's generation* (one
//! compare-and-swap on `(generation, next task)`); the caller does not return before every claimed task has
//! reported done, so the closure outlives each use. A claim against an older generation fails.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle helper spins for the next call before it sleeps.
const SPIN: Duration = Duration::from_micros(100);

/// Most helpers the pool starts (a call asking for more gets this many).
const MAX_HELPERS: usize = 255;

type TaskFn = dyn Fn(usize) + Sync;

/// The published job: a pointer to the caller's closure (valid while its generation's tasks run).
#[derive(Clone, Copy)]
struct Job {
    f: *const TaskFn,
    ntask: usize,
    helpers: usize,
    gen: u64,
}
// SAFETY: the pointer is only dereferenced under the claim protocol described in the module docs, while the
// publishing caller waits; the closure itself is `Sync`.
unsafe impl Send for Job {}

struct Slot {
    job: Option<Job>,
    gen: u64,
    sleepers: usize,
    started: usize,
}

struct Pool {
    slot: Mutex<Slot>,
    cv: Condvar,
    /// `(generation << 32) | next task index` of the current job (the generation's low 32 bits: a helper would
    /// have to stall across 2³² calls to see a stale one match).
    state: AtomicU64,
    /// The generation last published (read by spinning helpers without the lock).
    published: AtomicU64,
    /// Tasks of the current job finished by helpers.
    done: AtomicUsize,
    /// Held by the one call using the pool; a concurrent call runs its tasks on its own thread.
    busy: Mutex<()>,
}

fn pool() -> &'static Pool {
    static P: OnceLock<Pool> = OnceLock::new();
    P.get_or_init(|| Pool {
        slot: Mutex::new(Slot { job: None, gen: 0, sleepers: 0, started: 0 }),
        cv: Condvar::new(),
        state: AtomicU64::new(0),
        published: AtomicU64::new(0),
        done: AtomicUsize::new(0),
        busy: Mutex::new(()),
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Claim the next task of generation `gen` (of `ntask`), if any is left.
fn claim(p: &Pool, gen: u64, ntask: usize) -> Option<usize> {
    let mut s = p.state.load(Ordering::Acquire);
    loop {
        let (g, t) = (s >> 32, (s & 0xFFFF_FFFF) as usize);
        if g != (gen & 0xFFFF_FFFF) || t >= ntask {
            return None;
        }
        match p.state.compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Some(t),
            Err(now) => s = now,
        }
    }
}

fn helper(index: usize) {
    let p = pool();
    let mut seen = 0u64;
    loop {
        // Wait for a generation after `seen`: spin first, then sleep.
        let t0 = Instant::now();
        let mut spins = 0u32;
        while p.published.load(Ordering::Acquire) == seen {
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(256) && t0.elapsed() > SPIN {
                let mut s = lock(&p.slot);
                while s.gen == seen {
                    s.sleepers += 1;
                    s = p.cv.wait(s).unwrap_or_else(|e| e.into_inner());
                    s.sleepers -= 1;
                }
                break;
            }
        }
        let job = {
            let s = lock(&p.slot);
            seen = s.gen;
            s.job
        };
        let Some(job) = job else { continue };
        if index >= job.helpers {
            continue;
        }
        while let Some(t) = claim(p, job.gen, job.ntask) {
            // SAFETY: task `t` of generation `job.gen` was claimed, so that job's caller is still waiting
            // for it (it returns only once `done` counts every task it did not run itself): `f` is alive.
            unsafe { (*job.f)(t) };
            p.done.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Run `f(0) .. f(ntask - 1)` on the calling thread and up to `helpers` pool threads; returns when all ran.
/// Each index runs exactly once. `f` must not panic (the fused kernel's tasks do not).
pub(crate) fn run(helpers: usize, ntask: usize, f: &(dyn Fn(usize) + Sync)) {
    let p = pool();
    let helpers = helpers.min(MAX_HELPERS);
    let guard = if helpers == 0 || ntask < 2 { None } else { p.busy.try_lock().ok() };
    let Some(_busy) = guard else {
        (0..ntask).for_each(f);
        return;
    };
    let gen = {
        let mut s = lock(&p.slot);
        while s.started < helpers {
            let i = s.started;
            let spawned = std::thread::Builder::new().name(format!("fastquant-fused-{i}")).spawn(move || helper(i));
            if spawned.is_err() {
                break; // fewer helpers: the calling thread takes their tasks
            }
            s.started += 1;
        }
        s.gen += 1;
        let gen = s.gen;
        p.done.store(0, Ordering::Release);
        p.state.store((gen & 0xFFFF_FFFF) << 32, Ordering::Release);
        // SAFETY: lifetime erasure only; helpers use `f` under the claim protocol (module docs), and this
        // function does not return before every claimed task of this generation is done.
        let fp: *const TaskFn = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static TaskFn>(f) };
        s.job = Some(Job { f: fp, ntask, helpers, gen });
        p.published.store(gen, Ordering::Release);
        if s.sleepers > 0 {
            p.cv.notify_all();
        }
        gen
    };
    let mut mine = 0;
    while let Some(t) = claim(p, gen, ntask) {
        f(t);
        mine += 1;
    }
    // Every task is claimed; wait for the helpers' ones to finish.
    let mut spins = 0u32;
    while mine + p.done.load(Ordering::Acquire) < ntask {
        std::hint::spin_loop();
        spins += 1;
        if spins > 4096 {
            std::thread::yield_now();
        }
    }
    lock(&p.slot).job = None;
}
