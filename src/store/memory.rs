//! The in-memory store: a `DashMap` of bins, each a bounded ring of immutable `Arc<Capture>`.
//!
//! Locks: a bin's `ring` mutex is held only to push, pop or clone `Arc`s out (never across
//! an `.await`), so `std::sync::Mutex` is the right tool. There is no global lock on ingest:
//! the map lookup takes one dashmap shard read lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::futures::Notified;
use tokio::sync::{watch, Notify};

use crate::capture::{Capture, CaptureBuilder, CaptureExtra, Delivery, RequestMeta, WsText};
use crate::ids::{self, KeyHash};
use crate::settings::Settings;

/// Non-capture events a bin announces to its viewers, in order with its captures.
#[derive(Clone, Debug)]
pub enum BinEvent {
    /// A delivery attempt for capture `seq`.
    Delivery {
        /// Capture seq.
        seq: u64,
        /// The attempt.
        delivery: Arc<Delivery>,
    },
    /// The buffer was cleared.
    Cleared,
    /// Settings changed.
    Settings(Arc<Settings>),
}

/// Events kept per bin for lagging viewers; older ones are dropped (they're on the captures too).
const EVENT_LOG: usize = 1024;

struct LoggedEvent {
    no: u64,
    /// Last seq assigned when the event happened: viewers deliver it after that capture.
    after_seq: u64,
    event: BinEvent,
}

struct Ring {
    captures: VecDeque<Arc<Capture>>,
    /// Seq the next capture gets.
    next_seq: u64,
    /// Highest seq removed by a clear (gaps up to it are not evictions).
    cleared_through: u64,
    events: VecDeque<LoggedEvent>,
    next_event: u64,
}

/// What a viewer reads next, in order.
#[derive(Clone)]
pub enum Item {
    /// Captures up to this seq were evicted before the viewer read them.
    Evicted(u64),
    /// A capture and its deliveries that the viewer won't get as events (announced before it joined).
    Capture(Arc<Capture>, Vec<Arc<Delivery>>),
    /// A bin event.
    Event(BinEvent),
}

/// A viewer's position: next capture and next event.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cursor {
    /// Highest seq delivered (or skipped).
    pub seq: u64,
    /// Next event number to deliver.
    pub event: u64,
}

/// Snapshot for a viewer's `hello`.
#[derive(Clone, Copy, Debug)]
pub struct RingInfo {
    /// Oldest seq held (0 when empty).
    pub first_seq: u64,
    /// Newest seq assigned (0 before any).
    pub last_seq: u64,
    /// The event cursor to start from (events already in the log are not replayed).
    pub next_event: u64,
}

/// One bin.
pub struct Bin {
    /// Public id.
    pub id: Arc<str>,
    key_hash: Mutex<KeyHash>,
    settings: RwLock<Arc<Settings>>,
    /// Random per bin incarnation; tells clients old seqs are gone.
    pub epoch: u64,
    ring: Mutex<Ring>,
    bytes: AtomicUsize,
    /// Signalled on every change; viewers wait on it (see [`Bin::notified`]).
    notify: Notify,
    /// Bumped only when settings change or the bin is removed: forward workers wait on it,
    /// so a capture (which bumps `notify`) does not wake them.
    config: watch::Sender<u64>,
    created: Instant,
    last_used_s: AtomicU64,
    used: AtomicBool,
    /// The ready bin never expires.
    pinned: bool,
    /// Live viewers (WebSocket sessions) now.
    pub viewers: AtomicUsize,
    /// Viewers between their read of the ring and their wake-up (see [`Bin::waiting`]).
    waiting: AtomicUsize,
    /// First seq the current forward targets apply to (set when `forward` changes).
    forward_from: AtomicU64,
}

