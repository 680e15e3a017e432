//! What the pool holds and what it has done: [`Stats`], [`DestinationStats`], [`Counters`].

/// A snapshot of a pool, from [`Pool::stats`](crate::Pool::stats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats<A> {
    /// One entry per destination with at least one connection (held or idle), in no set order.
    pub destinations: Vec<DestinationStats<A>>,
    /// What the pool has done since it was built.
    pub counters: Counters,
}

impl<A: PartialEq> Stats<A> {
    /// The entry for `addr`, if the pool has connections to it.
    pub fn destination(&self, addr: &A) -> Option<&DestinationStats<A>> {
        self.destinations.iter().find(|d| d.addr == *addr)
    }
}

impl<A> Stats<A> {
    /// Connections across all destinations, held and idle.
    pub fn total(&self) -> usize {
        self.destinations.iter().map(|d| d.total).sum()
    }

    /// Idle connections across all destinations.
    pub fn idle(&self) -> usize {
        self.destinations.iter().map(|d| d.idle).sum()
    }
}

/// The connections of one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationStats<A> {
    /// The destination.
    pub addr: A,
    /// Connections to it: those held by callers plus the idle ones.
    pub total: usize,
    /// Idle connections to it, ready to be reused.
    pub idle: usize,
    /// Callers queued for a free slot, the destination being at `max_open_per_host`. A
    /// destination is listed only while it has connections held or idle, so callers queued
    /// while its only connections are still being dialed do not show here (they are in
    /// [`Counters::waits`]).
    pub waiting: usize,
}

/// Counts of what a pool has done since it was built.
///
/// Every dialed connection ends in exactly one place, so
/// `dials == idle + held + closed() + detached` at any quiet moment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Gets answered with a connection already open: an idle one, or one a return handed
    /// straight to a get waiting in line at `max_open_per_host`.
    pub hits: u64,
    /// Connections dialed successfully.
    pub dials: u64,
    /// Dials that failed with an error of the dialer's (those abandoned after `dial_timeout` are
    /// counted in `dial_timeouts` instead).
    pub dial_errors: u64,
    /// Idle connections closed because their idle time was up.
    pub closed_expired: u64,
    /// Returned connections closed because their destination already had `capacity` idle.
    pub closed_over_capacity: u64,
    /// Connections closed because [`Dialer::is_open`](crate::Dialer::is_open) said no.
    pub closed_not_open: u64,
    /// Connections closed by [`Pooled::release`](crate::Pooled::release), or dropped after their
    /// stream was shut down through the guard (`poll_close`, `poll_shutdown`) or with a read,
    /// write or flush through it left unfinished (counted as `closed_panicking` or
    /// `closed_pool_closed` instead when that applies).
    pub released: u64,
    /// Connections closed because the pool was closed (idle ones at once, held ones on return,
    /// and dials that finished after the close).
    pub closed_pool_closed: u64,
    /// Idle connections closed by [`Pool::purge`](crate::Pool::purge).
    pub closed_purged: u64,
    /// Connections closed because they were dropped while their thread was panicking.
    pub closed_panicking: u64,
    /// Connections taken out of the pool by [`Pooled::detach`](crate::Pooled::detach).
    pub detached: u64,
    /// Gets and dials that found their destination at `max_open_per_host`: queued, or, with a
    /// zero `wait_timeout`, turned away at once.
    pub waits: u64,
    /// Gets and dials whose `wait_timeout` passed before they were served (at once with a zero
    /// one).
    pub wait_timeouts: u64,
    /// Dials abandoned after `dial_timeout`.
    pub dial_timeouts: u64,
    /// Connections closed because they were older than `max_lifetime`.
    pub closed_lifetime: u64,
    /// Idle connections closed to make room: the least recently used one when `max_idle_total` was
    /// reached, or one closed so that a [`Pool::dial`](crate::Pool::dial) at
    /// `max_open_per_host` could open a fresh connection.
    pub closed_evicted: u64,
}

impl Counters {
    /// Connections the pool has closed, for any reason.
    pub fn closed(&self) -> u64 {
        self.closed_expired
            + self.closed_over_capacity
            + self.closed_not_open
            + self.released
            + self.closed_pool_closed
            + self.closed_purged
            + self.closed_panicking
            + self.closed_lifetime
            + self.closed_evicted
    }

    pub(crate) fn add(&mut self, other: &Counters) {
        let Counters {
            hits,
            dials,
            dial_errors,
            closed_expired,
            closed_over_capacity,
            closed_not_open,
            released,
            closed_pool_closed,
            closed_purged,
            closed_panicking,
            detached,
            waits,
            wait_timeouts,
            dial_timeouts,
            closed_lifetime,
            closed_evicted,
        } = other;
        self.hits += hits;
        self.dials += dials;
        self.dial_errors += dial_errors;
        self.closed_expired += closed_expired;
        self.closed_over_capacity += closed_over_capacity;
        self.closed_not_open += closed_not_open;
        self.released += released;
        self.closed_pool_closed += closed_pool_closed;
        self.closed_purged += closed_purged;
        self.closed_panicking += closed_panicking;
        self.detached += detached;
        self.waits += waits;
        self.wait_timeouts += wait_timeouts;
        self.dial_timeouts += dial_timeouts;
        self.closed_lifetime += closed_lifetime;
        self.closed_evicted += closed_evicted;
    }
}
