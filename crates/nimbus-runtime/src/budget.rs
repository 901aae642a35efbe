//! The node's memory budget for execution environments.
//!
//! Every environment reserves its function's configured `MemorySize` before
//! it is started and gives it back only once its process is gone, whatever
//! ended it: idle expiry, eviction, retirement, a timeout, a crash, a failed
//! start, shutdown. So the configured memory of all live environments
//! (starting, busy, idle, or killed and not yet reaped) never adds up to
//! more than the budget.
//!
//! When a new environment does not fit, [`MemoryBudget::plan`] takes what
//! is free and *claims* the rest from environments on their way out: ones
//! already dying, then the least recently used idle ones, which the engine
//! kills. A claimed share passes straight to the claimant when its
//! environment is reaped, so no other start can take it in between, and
//! the claimant waits only for its own victims. When busy environments
//! hold the budget, the plan is to refuse, and nothing is evicted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use tokio::sync::oneshot;

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
    evictions: AtomicU64,
}

struct State<T> {
    /// Shares held by environments and by reservations, claimed parts
    /// included (until they pass from the one to the other).
    reserved_mb: u64,
    /// Environments holding a share, and reservations whose share is
    /// whole (a claimant still waiting for claimed shares is not counted:
    /// it has no process yet, its victims still do).
    count: u64,
    /// Environments holding a share, by the address of their allocation
    /// (which the `Weak` keeps from being reused until the entry goes).
    tenants: HashMap<usize, Tenancy<T>>,
    /// Reservations still waiting for claimed shares, by id.
    claims: HashMap<u64, Claim>,
    next_claim: u64,
}

struct Tenancy<T> {
    env: Weak<T>,
    mb: u64,
    /// The reservation this share passes to when the environment is gone.
    claimed_by: Option<u64>,
}

struct Claim {
    /// MB still to come from claimed environments.
    missing: u64,
    done: Option<oneshot::Sender<()>>,
}

/// A share of the budget for an environment about to start. Dropped, it
/// goes back (with any claims); [`MemoryBudget::attach`] hands it to the
/// environment instead.
pub(crate) struct Reservation<T: Tenant> {
    budget: Option<Arc<MemoryBudget<T>>>,
    mb: u64,
    /// Set while claimed shares are still to come: the claim's id and
    /// what tells when they have.
    pending: Option<(u64, oneshot::Receiver<()>)>,
}