impl Bin {
    fn new(id: &str, key_hash: KeyHash, settings: Settings, pinned: bool, epoch: u64) -> Bin {
        Bin {
            id: id.into(),
            key_hash: Mutex::new(key_hash),
            settings: RwLock::new(Arc::new(settings)),
            epoch,
            ring: Mutex::new(Ring {
                captures: VecDeque::new(),
                next_seq: 1,
                cleared_through: 0,
                events: VecDeque::new(),
                next_event: 0,
            }),
            bytes: AtomicUsize::new(0),
            notify: Notify::new(),
            config: watch::channel(0).0,
            created: Instant::now(),
            last_used_s: AtomicU64::new(0),
            used: AtomicBool::new(false),
            pinned,
            viewers: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            forward_from: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Constant-time key check.
    pub fn authorize(&self, key: &str) -> bool {
        let hash = *self.key_hash.lock().unwrap_or_else(|e| e.into_inner());
        ids::key_matches(&hash, key)
    }

    /// The stored key hash.
    pub fn key_hash(&self) -> KeyHash {
        *self.key_hash.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace the stored key hash (a key rotated on another instance).
    pub fn set_key_hash(&self, hash: KeyHash) {
        *self.key_hash.lock().unwrap_or_else(|e| e.into_inner()) = hash;
    }

    /// Whether the bin never expires (the ready bin).
    pub fn pinned(&self) -> bool {
        self.pinned
    }

    /// Replace the key with a fresh random one and return it.
    pub fn rotate_key(&self) -> String {
        let key = ids::random_token();
        *self.key_hash.lock().unwrap_or_else(|e| e.into_inner()) = ids::hash_key(&key);
        key
    }

    /// Current settings.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// First seq the current forward targets apply to: every capture from it on is forwarded,
    /// whatever order concurrent ingests finish in.
    pub fn forward_from(&self) -> u64 {
        self.forward_from.load(Ordering::Relaxed)
    }

    /// Bytes of captures held.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Resolves at the next change of the ring, its events or the bin. A viewer takes a
    /// [`Bin::waiting`] guard and calls `enable()` on this *before* it reads the ring, then
    /// awaits it: a change made after that read wakes it, one made before is in what it read.
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// Counts the caller as waiting for a change until the guard drops. Only waiting viewers
    /// cost ingest a wake-up: one busy sending (or stalled on its socket) does not.
    pub fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(&self.waiting)
    }

    /// Wake-ups for settings changes and removal only.
    pub fn subscribe_config(&self) -> watch::Receiver<u64> {
        self.config.subscribe()
    }

    fn wake(&self) {
        // No viewer waiting, nothing to do, not even the notify's lock, once per capture.
        // Callers change the ring under its lock before waking, and a viewer is counted as
        // waiting before it locks the ring to read, so one counted after this check finds
        // the change in what it reads. (`Notify`, not a `watch`: a watch notify locks each
        // of its eight waiter shards.)
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.notify.notify_waiters();
        }
    }

    fn wake_config(&self) {
        self.config.send_modify(|n| *n = n.wrapping_add(1));
        self.wake();
    }

    fn touch(&self, now_s: u64) {
        self.last_used_s.store(now_s, Ordering::Relaxed);
    }

    /// Ring facts for a viewer's hello.
    pub fn info(&self) -> RingInfo {
        let ring = self.lock();
        RingInfo {
            first_seq: ring.captures.front().map_or(0, |c| c.seq),
            last_seq: ring.next_seq - 1,
            next_event: ring.next_event,
        }
    }

    /// Capture with this seq, if still held.
    pub fn get(&self, seq: u64) -> Option<Arc<Capture>> {
        let ring = self.lock();
        let first = ring.captures.front()?.seq;
        let index = seq.checked_sub(first)?;
        ring.captures.get(index as usize).cloned()
    }

    /// Up to `limit` captures with seq > `since`, oldest first, optionally filtered by `q`.
    pub fn list(&self, since: u64, limit: usize, q: Option<&str>) -> Vec<Arc<Capture>> {
        // Clone the Arcs under the lock, search outside it: a slow query never blocks ingest.
        let candidates: Vec<Arc<Capture>> = {
            let ring = self.lock();
            let first = ring.captures.front().map_or(0, |c| c.seq);
            let skip = since.saturating_sub(first.saturating_sub(1)) as usize;
            match q {
                None => ring
                    .captures
                    .iter()
                    .skip(skip)
                    .take(limit)
                    .cloned()
                    .collect(),
                Some(_) => ring.captures.iter().skip(skip).cloned().collect(),
            }
        };
        match q {
            None => candidates,
            Some(q) => candidates
                .into_iter()
                .filter(|c| c.matches(q))
                .take(limit)
                .collect(),
        }
    }

    /// Read the next items for a viewer, at most `max` captures.
    pub fn read(&self, cursor: &mut Cursor, max: usize, out: &mut Vec<Item>) {
        let ring = self.lock();
        if let Some(oldest) = ring.events.front() {
            cursor.event = cursor.event.max(oldest.no);
        }
        let mut sent = 0usize;
        let first_event =
            (cursor.event - ring.events.front().map_or(cursor.event, |e| e.no)) as usize;
        for logged in ring.events.iter().skip(first_event) {
            if !Self::read_captures(&ring, cursor, logged.after_seq, max, &mut sent, out) {
                return;
            }
            out.push(Item::Event(logged.event.clone()));
            cursor.event = logged.no + 1;
        }
        let last = ring.next_seq - 1;
        Self::read_captures(&ring, cursor, last, max, &mut sent, out);
    }

    /// Push captures with seq in (cursor.seq, upto]; false when the batch is full.
    fn read_captures(
        ring: &Ring,
        cursor: &mut Cursor,
        upto: u64,
        max: usize,
        sent: &mut usize,
        out: &mut Vec<Item>,
    ) -> bool {
        if cursor.seq >= upto {
            return true;
        }
        if cursor.seq < ring.cleared_through.min(upto) {
            cursor.seq = ring.cleared_through.min(upto);
        }
        let first = ring.captures.front().map_or(ring.next_seq, |c| c.seq);
        if cursor.seq + 1 < first {
            let gone = (first - 1).min(upto);
            out.push(Item::Evicted(gone));
            cursor.seq = gone;
        }
        while cursor.seq < upto {
            if *sent >= max {
                return false;
            }
            let index = (cursor.seq + 1 - first) as usize;
            match ring.captures.get(index) {
                Some(c) => out.push(Item::Capture(c.clone(), c.deliveries_before(cursor.event))),
                None => break,
            }
            cursor.seq += 1;
            *sent += 1;
        }
        true
    }

    /// Pop the oldest captures while `more(ring, bytes freed so far)` holds; keeps the bin's
    /// byte count in step and returns (captures evicted, bytes freed).
    fn evict_while(
        ring: &mut Ring,
        bytes: &AtomicUsize,
        mut more: impl FnMut(&Ring, usize) -> bool,
    ) -> (u64, usize) {
        let (mut count, mut freed) = (0u64, 0usize);
        while !ring.captures.is_empty() && more(ring, freed) {
            let old = ring.captures.pop_front().expect("checked non-empty");
            freed += old.cost() + old.deliveries_cost();
            count += 1;
        }
        let held = bytes.load(Ordering::Relaxed);
        bytes.store(held.saturating_sub(freed), Ordering::Relaxed);
        (count, freed)
    }

    fn log_event(ring: &mut Ring, event: BinEvent) -> u64 {
        let after_seq = ring.next_seq - 1;
        Self::log_event_after(ring, event, after_seq)
    }

    /// Log an event that viewers get after capture `after_seq` (a remote event's own position).
    fn log_event_after(ring: &mut Ring, event: BinEvent, after_seq: u64) -> u64 {
        let no = ring.next_event;
        ring.next_event += 1;
        ring.events.push_back(LoggedEvent {
            no,
            after_seq,
            event,
        });
        if ring.events.len() > EVENT_LOG {
            ring.events.pop_front();
        }
        no
    }
}

/// A viewer counted as waiting for its bin's next change; see [`Bin::waiting`].
pub struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a bin could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// --max-bins reached.
    #[error("the server holds the maximum number of bins")]
    Full,
    /// The id is taken.
    #[error("bin id is already in use")]
    Exists,
    /// The shared store (Redis) could not be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// The memory store.
pub struct MemoryStore {
    bins: DashMap<Arc<str>, Arc<Bin>>,
    total_bytes: AtomicUsize,
    max_bins: usize,
    max_bin_bytes: usize,
    max_memory: usize,
    /// Bytes of request bodies still being received (permits taken from this semaphore of
    /// the given size): they share --max-memory with the stored captures.
    in_flight: Option<(Arc<tokio::sync::Semaphore>, usize)>,
    started: Instant,
    evictions: AtomicU64,
}

/// What an insert did to the ring.
pub struct Inserted {
    /// The stored capture.
    pub capture: Arc<Capture>,
    /// Captures evicted to make room (this bin and others).
    pub evicted: u64,
}

impl MemoryStore {
    /// An empty store with the given bounds.
    pub fn new(max_bins: usize, max_bin_bytes: u64, max_memory: u64) -> MemoryStore {
        MemoryStore {
            bins: DashMap::new(),
            total_bytes: AtomicUsize::new(0),
            max_bins,
            max_bin_bytes: max_bin_bytes as usize,
            max_memory: max_memory as usize,
            in_flight: None,
            started: Instant::now(),
            evictions: AtomicU64::new(0),
        }
    }

