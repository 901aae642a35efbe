//! The node's memory budget for execution environments.
//!
//! Every environment reserves its function's configured `MemorySize` before
//! it is started and gives it back only once its process is gone, whatever
//! ended it: idle expiry, eviction, retirement, a timeout, a crash, a failed
//! start, shutdown. So the configured memory of all live environments
//! (starting, busy, idle, or killed and not yet reaped) never adds up to
//! more than the budget.
//!
//! When a new environment does not fit, [`MemoryBudget::plan`] picks the
//! least recently used idle environments to evict; the engine kills them
//! and waits for their shares to come back. When busy environments hold
//! the whole budget, the plan is to refuse.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use tokio::sync::Notify;

/// What the budget needs to know of an environment it accounts for.
pub(crate) trait Tenant: Send + Sync + 'static {
    /// Whether it has been told to die: its share comes back soon.
    fn is_dying(&self) -> bool;
}

impl Tenant for crate::env::Env {
    fn is_dying(&self) -> bool {
        self.is_dead()
    }
}

/// Figures of the moment, for `/metrics` and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnvironmentStats {
    /// Environments whose process may be alive: starting, busy, idle, or
    /// killed and not yet reaped.
    pub live: u64,
    /// Of those, the ones warm and idle in a pool.
    pub idle: u64,
    /// The sum of their configured memory, in MB.
    pub reserved_mb: u64,
    /// The memory budget, in MB.
    pub budget_mb: u64,
    /// Idle environments killed to make room for another one, since start.
    pub evictions: u64,
}

/// Accounts for the configured memory of live environments of type `T`.
pub(crate) struct MemoryBudget<T: Tenant> {
    limit_mb: u64,
    state: Mutex<State<T>>,
    /// Woken whenever a share comes back.
    released: Notify,
    evictions: AtomicU64,
}

struct State<T> {
    reserved_mb: u64,
    /// Reservations, attached to an environment or not yet.
    count: u64,
    /// Environments holding a share, by the address of their allocation
    /// (which the `Weak` keeps from being reused until the entry goes).
    tenants: HashMap<usize, Tenancy<T>>,
}

struct Tenancy<T> {
    env: Weak<T>,
    mb: u64,
}

/// A share of the budget for an environment about to start. Dropped, it
/// goes back; [`MemoryBudget::attach`] hands it to the environment instead.
pub(crate) struct Reservation<T: Tenant> {
    budget: Option<Arc<MemoryBudget<T>>>,
    mb: u64,
}

/// What to do about a new environment's memory.
pub(crate) enum Plan<T: Tenant> {
    /// It fits: here is its share.
    Reserved(Reservation<T>),
    /// Kill these idle environments (indices into the slice given to
    /// [`MemoryBudget::plan`]), then wait for shares to come back.
    Evict(Vec<usize>),
    /// Environments already dying will free enough: wait for them.
    Wait,
    /// Busy environments hold the budget (or the function alone is larger
    /// than it): refuse.
    Full,
}

fn key<T>(env: &Arc<T>) -> usize {
    Arc::as_ptr(env) as usize
}

impl<T: Tenant> MemoryBudget<T> {
    pub(crate) fn new(limit_mb: u64) -> Arc<Self> {
        Arc::new(Self {
            limit_mb,
            state: Mutex::new(State {
                reserved_mb: 0,
                count: 0,
                tenants: HashMap::new(),
            }),
            released: Notify::new(),
            evictions: AtomicU64::new(0),
        })
    }

    pub(crate) fn limit_mb(&self) -> u64 {
        self.limit_mb
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn grant(self: &Arc<Self>, st: &mut State<T>, mb: u64) -> Reservation<T> {
        st.reserved_mb += mb;
        st.count += 1;
        Reservation {
            budget: Some(self.clone()),
            mb,
        }
    }

    /// Reserves `mb` if it fits as things are.
    pub(crate) fn try_reserve(self: &Arc<Self>, mb: u64) -> Option<Reservation<T>> {
        let mut st = self.lock();
        (st.reserved_mb + mb <= self.limit_mb).then(|| self.grant(&mut st, mb))
    }

    /// Reserves `mb`, or says what would make room: which of the `idle`
    /// environments (with when each was last used) to evict, least recently
    /// used first. The caller must keep `idle` from changing (hold the
    /// pools' locks) until it has killed the ones named.
    pub(crate) fn plan(self: &Arc<Self>, mb: u64, idle: &[(Instant, &Arc<T>)]) -> Plan<T> {
        if mb > self.limit_mb {
            return Plan::Full;
        }
        let mut st = self.lock();
        let shortfall = (st.reserved_mb + mb).saturating_sub(self.limit_mb);
        if shortfall == 0 {
            return Plan::Reserved(self.grant(&mut st, mb));
        }
        let dying: u64 = st
            .tenants
            .values()
            .filter(|t| t.env.upgrade().is_none_or(|e| e.is_dying()))
            .map(|t| t.mb)
            .sum();
        if dying >= shortfall {
            return Plan::Wait;
        }
        let mut need = shortfall - dying;
        let mut by_age: Vec<usize> = (0..idle.len()).filter(|&i| !idle[i].1.is_dying()).collect();
        by_age.sort_by_key(|&i| idle[i].0);
        let mut evict = Vec::new();
        for i in by_age {
            if need == 0 {
                break;
            }
            if let Some(t) = st.tenants.get(&key(idle[i].1)) {
                need = need.saturating_sub(t.mb);
                evict.push(i);
            }
        }
        if need > 0 {
            // Killing warm environments would not make room: keep them.
            return Plan::Full;
        }
        self.evictions
            .fetch_add(evict.len() as u64, Ordering::Relaxed);
        Plan::Evict(evict)
    }

    /// Hands `r` to `env`: the share now comes back through
    /// [`MemoryBudget::release`] with the returned key, once the
    /// environment's process is gone.
    pub(crate) fn attach(&self, mut r: Reservation<T>, env: &Arc<T>) -> usize {
        r.budget = None;
        let k = key(env);
        self.lock().tenants.insert(
            k,
            Tenancy {
                env: Arc::downgrade(env),
                mb: r.mb,
            },
        );
        k
    }

    /// Gives back the share of the environment `key` names.
    pub(crate) fn release(&self, key: usize) {
        let gone = {
            let mut st = self.lock();
            let gone = st.tenants.remove(&key);
            if let Some(t) = &gone {
                st.reserved_mb -= t.mb;
                st.count -= 1;
            }
            gone
        };
        // The `Weak` (maybe the last reference to the allocation) is dropped
        // outside the lock.
        drop(gone);
        self.released.notify_waiters();
    }

    fn give_back(&self, mb: u64) {
        {
            let mut st = self.lock();
            st.reserved_mb -= mb;
            st.count -= 1;
        }
        self.released.notify_waiters();
    }

    /// Resolves when a share comes back. Call `enable()` on it before
    /// looking at the budget, so a release in between is not missed.
    pub(crate) fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }

    /// Live environments (reservations), reserved MB, and evictions.
    pub(crate) fn figures(&self) -> (u64, u64, u64) {
        let st = self.lock();
        (
            st.count,
            st.reserved_mb,
            self.evictions.load(Ordering::Relaxed),
        )
    }
}

impl<T: Tenant> Drop for Reservation<T> {
    fn drop(&mut self) {
        if let Some(b) = self.budget.take() {
            b.give_back(self.mb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    #[derive(Default)]
    struct Fake(AtomicBool);

    impl Tenant for Fake {
        fn is_dying(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }

    fn env() -> Arc<Fake> {
        Arc::new(Fake::default())
    }

    fn start(b: &Arc<MemoryBudget<Fake>>, mb: u64) -> (Arc<Fake>, usize) {
        let r = b.try_reserve(mb).expect("fits");
        let e = env();
        let k = b.attach(r, &e);
        (e, k)
    }

    #[test]
    fn reservations_come_back_when_dropped_or_released() {
        let b = MemoryBudget::<Fake>::new(256);
        let r = b.try_reserve(128).unwrap();
        let (_e, k) = start(&b, 128);
        assert_eq!(b.figures(), (2, 256, 0));
        assert!(b.try_reserve(1).is_none(), "never over the budget");
        drop(r);
        assert_eq!(b.figures(), (1, 128, 0));
        b.release(k);
        assert_eq!(b.figures(), (0, 0, 0));
        b.release(k);
        assert_eq!(b.figures(), (0, 0, 0), "a second release is a no-op");
    }

    #[test]
    fn plan_evicts_least_recently_used_idle_first() {
        let b = MemoryBudget::<Fake>::new(384);
        let (a, _) = start(&b, 128);
        let (c, _) = start(&b, 128);
        let (_busy, _) = start(&b, 128);
        let t0 = Instant::now();
        let idle = [(t0 + Duration::from_secs(2), &a), (t0, &c)];
        match b.plan(128, &idle) {
            Plan::Evict(v) => assert_eq!(v, [1], "c was used longest ago"),
            _ => panic!("expected an eviction"),
        }
        match b.plan(256, &idle) {
            Plan::Evict(v) => assert_eq!(v, [1, 0]),
            _ => panic!("expected two evictions"),
        }
        assert_eq!(b.figures().2, 3, "evictions are counted");
    }

    #[test]
    fn plan_waits_for_dying_environments_and_refuses_when_all_are_busy() {
        let b = MemoryBudget::<Fake>::new(256);
        let (a, ka) = start(&b, 128);
        let (_busy, _) = start(&b, 128);
        assert!(matches!(b.plan(128, &[]), Plan::Full), "nothing idle");
        assert!(
            matches!(b.plan(512, &[]), Plan::Full),
            "larger than the budget"
        );
        a.0.store(true, Ordering::Relaxed);
        assert!(
            matches!(b.plan(128, &[]), Plan::Wait),
            "a is on its way out"
        );
        assert!(
            matches!(b.plan(256, &[]), Plan::Full),
            "a alone is not enough"
        );
        drop(a);
        assert!(
            matches!(b.plan(128, &[]), Plan::Wait),
            "dropped counts as dying"
        );
        b.release(ka);
        assert!(matches!(b.plan(128, &[]), Plan::Reserved(_)));
        assert_eq!(b.figures().1, 128, "the reservation was dropped again");
    }

    #[tokio::test]
    async fn a_release_wakes_a_waiter() {
        let b = MemoryBudget::<Fake>::new(128);
        let (_e, k) = start(&b, 128);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                let released = b.released();
                tokio::pin!(released);
                released.as_mut().enable();
                if b.try_reserve(128).is_none() {
                    released.await;
                }
                b.try_reserve(128).is_some()
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.release(k);
        assert!(waiter.await.unwrap());
    }
}
