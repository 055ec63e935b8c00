//! Auto-forward: every new capture is queued per (bin, target) and delivered in seq order by
//! one worker task per (bin, target), with retries and backoff (DESIGN §8).
//!
//! Bounds: a queue holds at most `--forward-queue` seqs (a full queue records a `queue_full`
//! delivery instead of waiting or growing); queues hold seqs, not captures, so a slow target
//! never pins evicted captures in memory; at most one worker per configured target, spawned
//! on the first capture and retired after a minute idle, or at once when its target is
//! removed from the settings, the bin is deleted or the server shuts down.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::{build_request, client, join_target};
use crate::capture::{Delivery, Timestamp};
use crate::settings::{Settings, MAX_FORWARD_TARGETS};
use crate::state::AppState;
use crate::store::Bin;

/// A worker with nothing to do for this long exits (the next capture spawns a new one).
const IDLE: Duration = Duration::from_secs(60);
/// Longest backoff between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Seqs a single enqueue may catch up (captures whose ingest finished out of order).
const MAX_CATCH_UP: u64 = 1024;

/// The forward queues of one bin.
struct BinQueues {
    /// The bin they belong to (a deleted and re-created id is a different bin).
    bin: Weak<Bin>,
    /// Highest seq handed to the queues: enqueues arrive out of order under concurrent
    /// ingest, so a later seq also enqueues any lower one not yet queued, keeping seq order.
    enqueued_through: u64,
    /// One worker per target URL.
    workers: Vec<WorkerHandle>,
}

struct WorkerHandle {
    url: Arc<str>,
    generation: u64,
    tx: mpsc::Sender<u64>,
}

/// All forward queues of the server.
pub struct Forwarder {
    bins: DashMap<Arc<str>, BinQueues>,
    queue_cap: usize,
    backoff: Duration,
    generations: AtomicU64,
}

impl Forwarder {
    /// Queues of `queue_cap` seqs; retries wait `backoff`, 2×, 4×… (plus jitter).
    pub fn new(queue_cap: usize, backoff: Duration) -> Forwarder {
        Forwarder {
            bins: DashMap::new(),
            queue_cap: queue_cap.max(1),
            backoff,
            generations: AtomicU64::new(0),
        }
    }

    /// Live forward workers of a bin.
    pub fn workers(&self, bin: &str) -> usize {
        self.bins.get(bin).map_or(0, |q| q.workers.len())
    }

    /// Seqs waiting in a bin's queues (not counting the ones being delivered).
    pub fn queued(&self, bin: &str) -> usize {
        self.bins.get(bin).map_or(0, |q| {
            q.workers
                .iter()
                .map(|w| w.tx.max_capacity() - w.tx.capacity())
                .sum()
        })
    }

    /// Forget the queues of bins that are gone (called by the periodic purge).
    pub fn purge(&self) {
        self.bins
            .retain(|_, q| !q.workers.is_empty() || q.bin.strong_count() > 0);
    }

    /// Remove a worker's handle; with `only_if_idle`, only when its queue is empty.
    /// Runs under the map's shard lock, like `enqueue`, so no seq is sent to a retired worker.
    fn retire(
        &self,
        bin: &str,
        generation: u64,
        only_if_idle: Option<&mpsc::Receiver<u64>>,
    ) -> bool {
        let mut retired = false;
        if let Some(mut q) = self.bins.get_mut(bin) {
            if only_if_idle.is_some_and(|rx| !rx.is_empty()) {
                return false;
            }
            let before = q.workers.len();
            q.workers.retain(|w| w.generation != generation);
            retired = q.workers.len() < before;
        }
        // The entry (with `enqueued_through`) outlives idle workers, so a worker restarted
        // later can't skip a capture whose ingest finished out of order; it goes with its bin.
        self.bins.remove_if(bin, |_, q| {
            q.workers.is_empty() && q.bin.strong_count() == 0
        });
        retired || only_if_idle.is_none()
    }