    /// Count bodies in flight (the used permits of `budget`, of `size` in all) against
    /// --max-memory too, so stored captures plus bodies being received stay within it.
    pub fn sharing_budget_with(mut self, budget: Arc<tokio::sync::Semaphore>, size: usize) -> Self {
        self.in_flight = Some((budget, size));
        self
    }

    /// Bytes of bodies being received now.
    fn in_flight_bytes(&self) -> usize {
        self.in_flight.as_ref().map_or(0, |(sem, size)| {
            size.saturating_sub(sem.available_permits())
        })
    }

    fn now_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Create a bin with this id and key hash.
    pub fn create(
        &self,
        id: &str,
        key_hash: KeyHash,
        settings: Settings,
        pinned: bool,
    ) -> Result<Arc<Bin>, CreateError> {
        let epoch = ids::new_epoch();
        self.create_with_epoch(id, key_hash, settings, pinned, epoch)
    }

    /// Create a bin with a known epoch (a mirror of a bin held by a shared store).
    pub fn create_with_epoch(
        &self,
        id: &str,
        key_hash: KeyHash,
        settings: Settings,
        pinned: bool,
        epoch: u64,
    ) -> Result<Arc<Bin>, CreateError> {
        if self.bins.len() >= self.max_bins {
            return Err(CreateError::Full);
        }
        let bin = Arc::new(Bin::new(id, key_hash, settings, pinned, epoch));
        bin.touch(self.now_s());
        match self.bins.entry(bin.id.clone()) {
            dashmap::mapref::entry::Entry::Occupied(_) => Err(CreateError::Exists),
            dashmap::mapref::entry::Entry::Vacant(slot) => {
                slot.insert(bin.clone());
                Ok(bin)
            }
        }
    }

