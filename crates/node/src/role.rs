//! The node's role, decided by a small state machine: events and the current time in, actions
//! out. It performs no I/O; [`crate::run`] carries out its actions (lease requests, following
//! the primary, serving as the primary) and feeds the results back as events.
//!
//! The cycle: look up who holds the lease; follow that primary; or, on a candidate, take the
//! lease when nobody holds it, unless this node is behind what the cluster has committed. As the
//! primary, keep the lease alive; when a keep-alive has not succeeded for a while, stop taking
//! writes (fence) before the lease can have passed to another node, and step down once it may
//! have. Every failure is retried with a growing delay.

use std::time::{Duration, Instant};

use litefs_lease::{Lease, Lookup, PrimaryInfo};

/// How long a blocking lookup waits for the lease key to change.
pub const WATCH_WAIT: Duration = Duration::from_secs(10);
/// The longest wait between attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// When a fresher candidate announced itself, how soon to look at the lease again.
pub const YIELD_RETRY: Duration = Duration::from_millis(200);
/// How often to look at the lease when there is no key to block on.
pub const WATCH_POLL: Duration = Duration::from_millis(500);
/// After a failed acquire (another node won, or Consul's lock-delay), how soon to look again.
pub const ACQUIRE_RETRY: Duration = Duration::from_millis(100);

/// The machine's settings.
#[derive(Clone, Debug)]
pub struct Timing {
    /// `lease.reconnect-delay`: the first wait after a failure.
    pub reconnect_delay: Duration,
    /// `lease.stale-timeout`: how long a candidate behind the cluster's position waits for a
    /// fresher node before it may take the lease anyway (`None`: never).
    pub stale_timeout: Option<Duration>,
    /// `lease.demote-delay`: after stepping down on request, how long not to compete.
    pub demote_delay: Duration,
}

/// Where the node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting until `at` to look up the lease (blocking on changes past `watch` if set).
    Idle {
        /// When to look.
        at: Instant,
        /// A blocking lookup: return when the key changes past this index, or after the wait.
        watch: Option<(u64, Duration)>,
    },
    /// A lookup is in flight.
    LookingUp,
    /// An acquire is in flight.
    Acquiring {
        /// When it was sent (the lease's hold counts from then).
        sent: Instant,
    },
    /// This node holds the lease.
    Primary(Held),
    /// Following the primary.
    Following {
        /// The primary.
        primary: PrimaryInfo,
        /// Its lease id.
        lease: String,
    },
    /// Handing the lease to another node: writes are fenced while it catches up.
    HandingOff(Held),
    /// Shut down.
    Stopped,
}

/// A held lease and how sure this node is of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The lease.
    pub lease: Lease,
    /// Until when the lease is surely held (the start of the last successful keep-alive plus
    /// the lease's hold).
    pub held_until: Instant,
    /// Writes are refused until a keep-alive succeeds again.
    pub fenced: bool,
    /// When the next keep-alive is due.
    pub next_keep_alive: Instant,
    /// A keep-alive is in flight (sent then).
    pub in_flight: Option<Instant>,
    /// Writes wait until then: the lease was taken soon after Consul failed to answer (or
    /// answered with an older index, having lost its state), so a former primary may not have
    /// noticed yet that its lease is gone; it stops writing by its own fence, which this
    /// waits out.
    pub settling_until: Option<Instant>,
}

impl Held {
    /// When writes must stop: the lease is surely held until `held_until`, and what was
    /// accepted must be refused well before; keep 40% of the hold as a margin.
    fn fence_at(&self) -> Instant {
        self.held_until - self.lease.hold * 2 / 5
    }

    /// Whether writes may be taken at `now`: before the fence, and after any settling wait.
    fn may_write(&self, now: Instant) -> bool {
        now < self.fence_at() && self.settling_until.is_none_or(|t| now >= t)
    }

    /// The keep-alive in flight succeeded; the hold counts from `from`.
    fn kept_alive(&mut self, now: Instant, from: Instant) {
        self.in_flight = None;
        self.held_until = self.held_until.max(from + self.lease.hold);
        self.next_keep_alive = now + self.lease.keep_alive_every;
    }
}