/// What to do about a new environment's memory.
pub(crate) enum Plan<T: Tenant> {
    /// Its share is reserved; if part of it is claimed from environments
    /// on their way out, [`Reservation::ready`] waits for them.
    Reserved(Reservation<T>),
    /// As `Reserved`, once these idle environments (indices into the slice
    /// given to [`MemoryBudget::plan`]) are killed.
    Evict(Reservation<T>, Vec<usize>),
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
                claims: HashMap::new(),
                next_claim: 0,
            }),
            evictions: AtomicU64::new(0),
        })
    }

    pub(crate) fn limit_mb(&self) -> u64 {
        self.limit_mb
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `mb` if it fits as things are.
    pub(crate) fn try_reserve(self: &Arc<Self>, mb: u64) -> Option<Reservation<T>> {
        let mut st = self.lock();
        if st.reserved_mb + mb > self.limit_mb {
            return None;
        }
        st.reserved_mb += mb;
        st.count += 1;
        Some(Reservation {
            budget: Some(self.clone()),
            mb,
            pending: None,
        })
    }

    /// Reserves `mb`: what is free, and the rest claimed from environments
    /// already dying, then from the least recently used of the `idle` ones
    /// (given with when each was last used), which the caller must kill.
    /// The caller must keep `idle` from changing (hold the pools' locks)
    /// until it has killed the ones named.
    pub(crate) fn plan(self: &Arc<Self>, mb: u64, idle: &[(Instant, &Arc<T>)]) -> Plan<T> {
        if mb > self.limit_mb {
            return Plan::Full;
        }
        let mut st = self.lock();
        let free = self.limit_mb.saturating_sub(st.reserved_mb).min(mb);
        let mut missing = mb - free;
        let mut claimed: Vec<usize> = Vec::new();
        let mut dying: Vec<usize> = st
            .tenants
            .iter()
            .filter(|(_, t)| t.claimed_by.is_none())
            .filter(|(_, t)| t.env.upgrade().is_none_or(|e| e.is_dying()))
            .map(|(k, _)| *k)
            .collect();
        dying.sort_unstable();
        for k in dying {
            if missing == 0 {
                break;
            }
            missing = missing.saturating_sub(st.tenants[&k].mb);
            claimed.push(k);
        }
        let mut by_age: Vec<usize> = (0..idle.len()).filter(|&i| !idle[i].1.is_dying()).collect();
        by_age.sort_by_key(|&i| idle[i].0);
        let mut evict = Vec::new();
        for i in by_age {
            if missing == 0 {
                break;
            }
            let k = key(idle[i].1);
            if let Some(t) = st.tenants.get(&k).filter(|t| t.claimed_by.is_none()) {
                missing = missing.saturating_sub(t.mb);
                claimed.push(k);
                evict.push(i);
            }
        }
        if missing > 0 {
            // Killing warm environments would not make room: keep them.
            return Plan::Full;
        }
        let want = mb - free;
        st.reserved_mb += free;
        if want == 0 {
            st.count += 1;
        }
        let mut r = Reservation {
            budget: Some(self.clone()),
            mb,
            pending: None,
        };
        if want > 0 {
            let id = st.next_claim;
            st.next_claim += 1;
            let (tx, rx) = oneshot::channel();
            st.claims.insert(
                id,
                Claim {
                    missing: want,
                    done: Some(tx),
                },
            );
            for k in claimed {
                if let Some(t) = st.tenants.get_mut(&k) {
                    t.claimed_by = Some(id);
                }
            }
            r.pending = Some((id, rx));
        }
        drop(st);
        if evict.is_empty() {
            Plan::Reserved(r)
        } else {
            self.evictions
                .fetch_add(evict.len() as u64, Ordering::Relaxed);
            Plan::Evict(r, evict)
        }
    }

    /// Hands `r` (with its whole share) to `env`: the share now comes back
    /// through [`MemoryBudget::release`] with the returned key, once the
    /// environment's process is gone.
    pub(crate) fn attach(&self, mut r: Reservation<T>, env: &Arc<T>) -> usize {
        debug_assert!(r.pending.is_none(), "attached before its claims came in");
        r.budget = None;
        let k = key(env);
        self.lock().tenants.insert(
            k,
            Tenancy {
                env: Arc::downgrade(env),
                mb: r.mb,
                claimed_by: None,
            },
        );
        k
    }

    /// Gives back the share of the environment `key` names: to the
    /// reservation that claimed it, or to the budget.
    pub(crate) fn release(&self, key: usize) {
        let mut st = self.lock();
        let Some(t) = st.tenants.remove(&key) else {
            return;
        };
        st.reserved_mb -= t.mb;
        st.count -= 1;
        if let Some(c) = t.claimed_by.and_then(|id| st.claims.get_mut(&id)) {
            let passed = t.mb.min(c.missing);
            c.missing -= passed;
            let whole = c.missing == 0 && passed > 0;
            if whole && let Some(done) = c.done.take() {
                let _ = done.send(());
            }
            st.reserved_mb += passed;
            if whole {
                st.count += 1;
            }
        }
        // The `Weak` (maybe the last reference to the allocation) is dropped
        // outside the lock.
        drop(st);
        drop(t);
    }

    /// Takes back a reservation that was not attached: what it holds, and
    /// its claims, which then come back to the budget.
    fn give_back(&self, mb: u64, claim: Option<u64>) {
        let mut st = self.lock();
        let missing = claim
            .and_then(|id| st.claims.remove(&id))
            .map_or(0, |c| c.missing);
        st.reserved_mb -= mb - missing;
        if missing == 0 {
            st.count -= 1;
        }
        if let Some(id) = claim {
            for t in st.tenants.values_mut() {
                if t.claimed_by == Some(id) {
                    t.claimed_by = None;
                }
            }
        }
    }

    fn claim_settled(&self, id: u64) {
        self.lock().claims.remove(&id);
    }

    /// Live environments, reserved MB, and evictions.
    pub(crate) fn figures(&self) -> (u64, u64, u64) {
        let st = self.lock();
        (
            st.count,
            st.reserved_mb,
            self.evictions.load(Ordering::Relaxed),
        )
    }
}

impl<T: Tenant> Reservation<T> {
    /// Waits until every claimed share has come in: the whole share is
    /// then this reservation's. Dropping the future is safe (the
    /// reservation, dropped, gives back what it holds).
    pub(crate) async fn ready(&mut self) {
        if let Some((id, rx)) = &mut self.pending {
            // The sender is only dropped with the claim, which only this
            // reservation removes.
            let _ = rx.await;
            let id = *id;
            self.pending = None;
            if let Some(b) = &self.budget {
                b.claim_settled(id);
            }
        }
    }
}