    /// Look a bin up.
    pub fn get(&self, id: &str) -> Option<Arc<Bin>> {
        self.bins.get(id).map(|b| b.clone())
    }

    /// Ids of the bins held (a snapshot).
    pub fn ids(&self) -> Vec<Arc<str>> {
        self.bins.iter().map(|b| b.key().clone()).collect()
    }

    /// Number of bins.
    pub fn len(&self) -> usize {
        self.bins.len()
    }

    /// Whether there are no bins.
    pub fn is_empty(&self) -> bool {
        self.bins.is_empty()
    }

    /// Bytes of captures held by all bins.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes.load(Ordering::Relaxed)
    }

    /// Captures evicted since start.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Delete a bin and its captures.
    pub fn remove(&self, id: &str) -> bool {
        match self.bins.remove(id) {
            Some((_, bin)) => {
                let ring = bin.lock();
                let freed: usize = ring
                    .captures
                    .iter()
                    .map(|c| c.cost() + c.deliveries_cost())
                    .sum();
                drop(ring);
                self.total_bytes
                    .fetch_sub(freed.min(self.total_bytes()), Ordering::Relaxed);
                bin.wake_config();
                true
            }
            None => false,
        }
    }

    /// Store a capture: assign the next seq, evict to stay within bounds, wake viewers.
    pub fn insert(
        &self,
        bin: &Bin,
        builder: CaptureBuilder,
        meta: RequestMeta,
        extra: CaptureExtra,
    ) -> Inserted {
        let ring = bin.lock();
        // Seq is assigned under the ring lock, so ring order is seq order.
        let seq = ring.next_seq;
        let capture = Arc::new(builder.finish(meta, extra, seq));
        self.push(bin, ring, capture)
    }