    fn spawn(&self, state: &AppState, bin: &Arc<Bin>, url: &str) -> WorkerHandle {
        let (tx, rx) = mpsc::channel(self.queue_cap);
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(run_worker(
            state.clone(),
            bin.clone(),
            url.to_string(),
            generation,
            rx,
        ));
        WorkerHandle {
            url: url.into(),
            generation,
            tx,
        }
    }
}

/// Queue capture `seq` of `bin` for every forward target in `settings`. Never waits.
pub fn enqueue(state: &AppState, bin: &Arc<Bin>, seq: u64, settings: &Settings) {
    if settings.forward.is_empty() {
        return;
    }
    let fw = &state.deliver.forwards;
    // (target URL, first seq its queue refused): that seq through `seq` are recorded
    // `queue_full` once the queue lock is released. One entry per target at most, kept on
    // the stack: a dead target records one per capture, so this path is hot.
    let mut overflow: [(Option<Arc<str>>, u64); MAX_FORWARD_TARGETS] = Default::default();
    let mut overflowed = 0;
    let mut spill: Vec<(Option<Arc<str>>, u64)> = Vec::new(); // settings are validated: stays empty
    {
        let fresh = || BinQueues {
            bin: Arc::downgrade(bin),
            enqueued_through: bin
                .forward_from()
                .clamp(seq.saturating_sub(MAX_CATCH_UP), seq)
                - 1,
            workers: Vec::new(),
        };
        // Looked up by reference first: the entry API needs an owned key (an `Arc` clone and
        // drop per capture), and the queues exist after the bin's first capture.
        let mut q = match fw.bins.get_mut(&*bin.id) {
            Some(q) => q,
            None => fw.bins.entry(bin.id.clone()).or_insert_with(fresh),
        };
        if q.bin.as_ptr() != Arc::as_ptr(bin) {
            // Same id, new bin: start over (old workers notice their bin is gone and exit).
            *q = fresh();
        }
        if seq <= q.enqueued_through {
            return; // a later capture's enqueue already queued this one, in order
        }
        let from = (q.enqueued_through + 1).max(seq.saturating_sub(MAX_CATCH_UP));
        // Each distinct URL once (first occurrence), without collecting them.
        let targets = &settings.forward;
        let urls = targets
            .iter()
            .enumerate()
            .filter(|(i, t)| !targets[..*i].iter().any(|e| e.url == t.url))
            .map(|(_, t)| t.url.as_str());
        for url in urls {
            let index = match q.workers.iter().position(|w| &*w.url == url) {
                Some(i) => i,
                None => {
                    let handle = fw.spawn(state, bin, url);
                    q.workers.push(handle);
                    q.workers.len() - 1
                }
            };
            for s in from..=seq {
                let queued = match q.workers[index].tx.try_send(s) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => false,
                    Err(TrySendError::Closed(_)) => {
                        // The worker ended (shutdown); a fresh one takes over.
                        let handle = fw.spawn(state, bin, url);
                        let queued = handle.tx.try_send(s).is_ok();
                        q.workers[index] = handle;
                        queued
                    }
                };
                if !queued {
                    // The rest of this catch-up overflows too, rather than queueing seqs
                    // around a refused one.
                    let refused = (Some(q.workers[index].url.clone()), s);
                    match overflow.get_mut(overflowed) {
                        Some(slot) => {
                            *slot = refused;
                            overflowed += 1;
                        }
                        None => spill.push(refused),
                    }
                    break;
                }
            }
        }
        q.enqueued_through = seq;
    }
    // Recorded outside the queue lock: add_delivery takes the bin's ring lock.
    for (url, first) in overflow[..overflowed].iter().chain(&spill) {
        let Some(url) = url else { continue };
        for s in *first..=seq {
            state.record_delivery(bin, s, failed(url.clone(), 0, "queue_full".into()));
        }
    }
}

/// Whether `url` is still a forward target of `bin`, and `bin` still the stored bin.
fn active(state: &AppState, bin: &Arc<Bin>, url: &str) -> bool {
    state
        .store
        .get(&bin.id)
        .is_some_and(|b| Arc::ptr_eq(&b, bin))
        && bin.settings().forward.iter().any(|t| t.url == url)
}