/// What happened.
#[derive(Clone, Debug)]
pub enum Event {
    /// A deadline the machine asked for passed.
    Tick,
    /// A lookup answered. `behind`: the databases where this node is behind the cluster's
    /// published position (name, local TXID, cluster TXID). `own`: the key holds this node's
    /// own advertise URL (a lease of a previous run of this node).
    LookedUp {
        /// What the lease key holds.
        lookup: Lookup,
        /// Where this node is behind the cluster.
        behind: Vec<(String, u64, u64)>,
        /// The holder is this node itself.
        own: bool,
        /// A fresher candidate is about to take the free lease (its hostname): let it.
        yield_to: Option<String>,
    },
    /// A lookup failed (Consul unreachable, or this node belongs to another cluster).
    LookupFailed,
    /// An acquire answered: the lease, or `None` if another node holds it.
    Acquired(Option<Lease>),
    /// An acquire failed.
    AcquireFailed,
    /// A keep-alive of lease `lease` succeeded; the lease's hold counts from `from`.
    KeptAlive {
        /// The lease id.
        lease: String,
        /// From when the hold counts (the keep-alive's start, or the last renewal).
        from: Instant,
    },
    /// A keep-alive of lease `lease` failed; `expired`: the lease is gone for sure.
    KeepAliveFailed {
        /// The lease id.
        lease: String,
        /// The lease is gone.
        expired: bool,
    },
    /// Following ended: the primary handed this node its lease, or the stream ended (`failed`:
    /// with an error, or before it was ever established).
    FollowEnded {
        /// The lease id handed to this node.
        handoff: Option<String>,
        /// The stream failed.
        failed: bool,
    },
    /// Someone asked the primary to hand its lease to a replica.
    HandoffRequested,
    /// The hand-off finished: the replica got the lease (`true`), or it could not be done.
    HandoffDone(bool),
    /// The node is shutting down.
    Shutdown,
    /// The data directory failed (its file system turned read-only or stopped answering):
    /// this node gives up the lease if it holds it, and stops competing for it.
    DiskFailed,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Look up the lease (blocking on changes past the index, up to the wait, if given).
    LookUp(Option<(u64, Duration)>),
    /// Try to take the lease.
    Acquire,
    /// Take over the lease handed to this node.
    AcquireExisting(String),
    /// Keep the lease alive.
    KeepAlive(Lease),
    /// Become the primary: take writes, serve replicas.
    BecomePrimary(Lease),
    /// Refuse writes (`true`) or take them again (`false`), still as the primary.
    Fence(bool),
    /// Stop being the primary: refuse writes, end the replicas' streams.
    StepDown,
    /// Give the lease up.
    Release(Lease),
    /// Follow this primary.
    Follow(PrimaryInfo),
    /// Hand the lease over: send it to the requested replica once it has every transaction.
    SendHandoff(Lease),
    /// Stop following (shutdown).
    StopFollowing,
}

/// Gives a held lease up at once: no more writes, then the lease goes (the others can take it
/// at once), then the replicas' streams end (and they look for the new primary).
fn give_up(h: Held, out: &mut Vec<Action>) {
    out.push(Action::Fence(true));
    out.push(Action::Release(h.lease));
    out.push(Action::StepDown);
}

/// The role state machine.
#[derive(Debug)]
pub struct Machine {
    phase: Phase,
    candidate: bool,
    timing: Timing,
    /// Consecutive failures (the retry delay doubles with each).
    failures: u32,
    /// When this node first found itself behind the cluster, while nobody held the lease.
    stale_since: Option<Instant>,
    /// Not competing for the lease until then (after a hand-off or a demotion).
    quiet_until: Option<Instant>,
    /// The lease followed last, and whether following it failed: a blocking lookup then waits
    /// for the key to change instead of reconnecting at once.
    last_followed: Option<String>,
    /// When Consul last failed to answer, or answered with a lower index than before (it lost
    /// its state).
    consul_trouble: Option<Instant>,
    /// The highest index Consul answered with.
    max_index: u64,
}

impl Machine {
    /// A machine that looks up the lease at once.
    pub fn new(candidate: bool, timing: Timing, now: Instant) -> Machine {
        Machine {
            phase: Phase::Idle {
                at: now,
                watch: None,
            },
            candidate,
            timing,
            failures: 0,
            stale_since: None,
            quiet_until: None,
            last_followed: None,
            consul_trouble: None,
            max_index: 0,
        }
    }