    /// Store a capture whose seq a shared store assigned. In order (`seq` = next) it is
    /// appended; an older seq is a duplicate and ignored (`None`). A newer seq means the ones
    /// between are gone from the shared store (trimmed or cleared): with `allow_gap` the ring
    /// drops everything older (viewers are told `evicted`), otherwise nothing is stored.
    pub fn insert_known(
        &self,
        bin: &Bin,
        capture: Arc<Capture>,
        allow_gap: bool,
    ) -> Option<Inserted> {
        let mut ring = bin.lock();
        if capture.seq < ring.next_seq || (capture.seq > ring.next_seq && !allow_gap) {
            return None;
        }
        if capture.seq > ring.next_seq {
            let (_, freed) = Bin::evict_while(&mut ring, &bin.bytes, |_, _| true);
            self.total_bytes.fetch_sub(freed, Ordering::Relaxed);
            ring.next_seq = capture.seq;
        }
        Some(self.push(bin, ring, capture))
    }

    /// Note that seqs up to `last_seq` exist but are gone (cleared) in the shared store,
    /// so the next capture expected is `last_seq + 1`.
    pub fn advance(&self, bin: &Bin, last_seq: u64) {
        let mut ring = bin.lock();
        if ring.next_seq <= last_seq {
            let (_, freed) = Bin::evict_while(&mut ring, &bin.bytes, |_, _| true);
            self.total_bytes.fetch_sub(freed, Ordering::Relaxed);
            ring.next_seq = last_seq + 1;
            ring.cleared_through = last_seq;
            drop(ring);
            bin.wake();
        }
    }

    /// Append `capture` (its seq is `ring.next_seq`) and evict to stay within bounds.
    fn push(
        &self,
        bin: &Bin,
        mut ring: std::sync::MutexGuard<'_, Ring>,
        capture: Arc<Capture>,
    ) -> Inserted {
        let capacity = bin.settings().capacity as usize;
        ring.next_seq = capture.seq + 1;
        let cost = capture.cost();
        let bin_bytes = bin.bytes.fetch_add(cost, Ordering::Relaxed) + cost;
        self.total_bytes.fetch_add(cost, Ordering::Relaxed);
        ring.captures.push_back(capture.clone());
        let evicted = self.evict_after_growth(bin, ring, bin_bytes, capacity);
        bin.used.store(true, Ordering::Relaxed);
        bin.touch(self.now_s());
        bin.wake();
        Inserted { capture, evicted }
    }