/// Resolves when the target stops being active or the server shuts down.
async fn cancelled(state: &AppState, bin: &Arc<Bin>, url: &str) {
    // Not `subscribe()`: that wakes on every capture, and a worker stuck on a slow target
    // would run this check once per capture for nothing.
    let mut wake = bin.subscribe_config();
    let mut shutdown = state.shutdown.clone();
    loop {
        if !active(state, bin, url) || *shutdown.borrow() {
            return;
        }
        tokio::select! {
            changed = wake.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => {}
        }
    }
}

async fn run_worker(
    state: AppState,
    bin: Arc<Bin>,
    url: String,
    generation: u64,
    mut rx: mpsc::Receiver<u64>,
) {
    let fw = &state.deliver.forwards;
    loop {
        let seq = tokio::select! {
            seq = rx.recv() => match seq {
                Some(seq) => seq,
                None => break,
            },
            () = cancelled(&state, &bin, &url) => break,
            () = tokio::time::sleep(IDLE) => {
                if fw.retire(&bin.id, generation, Some(&rx)) {
                    return;
                }
                continue;
            }
        };
        tokio::select! {
            () = deliver(&state, &bin, &url, seq) => {}
            () = cancelled(&state, &bin, &url) => break,
        }
    }
    fw.retire(&bin.id, generation, None);
}

/// All attempts for one capture: retry on connect error, timeout, 5xx, 429.
async fn deliver(state: &AppState, bin: &Arc<Bin>, url: &str, seq: u64) {
    let Some(capture) = bin.get(seq) else {
        return; // evicted or cleared before its turn: nothing to send, nowhere to record
    };
    let Some(target) = bin
        .settings()
        .forward
        .iter()
        .find(|t| t.url == url)
        .cloned()
    else {
        return;
    };
    let record = |d: Delivery| state.record_delivery(bin, seq, d);
    let uri = match join_target(url, capture.path_suffix(), capture.query()) {
        Ok(u) => u,
        Err(e) => {
            record(failed(url.into(), 1, e.into()));
            return;
        }
    };
    let timeout = Duration::from_millis(target.timeout_ms);
    let headers: Vec<(&[u8], &[u8])> = capture.headers().collect();
    for attempt in 1..=target.retries + 1 {
        let req = match build_request(capture.method(), uri.clone(), &headers, capture.body(), seq)
        {
            Ok(r) => r,
            Err(e) => {
                record(failed(url.into(), 1, e.into()));
                return;
            }
        };
        let outcome = client::execute(&state.deliver.client, req, timeout).await;
        let again = outcome.retryable() && attempt <= target.retries;
        record(outcome.into_delivery(url.into(), attempt, "forward"));
        if !again {
            return;
        }
        tokio::time::sleep(backoff(state.deliver.forwards.backoff, attempt)).await;
    }
}

/// `base × 2^(attempt-1)`, plus up to 25 % jitter so many bins don't retry in lockstep.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << (attempt - 1).min(16))
        .min(MAX_BACKOFF);
    let jitter_range = exp.as_millis() as u64 / 4;
    let jitter = if jitter_range == 0 {
        0
    } else {
        crate::ids::random_u64() % jitter_range
    };
    exp + Duration::from_millis(jitter)
}

/// A forward record with no response: a request that could not be built (`attempt` 1), or
/// a capture its target's full queue refused (`attempt` 0, `queue_full`).
fn failed(target: Arc<str>, attempt: u32, error: Cow<'static, str>) -> Delivery {
    Delivery {
        target,
        attempt,
        at: Timestamp::now(),
        status: None,
        duration_ms: 0.0,
        error: Some(error),
        response_headers: Vec::new(),
        response_body: None,
        via: "forward".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        let base = Duration::from_secs(1);
        for (attempt, secs) in [(1, 1), (2, 2), (3, 4)] {
            let d = backoff(base, attempt);
            assert!(d >= Duration::from_secs(secs), "{d:?}");
            assert!(d <= Duration::from_millis(secs * 1250), "{d:?}");
        }
        assert!(backoff(base, 30) <= MAX_BACKOFF + MAX_BACKOFF / 4);
    }
}