    /// Where the node is.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Until when writes may be accepted without the lease being confirmed again: the fence
    /// time, while this node is the primary and not fenced (`None` otherwise, when writes are
    /// refused anyway).
    pub fn writable_until(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Primary(h) if !h.fenced => Some(h.fence_at()),
            _ => None,
        }
    }

    /// True while this node holds the lease (handing off included).
    pub fn is_primary(&self) -> bool {
        matches!(self.phase, Phase::Primary(_) | Phase::HandingOff(_))
    }

    /// The next time [`Event::Tick`] must be delivered, if any.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Idle { at, .. } => Some(*at),
            Phase::Primary(h) => {
                let mut d = h.held_until;
                if !h.fenced {
                    d = d.min(h.fence_at());
                }
                if let Some(t) = h.settling_until.filter(|_| h.fenced) {
                    d = d.min(t);
                }
                if h.in_flight.is_none() {
                    d = d.min(h.next_keep_alive);
                }
                Some(d)
            }
            Phase::HandingOff(h) => Some(if h.in_flight.is_none() {
                h.held_until.min(h.next_keep_alive)
            } else {
                h.held_until
            }),
            _ => None,
        }
    }

    fn retry_delay(&mut self) -> Duration {
        let shift = self.failures.min(8);
        self.failures = self.failures.saturating_add(1);
        (self.timing.reconnect_delay.max(Duration::from_millis(10)) * (1u32 << shift))
            .min(MAX_RETRY_DELAY)
    }

    fn idle(&mut self, at: Instant, watch: Option<(u64, Duration)>) {
        self.phase = match watch {
            // Nothing to block on (the key does not exist): look again a moment later.
            Some((0, wait)) => Phase::Idle {
                at: at + wait.min(WATCH_POLL),
                watch: None,
            },
            watch => Phase::Idle { at, watch },
        };
    }

    /// Feeds one event; returns what to do, in order.
    pub fn on(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if let Event::Shutdown = event {
            match std::mem::replace(&mut self.phase, Phase::Stopped) {
                Phase::Primary(h) | Phase::HandingOff(h) => {
                    give_up(h, &mut out);
                }
                Phase::Following { .. } => out.push(Action::StopFollowing),
                _ => {}
            }
            return out;
        }
        match &event {
            Event::LookupFailed | Event::AcquireFailed | Event::KeepAliveFailed { .. } => {
                self.consul_trouble = Some(now);
            }
            Event::LookedUp { lookup, .. } if lookup.index > 0 => {
                if lookup.index < self.max_index {
                    // Consul lost its state (a restarted dev agent, a rebuilt cluster): its
                    // sessions with it.
                    self.consul_trouble = Some(now);
                }
                self.max_index = lookup.index;
            }
            _ => {}
        }
        if let Event::DiskFailed = event {
            self.candidate = false;
            match std::mem::replace(&mut self.phase, Phase::Stopped) {
                Phase::Primary(h) | Phase::HandingOff(h) => {
                    // As at shutdown; then this node follows whoever takes the lease.
                    give_up(h, &mut out);
                    self.idle(now, None);
                }
                other => self.phase = other,
            }
            return out;
        }
        // A keep-alive answer for another lease than the one held now (sent before a step-down)
        // says nothing about this one.
        if let Event::KeptAlive { lease, .. } | Event::KeepAliveFailed { lease, .. } = &event {
            let current = match &self.phase {
                Phase::Primary(h) | Phase::HandingOff(h) => Some(h.lease.id.as_str()),
                _ => None,
            };
            if current != Some(lease.as_str()) {
                return out;
            }
        }
        let phase = std::mem::replace(&mut self.phase, Phase::Stopped);
        match (phase, event) {
            (Phase::Stopped, _) => {}
            (Phase::Idle { at, watch }, Event::Tick) => {
                if now >= at {
                    self.phase = Phase::LookingUp;
                    out.push(Action::LookUp(watch));
                } else {
                    self.phase = Phase::Idle { at, watch };
                }
            }
            (
                Phase::LookingUp,
                Event::LookedUp {
                    lookup,
                    behind,
                    own,
                    yield_to,
                },
            ) => self.looked_up(now, lookup, behind, own, yield_to, &mut out),
            (Phase::LookingUp, Event::LookupFailed) => {
                let d = self.retry_delay();
                self.idle(now + d, None);
            }
            (Phase::Acquiring { sent }, Event::Acquired(Some(lease))) => {
                self.failures = 0;
                self.stale_since = None;
                self.last_followed = None;
                // A former primary stops writing by its fence at the latest: 60% of the hold
                // after its last keep-alive, which was before Consul's trouble, so before this
                // acquire was sent. Without trouble within a hold, Consul gave the lease away
                // only after the former session ended (its holder fenced long before).
                let settling_until = self
                    .consul_trouble
                    .filter(|t| now.saturating_duration_since(*t) < lease.hold)
                    .map(|_| sent + lease.hold * 3 / 5)
                    .filter(|t| *t > now);
                let held = Held {
                    held_until: sent + lease.hold,
                    fenced: settling_until.is_some(),
                    next_keep_alive: now + lease.keep_alive_every,
                    in_flight: None,
                    settling_until,
                    lease: lease.clone(),
                };
                self.phase = Phase::Primary(held);
                out.push(Action::BecomePrimary(lease));
                if let Some(t) = settling_until {
                    tracing::warn!(
                        wait = ?t.saturating_duration_since(now),
                        "the lease was taken just after Consul was in trouble: writes wait until a \
                         former primary has surely stopped taking them"
                    );
                    out.push(Action::Fence(true));
                }
            }
            (Phase::Acquiring { .. }, Event::Acquired(None)) => {
                // Another node took it, or the lock-delay still runs: look again soon.
                self.idle(now + ACQUIRE_RETRY, None);
            }
            (Phase::Acquiring { .. }, Event::AcquireFailed) => {
                let d = self.retry_delay();
                self.idle(now + d, None);
            }
            (Phase::Primary(mut h), Event::Tick) => {
                if now >= h.held_until {
                    // The lease may have passed to another node by now.
                    tracing::warn!("the lease could not be kept alive: stepping down");
                    out.push(Action::StepDown);
                    let d = self.retry_delay();
                    self.idle(now + d, None);
                    return out;
                }
                if !h.fenced && now >= h.fence_at() {
                    h.fenced = true;
                    out.push(Action::Fence(true));
                }
                if h.fenced && h.settling_until.is_some_and(|t| now >= t) {
                    h.settling_until = None;
                    if h.may_write(now) {
                        h.fenced = false;
                        out.push(Action::Fence(false));
                    }
                }
                if h.in_flight.is_none() && now >= h.next_keep_alive {
                    h.in_flight = Some(now);
                    out.push(Action::KeepAlive(h.lease.clone()));
                }
                self.phase = Phase::Primary(h);
            }
            (Phase::Primary(mut h), Event::KeptAlive { from, .. }) => {
                h.kept_alive(now, from);
                if h.fenced && h.may_write(now) {
                    h.fenced = false;
                    out.push(Action::Fence(false));
                }
                self.phase = Phase::Primary(h);
            }
            (Phase::HandingOff(mut h), Event::KeptAlive { from, .. }) => {
                // Writes stay fenced until the hand-off ends.
                h.kept_alive(now, from);
                self.phase = Phase::HandingOff(h);
            }
            (
                Phase::Primary(_) | Phase::HandingOff(_),
                Event::KeepAliveFailed { expired: true, .. },
            ) => {
                tracing::warn!("the lease is gone: stepping down");
                out.push(Action::StepDown);
                let d = self.retry_delay();
                self.idle(now + d, None);
            }
            (Phase::Primary(mut h), Event::KeepAliveFailed { expired: false, .. }) => {
                h.in_flight = None;
                // Try again soon; the fence deadline runs meanwhile.
                h.next_keep_alive = now + h.lease.keep_alive_every.min(Duration::from_secs(1));
                self.phase = Phase::Primary(h);
            }
            (Phase::Primary(mut h), Event::HandoffRequested) => {
                if !h.fenced {
                    out.push(Action::Fence(true));
                }
                h.fenced = true;
                out.push(Action::SendHandoff(h.lease.clone()));
                self.phase = Phase::HandingOff(h);
            }
            (Phase::HandingOff(_), Event::HandoffDone(true)) => {
                out.push(Action::StepDown);
                self.quiet_until = Some(now + self.timing.demote_delay);
                self.idle(now, None);
            }
            (Phase::HandingOff(mut h), Event::HandoffDone(false)) => {
                if h.may_write(now) {
                    h.fenced = false;
                    out.push(Action::Fence(false));
                }
                self.phase = Phase::Primary(h);
                // A keep-alive decides at once whether the lease is still safe to write under.
                self.on_primary_tick_now(now, &mut out);
            }
            (Phase::HandingOff(mut h), Event::Tick) => {
                if now >= h.held_until {
                    out.push(Action::StepDown);
                    let d = self.retry_delay();
                    self.idle(now + d, None);
                } else {
                    if h.in_flight.is_none() && now >= h.next_keep_alive {
                        h.in_flight = Some(now);
                        out.push(Action::KeepAlive(h.lease.clone()));
                    }
                    self.phase = Phase::HandingOff(h);
                }
            }
            (Phase::HandingOff(mut h), Event::KeepAliveFailed { expired: false, .. }) => {
                h.in_flight = None;
                h.next_keep_alive = now + h.lease.keep_alive_every.min(Duration::from_secs(1));
                self.phase = Phase::HandingOff(h);
            }
            (Phase::Following { lease, .. }, Event::FollowEnded { handoff, failed }) => {
                if let Some(id) = handoff {
                    if self.candidate {
                        self.phase = Phase::Acquiring { sent: now };
                        out.push(Action::AcquireExisting(id));
                        return out;
                    }
                    // Never on a non-candidate: the lease ends with its session, and the
                    // candidates elect a primary.
                    tracing::warn!("the primary handed its lease to this node, which is not a candidate: refused");
                }
                if failed {
                    // The primary may be gone: wait for its key to change, up to the retry
                    // delay, before trying it again.
                    let d = self.retry_delay();
                    self.last_followed = Some(lease);
                    self.phase = Phase::LookingUp;
                    out.push(Action::LookUp(Some((0, d))));
                } else {
                    self.failures = 0;
                    self.last_followed = None;
                    self.phase = Phase::LookingUp;
                    out.push(Action::LookUp(None));
                }
            }
            (phase, _) => {
                // An event that does not apply to this phase (a late answer): ignore it.
                self.phase = phase;
            }
        }
        out
    }

    /// Makes the next keep-alive due now.
    fn on_primary_tick_now(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Phase::Primary(h) = &mut self.phase {
            if h.in_flight.is_none() {
                h.in_flight = Some(now);
                out.push(Action::KeepAlive(h.lease.clone()));
            }
        }
    }

    fn looked_up(
        &mut self,
        now: Instant,
        lookup: Lookup,
        behind: Vec<(String, u64, u64)>,
        own: bool,
        yield_to: Option<String>,
        out: &mut Vec<Action>,
    ) {
        let index = lookup.index;
        match lookup.primary {
            Some((info, lease)) if !own => {
                if self.last_followed.as_deref() == Some(lease.as_str()) && index > 0 {
                    // Following this lease just failed; its key has a blocking index now:
                    // wait for it to change (or for the retry delay) before following again.
                    let d = self.retry_delay();
                    self.last_followed = None;
                    self.phase = Phase::LookingUp;
                    out.push(Action::LookUp(Some((index, d))));
                    return;
                }
                self.stale_since = None;
                self.phase = Phase::Following {
                    primary: info.clone(),
                    lease,
                };
                out.push(Action::Follow(info));
            }
            Some(_) => {
                // A lease of this node's previous run: it ends with its session.
                self.idle(now, Some((index, WATCH_WAIT)));
            }
            None => {
                let quiet = self.quiet_until.is_some_and(|t| now < t);
                if !self.candidate || quiet {
                    let wait = match self.quiet_until {
                        Some(t) if now < t => (t - now).min(WATCH_WAIT),
                        _ => WATCH_WAIT,
                    };
                    self.idle(now, Some((index, wait)));
                    return;
                }
                if !behind.is_empty() {
                    let since = *self.stale_since.get_or_insert(now);
                    let waited = now - since;
                    match self.timing.stale_timeout {
                        Some(t) if waited >= t => {
                            tracing::warn!(
                                waited = ?waited,
                                "no fresher node came back: taking the lease although this node is behind the cluster ({})",
                                describe_behind(&behind)
                            );
                        }
                        limit => {
                            if waited.is_zero() {
                                tracing::warn!(
                                    "this node is behind what the cluster committed ({}): it will not take the lease while a fresher node may come back{}",
                                    describe_behind(&behind),
                                    match limit {
                                        Some(t) => format!(" (for {t:?})"),
                                        None => String::new(),
                                    }
                                );
                            }
                            let wait = limit.map_or(WATCH_WAIT, |t| (t - waited).min(WATCH_WAIT));
                            self.idle(now, Some((index, wait.max(Duration::from_millis(10)))));
                            return;
                        }
                    }
                }
                if let Some(host) = yield_to {
                    // It has more of the cluster's transactions; if it does not take the lease
                    // (it died), its announcement ages out and this node goes ahead.
                    tracing::info!(fresher = %host, "a fresher candidate is taking the lease: waiting for it");
                    self.idle(now + YIELD_RETRY, None);
                    return;
                }
                self.phase = Phase::Acquiring { sent: now };
                out.push(Action::Acquire);
            }
        }
    }

    /// True if this node would take a free lease now (a candidate, not in its demote delay).
    pub fn competing(&self, now: Instant) -> bool {
        self.candidate && self.quiet_until.is_none_or(|t| now >= t)
    }
}