    /// `bin` grew to `bin_bytes` (already added to the total): evict its oldest captures
    /// beyond `capacity` or --max-bin-bytes, release the ring, then hold --max-memory.
    /// Returns how many captures that evicted (also added to the eviction count).
    fn evict_after_growth(
        &self,
        bin: &Bin,
        mut ring: std::sync::MutexGuard<'_, Ring>,
        bin_bytes: usize,
        capacity: usize,
    ) -> u64 {
        let max_bin_bytes = self.max_bin_bytes;
        let (mut evicted, freed) = Bin::evict_while(&mut ring, &bin.bytes, |r, freed| {
            r.captures.len() > capacity
                || (bin_bytes.saturating_sub(freed) > max_bin_bytes && r.captures.len() > 1)
        });
        self.total_bytes.fetch_sub(freed, Ordering::Relaxed);
        drop(ring);
        if self.total_bytes() + self.in_flight_bytes() > self.max_memory {
            evicted += self.evict_global();
        }
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
        evicted
    }

    /// Above --max-memory (stored plus in flight): take the oldest captures of the largest bin
    /// until 1/64 below the limit (the slack amortizes the scan over bins).
    fn evict_global(&self) -> u64 {
        let target =
            (self.max_memory - self.max_memory / 64).saturating_sub(self.in_flight_bytes());
        let mut evicted = 0;
        while self.total_bytes() > target {
            let largest = self
                .bins
                .iter()
                .max_by_key(|b| b.bytes())
                .map(|b| b.clone());
            let Some(bin) = largest else { break };
            let (count, freed) = Bin::evict_while(&mut bin.lock(), &bin.bytes, |r, freed| {
                self.total_bytes().saturating_sub(freed) > target && r.captures.len() > 1
            });
            evicted += count;
            if freed == 0 {
                break; // every ring is down to its newest capture
            }
            self.total_bytes.fetch_sub(freed, Ordering::Relaxed);
            bin.wake();
        }
        evicted
    }

    /// Remove all captures of a bin; seq continues.
    pub fn clear(&self, bin: &Bin) {
        let through = bin.lock().next_seq - 1;
        self.clear_through(bin, through);
    }

    /// Remove captures up to seq `through` (a clear, possibly announced by another
    /// instance: later captures this mirror already holds stay); seq continues.
    pub fn clear_through(&self, bin: &Bin, through: u64) {
        let freed;
        {
            let mut ring = bin.lock();
            (_, freed) = Bin::evict_while(&mut ring, &bin.bytes, |r, _| {
                r.captures.front().is_some_and(|c| c.seq <= through)
            });
            if ring.next_seq <= through {
                ring.next_seq = through + 1;
            }
            ring.cleared_through = ring.cleared_through.max(through);
            Bin::log_event_after(&mut ring, BinEvent::Cleared, through);
        }
        self.total_bytes.fetch_sub(freed, Ordering::Relaxed);
        bin.wake();
    }

    /// Replace settings (shrinking capacity evicts the oldest) and announce them.
    pub fn set_settings(&self, bin: &Bin, settings: Settings) -> Arc<Settings> {
        let settings = Arc::new(settings);
        let freed;
        {
            let mut ring = bin.lock();
            let old = std::mem::replace(
                &mut *bin.settings.write().unwrap_or_else(|e| e.into_inner()),
                settings.clone(),
            );
            if old.forward != settings.forward {
                // Seqs are assigned after settings are read, so any capture that saw the new
                // targets gets a seq at or above this one.
                bin.forward_from.store(ring.next_seq, Ordering::Relaxed);
            }
            let capacity = settings.capacity as usize;
            (_, freed) =
                Bin::evict_while(&mut ring, &bin.bytes, |r, _| r.captures.len() > capacity);
            Bin::log_event(&mut ring, BinEvent::Settings(settings.clone()));
        }
        self.total_bytes.fetch_sub(freed, Ordering::Relaxed);
        bin.wake_config();
        settings
    }