impl<T: Tenant> Drop for Reservation<T> {
    fn drop(&mut self) {
        if let Some(b) = self.budget.take() {
            b.give_back(self.mb, self.pending.take().map(|(id, _)| id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future as _;
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

    fn ready_now(r: &mut Reservation<Fake>) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::pin::pin!(r.ready()).poll(&mut cx).is_ready()
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
        let first = match b.plan(128, &idle) {
            Plan::Evict(r, v) => {
                assert_eq!(v, [1], "c was used longest ago");
                r
            }
            _ => panic!("expected an eviction"),
        };
        // c is claimed: the next plan takes a, not c again.
        match b.plan(128, &idle) {
            Plan::Evict(_, v) => assert_eq!(v, [0]),
            _ => panic!("expected an eviction of a"),
        }
        assert_eq!(b.figures().2, 2, "evictions are counted");
        drop(first);
        assert!(
            matches!(b.plan(384, &idle), Plan::Full),
            "two idle environments are not enough for 384 MB"
        );
        assert_eq!(b.figures().2, 2, "and nothing is evicted in vain");
    }

    #[test]
    fn a_claimed_share_passes_to_its_claimant_only() {
        let b = MemoryBudget::<Fake>::new(256);
        let (a, ka) = start(&b, 128);
        let (_busy, _) = start(&b, 128);
        let t0 = Instant::now();
        let Plan::Evict(mut r, v) = b.plan(128, &[(t0, &a)]) else {
            panic!("expected an eviction");
        };
        assert_eq!(v, [0]);
        a.0.store(true, Ordering::Relaxed);
        assert!(!ready_now(&mut r), "a is not gone yet");
        assert_eq!(
            b.figures(),
            (2, 256, 1),
            "never over the budget, and the claimant is no environment yet"
        );
        b.release(ka);
        assert!(b.try_reserve(1).is_none(), "a's share went to the claimant");
        assert!(ready_now(&mut r));
        assert_eq!(b.figures(), (2, 256, 1));
        let e = env();
        b.attach(r, &e);
        assert_eq!(b.figures(), (2, 256, 1));
    }

    #[test]
    fn dying_environments_are_claimed_before_idle_ones_are_evicted() {
        let b = MemoryBudget::<Fake>::new(256);
        let (a, ka) = start(&b, 128);
        let (c, _) = start(&b, 128);
        a.0.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        let Plan::Reserved(mut r) = b.plan(128, &[(t0, &c)]) else {
            panic!("a, already dying, is enough");
        };
        assert!(matches!(b.plan(128, &[]), Plan::Full), "a is taken");
        assert!(
            matches!(b.plan(512, &[]), Plan::Full),
            "larger than the budget"
        );
        b.release(ka);
        assert!(ready_now(&mut r));
        drop(r);
        assert_eq!(b.figures(), (1, 128, 0));
    }

    #[test]
    fn a_dropped_claimant_gives_back_what_it_holds_and_its_claims() {
        let b = MemoryBudget::<Fake>::new(384);
        let (_busy, _) = start(&b, 128);
        let (a, ka) = start(&b, 128);
        let (c, kc) = start(&b, 128);
        let t0 = Instant::now();
        // Needs 256: nothing free, a and c are evicted.
        let Plan::Evict(r, v) = b.plan(256, &[(t0, &a), (t0, &c)]) else {
            panic!("expected evictions");
        };
        assert_eq!(v.len(), 2);
        b.release(ka);
        assert_eq!(b.figures(), (2, 384, 2), "a's share passed to the claimant");
        drop(r);
        assert_eq!(b.figures(), (2, 256, 2));
        b.release(kc);
        assert_eq!(b.figures(), (1, 128, 2), "c's share is the budget's again");
    }

    #[tokio::test]
    async fn a_claimant_wakes_when_its_victim_is_released() {
        let b = MemoryBudget::<Fake>::new(128);
        let (a, ka) = start(&b, 128);
        let Plan::Evict(mut r, _) = b.plan(128, &[(Instant::now(), &a)]) else {
            panic!("expected an eviction");
        };
        let waiter = tokio::spawn(async move {
            r.ready().await;
            r
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.release(ka);
        let r = waiter.await.unwrap();
        assert!(r.pending.is_none());
        assert_eq!(b.figures(), (1, 128, 1));
    }
}