/// `db 3 < 7, other 0 < 2`.
pub fn describe_behind(behind: &[(String, u64, u64)]) -> String {
    behind
        .iter()
        .map(|(n, have, want)| format!("{n} at TXID {have}, cluster at {want}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_millis(2500);

    fn timing() -> Timing {
        Timing {
            reconnect_delay: Duration::from_millis(100),
            stale_timeout: None,
            demote_delay: Duration::from_secs(10),
        }
    }

    fn lease() -> Lease {
        Lease {
            id: "s1".into(),
            hold: HOLD,
            keep_alive_every: HOLD / 5,
        }
    }

    fn kept(from: Instant) -> Event {
        Event::KeptAlive {
            lease: "s1".into(),
            from,
        }
    }

    fn failed(expired: bool) -> Event {
        Event::KeepAliveFailed {
            lease: "s1".into(),
            expired,
        }
    }

    fn info(n: u16) -> PrimaryInfo {
        PrimaryInfo {
            hostname: format!("node{n}"),
            advertise_url: format!("http://127.0.0.1:{n}"),
            proxy_url: String::new(),
        }
    }

    fn held(info: PrimaryInfo, lease: &str, index: u64) -> Event {
        Event::LookedUp {
            lookup: Lookup {
                primary: Some((info, lease.into())),
                index,
            },
            behind: Vec::new(),
            own: false,
            yield_to: None,
        }
    }

    fn free(index: u64, behind: Vec<(String, u64, u64)>) -> Event {
        Event::LookedUp {
            lookup: Lookup {
                primary: None,
                index,
            },
            behind,
            own: false,
            yield_to: None,
        }
    }

    /// A candidate that became primary at `t0`.
    fn primary_at(t0: Instant) -> Machine {
        let mut m = Machine::new(true, timing(), t0);
        assert_eq!(m.on(t0, Event::Tick), vec![Action::LookUp(None)]);
        assert_eq!(m.on(t0, free(7, Vec::new())), vec![Action::Acquire]);
        assert_eq!(
            m.on(t0, Event::Acquired(Some(lease()))),
            vec![Action::BecomePrimary(lease())]
        );
        assert!(m.is_primary());
        m
    }

    #[test]
    fn a_free_lease_is_taken_by_a_candidate_and_a_held_one_is_followed() {
        let t0 = Instant::now();
        primary_at(t0);

        let mut m = Machine::new(true, timing(), t0);
        m.on(t0, Event::Tick);
        assert_eq!(
            m.on(t0, held(info(1), "s9", 3)),
            vec![Action::Follow(info(1))]
        );
        assert!(!m.is_primary());
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn a_non_candidate_never_acquires_it_watches_the_key() {
        let t0 = Instant::now();
        let mut m = Machine::new(false, timing(), t0);
        m.on(t0, Event::Tick);
        assert!(m.on(t0, free(7, Vec::new())).is_empty());
        assert_eq!(m.deadline(), Some(t0));
        assert_eq!(
            m.on(t0, Event::Tick),
            vec![Action::LookUp(Some((7, WATCH_WAIT)))]
        );
        assert!(m.on(t0, free(8, Vec::new())).is_empty());
    }

    #[test]
    fn a_lost_race_looks_again_soon() {
        let t0 = Instant::now();
        let mut m = Machine::new(true, timing(), t0);
        m.on(t0, Event::Tick);
        m.on(t0, free(7, Vec::new()));
        assert!(m.on(t0, Event::Acquired(None)).is_empty());
        assert_eq!(m.deadline(), Some(t0 + ACQUIRE_RETRY));
        assert!(m.on(t0, Event::Tick).is_empty(), "not due yet");
        let t1 = t0 + ACQUIRE_RETRY;
        assert_eq!(m.on(t1, Event::Tick), vec![Action::LookUp(None)]);
        assert_eq!(
            m.on(t1, held(info(2), "s2", 9)),
            vec![Action::Follow(info(2))]
        );
    }

    #[test]
    fn the_primary_keeps_its_lease_alive_on_schedule() {
        let t0 = Instant::now();
        let mut m = primary_at(t0);
        let every = HOLD / 5;
        assert_eq!(m.deadline(), Some(t0 + every));
        let t1 = t0 + every;
        assert_eq!(m.on(t1, Event::Tick), vec![Action::KeepAlive(lease())]);
        // Only one keep-alive in flight at a time.
        assert!(m.on(t1, Event::Tick).is_empty());
        assert!(m.on(t1 + Duration::from_millis(10), kept(t1)).is_empty());
        match m.phase() {
            Phase::Primary(h) => {
                assert_eq!(h.held_until, t1 + HOLD);
                assert!(!h.fenced);
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn a_primary_that_cannot_renew_fences_before_its_lease_can_pass_then_steps_down() {
        let t0 = Instant::now();
        let mut m = primary_at(t0);
        let mut fenced_at = None;
        let mut stepped_down_at = None;
        // Every keep-alive fails (Consul unreachable); tick at every deadline.
        for _ in 0..100 {
            let Some(now) = m.deadline() else { break };
            for a in m.on(now, Event::Tick) {
                match a {
                    Action::KeepAlive(_) => {
                        assert!(m.on(now, failed(false)).is_empty());
                    }
                    Action::Fence(true) => fenced_at = Some(now),
                    Action::StepDown => stepped_down_at = Some(now),
                    a => panic!("unexpected {a:?}"),
                }
            }
            if stepped_down_at.is_some() {
                break;
            }
        }
        let fenced_at = fenced_at.expect("fenced");
        let stepped_down_at = stepped_down_at.expect("stepped down");
        // The lease counts from the acquire's start; writes stop with 40% of the hold left,
        // and the node steps down when the hold is over, before Consul can give it away.
        assert_eq!(fenced_at, t0 + HOLD * 3 / 5);
        assert_eq!(stepped_down_at, t0 + HOLD);
        assert!(!m.is_primary());
        assert!(matches!(m.phase(), Phase::Idle { .. }));
    }

    #[test]
    fn a_renewal_that_succeeds_again_lifts_the_fence() {
        let t0 = Instant::now();
        let mut m = primary_at(t0);
        let fence = t0 + HOLD * 3 / 5;
        // The first keep-alive hangs (in flight) past the fence time.
        let t1 = t0 + HOLD / 5;
        assert_eq!(m.on(t1, Event::Tick), vec![Action::KeepAlive(lease())]);
        assert_eq!(m.on(fence, Event::Tick), vec![Action::Fence(true)]);
        // It succeeds: the lease counts from when it was sent, so the hold is renewed.
        assert_eq!(
            m.on(fence + Duration::from_millis(1), kept(t1)),
            vec![Action::Fence(false)]
        );
        assert!(m.is_primary());
    }

    #[test]
    fn a_late_success_that_leaves_too_little_hold_keeps_the_fence() {
        let t0 = Instant::now();
        let mut m = primary_at(t0);
        let t1 = t0 + HOLD / 5;
        m.on(t1, Event::Tick);
        m.on(t0 + HOLD * 3 / 5, Event::Tick);
        // Sent at t1, answered just before the hold ends: held until t1 + HOLD, whose fence
        // time (t1 + 60% of HOLD) has passed already.
        let late = t1 + HOLD * 3 / 5 + Duration::from_millis(1);
        assert!(m.on(late, kept(t1)).is_empty());
        match m.phase() {
            Phase::Primary(h) => assert!(h.fenced),
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn an_expired_lease_steps_down_at_once() {
        let t0 = Instant::now();
        let mut m = primary_at(t0);
        let t1 = t0 + HOLD / 5;
        m.on(t1, Event::Tick);
        assert_eq!(m.on(t1, failed(true)), vec![Action::StepDown]);
        assert!(!m.is_primary());
        // A late keep-alive answer is ignored.
        assert!(m.on(t1, kept(t1)).is_empty());
        assert!(!m.is_primary());
    }

    #[test]
    fn an_answer_for_an_earlier_lease_is_ignored() {
        let t0 = Instant::now();
        let mut m = primary_at(t0);
        let t1 = t0 + HOLD / 5;
        m.on(t1, Event::Tick);
        let stale = Event::KeepAliveFailed {
            lease: "s0".into(),
            expired: true,
        };
        assert!(m.on(t1, stale).is_empty());
        assert!(m.is_primary());
    }

    #[test]
    fn a_lease_taken_just_after_consul_was_in_trouble_waits_out_a_former_primarys_fence() {
        let t0 = Instant::now();
        let mut m = Machine::new(true, timing(), t0);
        assert_eq!(m.on(t0, Event::Tick), vec![Action::LookUp(None)]);
        // Consul does not answer, then answers that the key is free.
        assert!(m.on(t0, Event::LookupFailed).is_empty());
        let t1 = m.deadline().unwrap();
        assert_eq!(m.on(t1, Event::Tick), vec![Action::LookUp(None)]);
        assert_eq!(m.on(t1, free(3, Vec::new())), vec![Action::Acquire]);
        assert_eq!(
            m.on(t1, Event::Acquired(Some(lease()))),
            vec![Action::BecomePrimary(lease()), Action::Fence(true)]
        );
        assert_eq!(m.writable_until(), None);
        let settled = t1 + HOLD * 3 / 5;
        // Keep-alives go on meanwhile, and do not end the wait.
        let t2 = t1 + HOLD / 5;
        assert_eq!(m.on(t2, Event::Tick), vec![Action::KeepAlive(lease())]);
        assert!(m.on(t2, kept(t2)).is_empty());
        assert_eq!(m.writable_until(), None);
        assert!(m.deadline().unwrap() <= settled);
        let _ = m.on(t1 + HOLD * 2 / 5, Event::Tick);
        let _ = m.on(t1 + HOLD * 2 / 5, kept(t1 + HOLD * 2 / 5));
        assert_eq!(m.writable_until(), None);
        assert!(m.on(settled, Event::Tick).contains(&Action::Fence(false)));
        assert!(m.writable_until().is_some());
    }

    #[test]
    fn a_lease_taken_with_consul_answering_all_along_is_written_at_once() {
        let t0 = Instant::now();
        assert!(primary_at(t0).writable_until().is_some());
        // Trouble longer than a hold ago does not count either.
        let mut m2 = Machine::new(true, timing(), t0);
        let _ = m2.on(t0, Event::Tick);
        let _ = m2.on(t0, Event::LookupFailed);
        let t1 = t0 + HOLD * 2;
        let _ = m2.on(t1, Event::Tick);
        assert_eq!(m2.on(t1, free(3, Vec::new())), vec![Action::Acquire]);
        assert_eq!(
            m2.on(t1, Event::Acquired(Some(lease()))),
            vec![Action::BecomePrimary(lease())]
        );
        assert!(m2.writable_until().is_some());
    }

    #[test]
    fn a_consul_index_that_goes_back_counts_as_trouble() {
        let t0 = Instant::now();
        let mut m = Machine::new(true, timing(), t0);
        let _ = m.on(t0, Event::Tick);
        // Another node holds the key at index 50; then Consul answers with index 4.
        let _ = m.on(t0, held(info(2), "s9", 50));
        let _ = m.on(
            t0,
            Event::FollowEnded {
                handoff: None,
                failed: true,
            },
        );
        let t1 = m.deadline().unwrap_or(t0);
        let _ = m.on(t1, Event::Tick);
        assert_eq!(m.on(t1, free(4, Vec::new())), vec![Action::Acquire]);
        assert_eq!(
            m.on(t1, Event::Acquired(Some(lease()))),
            vec![Action::BecomePrimary(lease()), Action::Fence(true)]
        );
    }

    #[test]
    fn a_primary_whose_disk_failed_gives_the_lease_up_and_never_takes_it_again() {
        let t0 = Instant::now();
        let mut m = primary_at(t0);
        assert_eq!(
            m.on(t0, Event::DiskFailed),
            vec![
                Action::Fence(true),
                Action::Release(lease()),
                Action::StepDown
            ]
        );
        assert!(!m.is_primary());
        assert!(!m.competing(t0));
        // A free lease is looked up, then left to the others.
        assert!(matches!(m.on(t0, Event::Tick)[..], [Action::LookUp(_)]));
        let actions = m.on(t0, free(9, Vec::new()));
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Acquire | Action::AcquireExisting(_))),
            "{actions:?}"
        );
        // And a held one is followed.
        let t1 = t0 + Duration::from_secs(10);
        let _ = m.on(t1, Event::Tick);
        let actions = m.on(t1, held(info(2), "s2", 10));
        assert!(
            actions.iter().any(|a| matches!(a, Action::Follow(_))),
            "{actions:?}"
        );
    }

    #[test]
    fn a_non_candidate_refuses_a_handed_over_lease() {
        let t0 = Instant::now();
        let mut m = Machine::new(false, timing(), t0);
        m.on(t0, Event::Tick);
        m.on(t0, held(info(1), "s1", 4));
        assert_eq!(
            m.on(
                t0,
                Event::FollowEnded {
                    handoff: Some("s1".into()),
                    failed: false
                }
            ),
            vec![Action::LookUp(None)]
        );
    }

    #[test]
    fn without_a_key_to_block_on_the_lease_is_polled() {
        let t0 = Instant::now();
        let mut m = Machine::new(false, timing(), t0);
        m.on(t0, Event::Tick);
        assert!(m.on(t0, free(0, Vec::new())).is_empty());
        assert_eq!(m.deadline(), Some(t0 + WATCH_POLL));
        assert!(m.on(t0, Event::Tick).is_empty());
        assert_eq!(
            m.on(t0 + WATCH_POLL, Event::Tick),
            vec![Action::LookUp(None)]
        );
    }

    #[test]
    fn shutdown_fences_releases_then_steps_down() {
        let t0 = Instant::now();
        let mut m = primary_at(t0);
        assert_eq!(
            m.on(t0, Event::Shutdown),
            vec![
                Action::Fence(true),
                Action::Release(lease()),
                Action::StepDown
            ]
        );
        assert_eq!(m.phase(), &Phase::Stopped);
        assert!(m.on(t0, Event::Tick).is_empty());

        let mut r = Machine::new(true, timing(), t0);
        r.on(t0, Event::Tick);
        r.on(t0, held(info(1), "s1", 1));
        assert_eq!(r.on(t0, Event::Shutdown), vec![Action::StopFollowing]);
    }

    #[test]
    fn a_candidate_lets_a_fresher_one_take_the_lease() {
        let t0 = Instant::now();
        let mut m = Machine::new(true, timing(), t0);
        m.on(t0, Event::Tick);
        let fresher = Event::LookedUp {
            lookup: Lookup {
                primary: None,
                index: 5,
            },
            behind: Vec::new(),
            own: false,
            yield_to: Some("node2".into()),
        };
        assert!(m.on(t0, fresher).is_empty());
        assert_eq!(m.deadline(), Some(t0 + YIELD_RETRY));
        let t1 = t0 + YIELD_RETRY;
        assert_eq!(m.on(t1, Event::Tick), vec![Action::LookUp(None)]);
        assert_eq!(
            m.on(t1, held(info(2), "s2", 6)),
            vec![Action::Follow(info(2))]
        );
    }

    #[test]
    fn a_stale_candidate_waits_for_a_fresher_node() {
        let t0 = Instant::now();
        let behind = vec![("db".to_owned(), 3, 10)];
        let mut m = Machine::new(true, timing(), t0);
        m.on(t0, Event::Tick);
        assert!(m.on(t0, free(5, behind.clone())).is_empty());
        assert_eq!(
            m.on(t0, Event::Tick),
            vec![Action::LookUp(Some((5, WATCH_WAIT)))]
        );
        // Still nobody, still behind, a minute later: still waiting (no timeout set).
        let t1 = t0 + Duration::from_secs(60);
        assert!(m.on(t1, free(6, behind)).is_empty());
        // A fresher node took the lease: follow it.
        m.on(t1, Event::Tick);
        assert_eq!(
            m.on(t1, held(info(3), "s3", 7)),
            vec![Action::Follow(info(3))]
        );
    }

    #[test]
    fn a_stale_candidate_takes_the_lease_after_the_stale_timeout() {
        let t0 = Instant::now();
        let behind = vec![("db".to_owned(), 3, 10)];
        let mut m = Machine::new(
            true,
            Timing {
                stale_timeout: Some(Duration::from_secs(30)),
                ..timing()
            },
            t0,
        );
        m.on(t0, Event::Tick);
        assert!(m.on(t0, free(5, behind.clone())).is_empty());
        // The blocking lookup waits no longer than what is left of the timeout.
        assert_eq!(
            m.on(t0, Event::Tick),
            vec![Action::LookUp(Some((5, WATCH_WAIT)))]
        );
        let t1 = t0 + Duration::from_secs(25);
        assert!(m.on(t1, free(5, behind.clone())).is_empty());
        assert_eq!(
            m.on(t1, Event::Tick),
            vec![Action::LookUp(Some((5, Duration::from_secs(5))))]
        );
        let t2 = t0 + Duration::from_secs(30);
        assert_eq!(m.on(t2, free(5, behind)), vec![Action::Acquire]);
    }

    #[test]
    fn a_failed_stream_waits_for_the_key_to_change_before_following_again() {
        let t0 = Instant::now();
        let mut m = Machine::new(true, timing(), t0);
        m.on(t0, Event::Tick);
        m.on(t0, held(info(1), "s1", 4));
        let first = timing().reconnect_delay;
        assert_eq!(
            m.on(
                t0,
                Event::FollowEnded {
                    handoff: None,
                    failed: true
                }
            ),
            vec![Action::LookUp(Some((0, first)))]
        );
        // The same lease still holds the key: block on it rather than reconnect at once.
        assert_eq!(
            m.on(t0, held(info(1), "s1", 4)),
            vec![Action::LookUp(Some((4, first * 2)))]
        );
        // The key was deleted (the primary's session ended): take it.
        assert_eq!(m.on(t0, free(5, Vec::new())), vec![Action::Acquire]);
    }

    #[test]
    fn a_handed_over_lease_is_taken_over() {
        let t0 = Instant::now();
        let mut m = Machine::new(true, timing(), t0);
        m.on(t0, Event::Tick);
        m.on(t0, held(info(1), "s1", 4));
        assert_eq!(
            m.on(
                t0,
                Event::FollowEnded {
                    handoff: Some("s1".into()),
                    failed: false
                }
            ),
            vec![Action::AcquireExisting("s1".into())]
        );
        assert_eq!(
            m.on(t0, Event::Acquired(Some(lease()))),
            vec![Action::BecomePrimary(lease())]
        );
    }

    #[test]
    fn a_hand_off_fences_first_then_steps_down_and_stays_quiet() {
        let t0 = Instant::now();
        let mut m = primary_at(t0);
        assert_eq!(
            m.on(t0, Event::HandoffRequested),
            vec![Action::Fence(true), Action::SendHandoff(lease())]
        );
        // Keep-alives go on while the replica catches up; writes stay fenced.
        let t1 = t0 + HOLD / 5;
        assert_eq!(m.on(t1, Event::Tick), vec![Action::KeepAlive(lease())]);
        assert!(m.on(t1, kept(t1)).is_empty());
        assert_eq!(m.on(t1, Event::HandoffDone(true)), vec![Action::StepDown]);
        assert!(!m.is_primary());
        // The lease is free a moment later (say the new primary died): no competing during
        // the demote delay.
        assert_eq!(m.on(t1, Event::Tick), vec![Action::LookUp(None)]);
        assert!(m.on(t1, free(9, Vec::new())).is_empty());
        assert_eq!(
            m.on(t1, Event::Tick),
            vec![Action::LookUp(Some((9, Duration::from_secs(10))))]
        );
        let later = t1 + Duration::from_secs(10);
        assert_eq!(m.on(later, free(9, Vec::new())), vec![Action::Acquire]);
    }

    #[test]
    fn a_failed_hand_off_lifts_the_fence_and_checks_the_lease() {
        let t0 = Instant::now();
        let mut m = primary_at(t0);
        m.on(t0, Event::HandoffRequested);
        assert_eq!(
            m.on(t0, Event::HandoffDone(false)),
            vec![Action::Fence(false), Action::KeepAlive(lease())]
        );
        assert!(m.is_primary());
    }

    #[test]
    fn failures_back_off_up_to_the_bound() {
        let t0 = Instant::now();
        let mut m = Machine::new(true, timing(), t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert_eq!(m.on(now, Event::Tick), vec![Action::LookUp(None)]);
            assert!(m.on(now, Event::LookupFailed).is_empty());
            let d = m.deadline().unwrap();
            waits.push(d - now);
            now = d;
        }
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn the_nodes_own_old_lease_is_waited_out() {
        let t0 = Instant::now();
        let mut m = Machine::new(true, timing(), t0);
        m.on(t0, Event::Tick);
        let own = Event::LookedUp {
            lookup: Lookup {
                primary: Some((info(1), "old".into())),
                index: 3,
            },
            behind: Vec::new(),
            own: true,
            yield_to: None,
        };
        assert!(m.on(t0, own).is_empty());
        assert_eq!(
            m.on(t0, Event::Tick),
            vec![Action::LookUp(Some((3, WATCH_WAIT)))]
        );
    }
}