    /// The capture's WebSocket frame, built at most once while it is stored and shared by
    /// every viewer. A kept frame is charged to the bin and to --max-memory like the capture
    /// itself (it can be larger: base64 bodies), evicting as an insert would. Returns the
    /// frame and how many captures that evicted.
    pub fn ws_frame(&self, bin: &Bin, capture: &Arc<Capture>) -> (WsText, u64) {
        if let Some(frame) = capture.cached_ws_frame() {
            return (frame, 0);
        }
        // Built outside the lock (large bodies take a while); two viewers may race, and the
        // loser's copy is simply dropped.
        let frame = capture.build_ws_frame();
        let ring = bin.lock();
        let stored = ring
            .captures
            .front()
            .and_then(|first| capture.seq.checked_sub(first.seq))
            .and_then(|i| ring.captures.get(i as usize))
            .is_some_and(|c| Arc::ptr_eq(c, capture));
        if !stored || !capture.keep_ws_frame(frame.clone()) {
            // Evicted meanwhile (not worth keeping), or another viewer kept one first.
            return (capture.cached_ws_frame().unwrap_or(frame), 0);
        }
        let size = frame.len();
        let bin_bytes = bin.bytes.fetch_add(size, Ordering::Relaxed) + size;
        self.total_bytes.fetch_add(size, Ordering::Relaxed);
        // The capture count did not change: only the byte limits can evict.
        let evicted = self.evict_after_growth(bin, ring, bin_bytes, usize::MAX);
        if evicted > 0 {
            bin.wake();
        }
        (frame, evicted)
    }

    /// Attach a delivery to capture `seq` and announce it; false if the capture is gone.
    pub fn add_delivery(&self, bin: &Bin, seq: u64, delivery: Delivery) -> bool {
        let delivery = Arc::new(delivery);
        {
            let mut ring = bin.lock();
            let Some(first) = ring.captures.front().map(|c| c.seq) else {
                return false;
            };
            let Some(index) = seq
                .checked_sub(first)
                .map(|i| i as usize)
                .filter(|&i| i < ring.captures.len())
            else {
                return false;
            };
            let no = Bin::log_event(
                &mut ring,
                BinEvent::Delivery {
                    seq,
                    delivery: delivery.clone(),
                },
            );
            // Under the ring lock: the capture is borrowed, not cloned.
            let delta = ring.captures[index].push_delivery(no, delivery);
            let bin_bytes = bin.bytes.load(Ordering::Relaxed) as isize + delta;
            bin.bytes
                .store(bin_bytes.max(0) as usize, Ordering::Relaxed);
            if delta >= 0 {
                self.total_bytes
                    .fetch_add(delta as usize, Ordering::Relaxed);
            } else {
                self.total_bytes
                    .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
            }
        }
        bin.wake();
        true
    }

    /// Mark a bin used by the API (idle TTL).
    pub fn touch(&self, bin: &Bin) {
        bin.touch(self.now_s());
    }

    /// Drop idle bins: unused ones after `unused_ttl`, others after `idle_ttl` without traffic.
    pub fn purge_expired(&self, idle_ttl: Duration, unused_ttl: Duration) -> usize {
        let now = self.now_s();
        let expired: Vec<Arc<str>> = self
            .bins
            .iter()
            .filter(|b| !b.pinned && b.viewers.load(Ordering::Relaxed) == 0)
            .filter(|b| {
                let idle = now.saturating_sub(b.last_used_s.load(Ordering::Relaxed));
                if b.used.load(Ordering::Relaxed) {
                    idle >= idle_ttl.as_secs()
                } else {
                    b.created.elapsed() >= unused_ttl && idle >= unused_ttl.as_secs()
                }
            })
            .map(|b| b.id.clone())
            .collect();
        for id in &expired {
            self.remove(id);
        }
        expired.len()
    }
}
