//! The Redis backend (DESIGN §9): Redis is the source of truth and the bus between
//! instances; each instance keeps a [`MemoryStore`] as its local mirror.
//!
//! Keys per bin `<id>`:
//! - `hr:bin:<id>` hash: `settings` (JSON incl. the verify secret), `capacity`, `key` (hex
//!   SHA-256 of the key, never the key), `epoch`, `pinned`, `created`, `seq` (last seq).
//! - `hr:cap:<id>` stream: one entry per capture, id `<seq>-0`, field `c` = the capture's
//!   compact encoding ([`CaptureBuilder::encode`]).
//! - `hr:dl:<id>` hash: seq → that capture's last 50 deliveries, one JSON per line.
//! - `hr:fwd:<id>`: the forward lease (which instance forwards this bin's captures).
//! - `hr:ev:<id>`: pub/sub channel of the bin's events.
//!
//! Ingest runs one Lua script: `HINCRBY seq` + `XADD <seq>-0 MAXLEN = capacity` + `PUBLISH`,
//! atomically, so instances never collide, capacity holds exactly and every instance hears
//! captures in seq order. Each instance `PSUBSCRIBE`s `hr:ev:*` and applies events to the
//! bins it mirrors; a seq gap (a reconnect, a bin loaded late) is filled from the stream in
//! pages (`XRANGE`) before anything newer is inserted, so viewers keep the no-gap/no-dup
//! guarantee, and what `MAXLEN` trimmed meanwhile is reported as `evicted`.
//!
//! Forwarding: each capture must be forwarded once per target however many instances run.
//! The instance holding a bin's forward lease (`SET NX`-style, renewed while it forwards,
//! [`LEASE`] long) enqueues every capture of the bin as it enters its mirror, in seq order;
//! the others don't. If the holder dies, forwards pause until the lease lapses, then the
//! next instance to see a capture takes over (captures in between are not forwarded).
//!
//! Bounds: pub/sub messages are applied inline by one task, so the only backlog is Redis's
//! own `client-output-buffer-limit` for pub/sub clients (past it Redis drops the connection,
//! and the reconnect catches up from the streams); catch-up reads are pages of [`PAGE`]
//! entries; the lease's pending seqs are capped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, Script};
use dashmap::DashMap;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{Bin, CreateError, Inserted, MemoryStore, StoreError};
use crate::capture::{
    Capture, CaptureBuilder, CaptureExtra, Delivery, RequestMeta, MAX_DELIVERIES,
};
use crate::ids::{self, KeyHash};
use crate::settings::Settings;

/// Called with each capture this instance must forward, in seq order per bin.
pub type ForwardHook = Box<dyn Fn(&Arc<Bin>, u64) + Send + Sync>;

/// Longest wait for one Redis operation: past it the request answers 503.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Stream entries read per catch-up page (bodies may be up to --max-body each).
const PAGE: usize = 32;
/// How long a forward lease lasts without renewal. Longer than the forward workers' idle
/// retirement (60 s), so a previous holder's stale queue state is gone before it can win again.
pub const LEASE: Duration = Duration::from_secs(90);
/// Seqs remembered while a lease claim is in flight.
const MAX_PENDING: usize = 1024;
/// Health check period.
const PING_EVERY: Duration = Duration::from_millis(500);
/// Striped locks that serialize catch-ups per bin (bounded, unlike a lock per id).
const SYNC_STRIPES: usize = 64;
/// Key expiry is pushed back by API use at most this often per bin.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Bins that never received a capture expire after this long (DESIGN §9).
const UNUSED_TTL_S: u64 = 3600;

const CAPTURE_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local cap = tonumber(redis.call('HGET', KEYS[1], 'capacity'))
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', cap, seq .. '-0', 'c', ARGV[1])
if seq > cap then redis.call('HDEL', KEYS[3], tostring(seq - cap)) end
if redis.call('HGET', KEYS[1], 'pinned') ~= '1' then
  local ttl = tonumber(ARGV[2])
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
end
redis.call('PUBLISH', ARGV[3], 'c' .. ARGV[4] .. seq .. ':' .. ARGV[1])
return seq
";

const DELIVERY_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local id = ARGV[1] .. '-0'
if #redis.call('XRANGE', KEYS[2], id, id) == 0 then return 0 end
local cur = redis.call('HGET', KEYS[3], ARGV[1]) or ''
local n = 0
for _ in string.gmatch(cur, '\n') do n = n + 1 end
local max = tonumber(ARGV[6])
while n >= max do
  local i = string.find(cur, '\n', 1, true)
  cur = string.sub(cur, i + 1)
  n = n - 1
end
redis.call('HSET', KEYS[3], ARGV[1], cur .. ARGV[2] .. '\n')
if redis.call('HGET', KEYS[1], 'pinned') ~= '1' then redis.call('EXPIRE', KEYS[3], tonumber(ARGV[5])) end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
";

const CLEAR_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local seq = redis.call('HGET', KEYS[1], 'seq') or '0'
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[1], 'x' .. ARGV[2] .. seq)
return tonumber(seq)
";

const SETTINGS_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'settings', ARGV[1], 'capacity', ARGV[2])
redis.call('XTRIM', KEYS[2], 'MAXLEN', tonumber(ARGV[2]))
redis.call('PUBLISH', ARGV[3], 's' .. ARGV[4] .. ARGV[1])
return 1
";

const KEY_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'key', ARGV[1])
redis.call('PUBLISH', ARGV[2], 'k' .. ARGV[3] .. ARGV[1])
return 1
";

const DELETE_LUA: &str = r"
local n = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
if n == 1 then redis.call('PUBLISH', ARGV[1], 'D' .. ARGV[2]) end
return n
";

const CREATE_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'settings', ARGV[1], 'capacity', ARGV[2], 'key', ARGV[3],
  'epoch', ARGV[4], 'pinned', ARGV[5], 'created', ARGV[6], 'seq', 0)
if ARGV[5] ~= '1' then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7])) end
return 1
";

const PIN_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'pinned', '1')
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
redis.call('PERSIST', KEYS[3])
return 1
";

const LEASE_LUA: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, tonumber(ARGV[2])}
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(ARGV[2])}
end
return {0, redis.call('PTTL', KEYS[1])}
";

const TOUCH_LUA: &str = r"
if redis.call('HGET', KEYS[1], 'pinned') ~= '0' then return 0 end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[1]))
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[1]))
return 1
";

struct Scripts {
    capture: Script,
    delivery: Script,
    clear: Script,
    settings: Script,
    key: Script,
    delete: Script,
    create: Script,
    pin: Script,
    lease: Script,
    touch: Script,
}

/// What this instance knows about a bin's forward lease.
#[derive(Default)]
struct Lease {
    /// Whether this instance holds it.
    mine: bool,
    /// Until when that knowledge holds.
    until: Option<Instant>,
    /// A claim or renewal is in flight.
    claiming: bool,
    /// Seqs seen while the claim is in flight (handed to the hook if we win).
    pending: Vec<u64>,
}

/// A bin's stored fields.
struct BinRecord {
    settings: Settings,
    key_hash: KeyHash,
    epoch: u64,
    pinned: bool,
    seq: u64,
}

/// The Redis store: connection, scripts and the tasks that keep the local mirror current.
pub struct RedisStore {
    mem: Arc<MemoryStore>,
    conn: ConnectionManager,
    /// Random id of this instance; events it published itself are not applied twice.
    origin: String,
    /// Last health check (and pub/sub) state.
    healthy: AtomicBool,
    /// Pub/sub connection state.
    subscribed: AtomicBool,
    bin_ttl_s: u64,
    scripts: Scripts,
    sync_locks: Vec<tokio::sync::Mutex<()>>,
    leases: DashMap<Arc<str>, Lease>,
    touched: DashMap<Arc<str>, Instant>,
    forward_hook: OnceLock<ForwardHook>,
    stop: watch::Sender<bool>,
    /// Permits for fire-and-forget writes (deliveries, touches): bounded while Redis is slow or down.
    background: Arc<tokio::sync::Semaphore>,
}

/// Most fire-and-forget Redis writes in flight; beyond it they are dropped (and logged).
const MAX_BACKGROUND_WRITES: usize = 1024;

fn bin_key(id: &str) -> String {
    format!("hr:bin:{id}")
}
fn cap_key(id: &str) -> String {
    format!("hr:cap:{id}")
}
fn dl_key(id: &str) -> String {
    format!("hr:dl:{id}")
}
fn fwd_key(id: &str) -> String {
    format!("hr:fwd:{id}")
}
fn channel(id: &str) -> String {
    format!("hr:ev:{id}")
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// Connect (failing fast when Redis is unreachable), subscribe, start the background tasks.
    pub async fn connect(
        url: &str,
        mem: Arc<MemoryStore>,
        bin_ttl_s: u64,
    ) -> Result<Arc<RedisStore>, StoreError> {
        let client = Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("bad --store URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            OP_TIMEOUT * 2,
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| StoreError::Unavailable(format!("connecting to {url} timed out")))?
        .map_err(|e| StoreError::Unavailable(format!("cannot connect to {url}: {e}")))?;
        let pubsub = subscribe(&client)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot subscribe at {url}: {e}")))?;
        let (stop, _) = watch::channel(false);
        let store = Arc::new(RedisStore {
            mem,
            conn,
            origin: format!("{:016x}", ids::random_u64()),
            healthy: AtomicBool::new(true),
            subscribed: AtomicBool::new(true),
            bin_ttl_s: bin_ttl_s.max(1),
            scripts: Scripts {
                capture: Script::new(CAPTURE_LUA),
                delivery: Script::new(DELIVERY_LUA),
                clear: Script::new(CLEAR_LUA),
                settings: Script::new(SETTINGS_LUA),
                key: Script::new(KEY_LUA),
                delete: Script::new(DELETE_LUA),
                create: Script::new(CREATE_LUA),
                pin: Script::new(PIN_LUA),
                lease: Script::new(LEASE_LUA),
                touch: Script::new(TOUCH_LUA),
            },
            sync_locks: (0..SYNC_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            leases: DashMap::new(),
            touched: DashMap::new(),
            forward_hook: OnceLock::new(),
            stop,
            background: Arc::new(tokio::sync::Semaphore::new(MAX_BACKGROUND_WRITES)),
        });
        // The tasks hold a Weak: dropping the store (or `close`) ends them.
        tokio::spawn(pubsub_loop(
            Arc::downgrade(&store),
            client.clone(),
            Some(pubsub),
            store.stop.subscribe(),
        ));
        tokio::spawn(health_loop(Arc::downgrade(&store), store.stop.subscribe()));
        Ok(store)
    }

    /// Whether Redis answers and the event subscription is up.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.subscribed.load(Ordering::Relaxed)
    }

    /// Install the forward hook (once).
    pub fn set_forward_hook(&self, hook: ForwardHook) {
        let _ = self.forward_hook.set(hook);
    }

    /// Stop the background tasks.
    pub fn close(&self) {
        let _ = self.stop.send(true);
    }

    /// Run one Redis operation with a deadline; connection trouble marks the store unhealthy.
    async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, RedisError>>,
    {
        match tokio::time::timeout(OP_TIMEOUT, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                {
                    self.healthy.store(false, Ordering::Relaxed);
                }
                Err(unavailable(e))
            }
            Err(_) => {
                self.healthy.store(false, Ordering::Relaxed);
                Err(StoreError::Unavailable(
                    "Redis did not answer in time".into(),
                ))
            }
        }
    }

    fn sync_lock(&self, id: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        // A fixed-key hasher: the same id must always map to the same stripe.
        let mut fixed = std::hash::DefaultHasher::new();
        id.hash(&mut fixed);
        &self.sync_locks[(fixed.finish() as usize) % SYNC_STRIPES]
    }

    /// Read a bin's record; `None` when it doesn't exist.
    async fn read_record(&self, id: &str) -> Result<Option<BinRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, Vec<u8>> = self
            .run(
                ::redis::cmd("HGETALL")
                    .arg(bin_key(id))
                    .query_async(&mut conn),
            )
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let text = |name: &str| {
            fields
                .get(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .unwrap_or("")
        };
        let bad = |what: &str| StoreError::Unavailable(format!("bin {id}: unreadable {what}"));
        let settings: Settings =
            serde_json::from_str(text("settings")).map_err(|_| bad("settings"))?;
        let mut key_hash = [0u8; 32];
        hex::decode_to_slice(text("key"), &mut key_hash).map_err(|_| bad("key hash"))?;
        Ok(Some(BinRecord {
            settings,
            key_hash,
            epoch: text("epoch").parse().map_err(|_| bad("epoch"))?,
            pinned: text("pinned") == "1",
            seq: text("seq").parse().unwrap_or(0),
        }))
    }

    /// Mirror a bin held by Redis (created by another instance, or before a restart).
    pub async fn load(self: &Arc<Self>, id: &str) -> Result<Option<Arc<Bin>>, StoreError> {
        if ids::validate_bin_id(id).is_err() {
            return Ok(None); // never a stored id: no round trip for junk paths
        }
        let Some(record) = self.read_record(id).await? else {
            return Ok(None);
        };
        let bin = match self.mem.create_with_epoch(
            id,
            record.key_hash,
            record.settings,
            record.pinned,
            record.epoch,
        ) {
            Ok(bin) => bin,
            Err(CreateError::Exists) => return Ok(self.mem.get(id)),
            Err(e) => return Err(StoreError::Unavailable(e.to_string())),
        };
        // History is not forwarded: only captures that arrive from now on are.
        self.sync(&bin, false).await?;
        Ok(Some(bin))
    }

    /// Bring a mirrored bin up to date for a REST read; false if the bin is gone.
    pub async fn refresh(self: &Arc<Self>, bin: &Arc<Bin>) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let (seq, epoch): (Option<u64>, Option<u64>) = self
            .run(
                ::redis::cmd("HMGET")
                    .arg(bin_key(&bin.id))
                    .arg("seq")
                    .arg("epoch")
                    .query_async(&mut conn),
            )
            .await?;
        let (Some(seq), Some(epoch)) = (seq, epoch) else {
            self.drop_mirror(bin);
            return Ok(false);
        };
        if epoch != bin.epoch {
            // Deleted and re-created under the same id: the mirror is of the old bin.
            self.drop_mirror(bin);
            return Ok(false);
        }
        if seq > bin.info().last_seq {
            self.sync(bin, true).await?;
        }
        Ok(true)
    }

    fn drop_mirror(&self, bin: &Arc<Bin>) {
        if self.mem.get(&bin.id).is_some_and(|b| Arc::ptr_eq(&b, bin)) {
            self.mem.remove(&bin.id);
        }
        self.leases.remove(&bin.id);
    }

    /// Fill the mirror from the stream: every entry after the mirror's last seq, in pages.
    /// Serialized per bin, so gap inserts never race each other.
    async fn sync(self: &Arc<Self>, bin: &Arc<Bin>, forward: bool) -> Result<(), StoreError> {
        let _guard = self.sync_lock(&bin.id).lock().await;
        let id = &*bin.id;
        let mut conn = self.conn.clone();
        // Seqs up to this one exist or are gone; read first so the stream read can't miss any.
        let target: Option<u64> = self
            .run(
                ::redis::cmd("HGET")
                    .arg(bin_key(id))
                    .arg("seq")
                    .query_async(&mut conn),
            )
            .await?;
        let Some(target) = target else {
            self.drop_mirror(bin);
            return Err(StoreError::Gone);
        };
        loop {
            let from = bin.info().last_seq + 1;
            let entries: Vec<(String, Vec<Vec<u8>>)> = self
                .run(
                    ::redis::cmd("XRANGE")
                        .arg(cap_key(id))
                        .arg(format!("{from}-0"))
                        .arg("+")
                        .arg("COUNT")
                        .arg(PAGE)
                        .query_async(&mut conn),
                )
                .await?;
            let mut seqs = Vec::with_capacity(entries.len());
            for (entry_id, fields) in &entries {
                let Some(seq) = entry_id
                    .split('-')
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                else {
                    continue;
                };
                let Some(payload) = fields.get(1) else {
                    continue;
                };
                match Capture::decode(bin.id.clone(), seq, payload) {
                    Some(capture) => {
                        if self.apply(bin, Arc::new(capture), true, forward) {
                            seqs.push(seq);
                        }
                    }
                    None => tracing::warn!(bin = %id, seq, "undecodable capture in Redis skipped"),
                }
            }
            if !seqs.is_empty() {
                self.load_deliveries(bin, &seqs).await?;
            }
            if entries.len() < PAGE {
                break;
            }
        }
        // Whatever up to `target` the stream didn't hold was cleared.
        self.mem.advance(bin, target);
        Ok(())
    }

    /// Copy the stored deliveries of these captures into the mirror.
    async fn load_deliveries(&self, bin: &Bin, seqs: &[u64]) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let lists: Vec<Option<String>> = self
            .run(
                ::redis::cmd("HMGET")
                    .arg(dl_key(&bin.id))
                    .arg(seqs)
                    .query_async(&mut conn),
            )
            .await?;
        for (seq, list) in seqs.iter().zip(lists) {
            for line in list.iter().flat_map(|l| l.lines()) {
                if let Ok(d) = serde_json::from_str::<Delivery>(line) {
                    self.mem.add_delivery(bin, *seq, d);
                }
            }
        }
        Ok(())
    }

    /// Insert into the mirror; on success hand the capture to the forward lease logic.
    fn apply(
        self: &Arc<Self>,
        bin: &Arc<Bin>,
        capture: Arc<Capture>,
        gap: bool,
        fwd: bool,
    ) -> bool {
        let seq = capture.seq;
        if self.mem.insert_known(bin, capture, gap).is_none() {
            return false;
        }
        if fwd {
            self.forward(bin, seq);
        }
        true
    }

    /// Forward `seq` if this instance holds the bin's lease (claiming it when free).
    fn forward(self: &Arc<Self>, bin: &Arc<Bin>, seq: u64) {
        let Some(hook) = self.forward_hook.get() else {
            return;
        };
        if bin.settings().forward.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut lease = self.leases.entry(bin.id.clone()).or_default();
        if let Some(until) = lease.until.filter(|u| *u > now) {
            if !lease.mine {
                return;
            }
            if until - now < LEASE / 2 && !lease.claiming {
                lease.claiming = true;
                tokio::spawn(self.clone().claim(bin.clone()));
            }
            drop(lease);
            hook(bin, seq);
            return;
        }
        if lease.pending.len() >= MAX_PENDING {
            lease.pending.remove(0);
        }
        lease.pending.push(seq);
        if !lease.claiming {
            lease.claiming = true;
            tokio::spawn(self.clone().claim(bin.clone()));
        }
    }

    /// Claim or renew a bin's forward lease, then forward what waited on the answer.
    async fn claim(self: Arc<Self>, bin: Arc<Bin>) {
        let mut conn = self.conn.clone();
        let answer: Result<(i64, i64), StoreError> = self
            .run(
                self.scripts
                    .lease
                    .key(fwd_key(&bin.id))
                    .arg(&self.origin)
                    .arg(LEASE.as_millis() as u64)
                    .invoke_async(&mut conn),
            )
            .await;
        let pending = {
            let mut lease = self.leases.entry(bin.id.clone()).or_default();
            lease.claiming = false;
            match answer {
                Ok((mine, pttl)) => {
                    lease.mine = mine == 1;
                    // Believe we hold it a little less long than Redis does.
                    let ms = if lease.mine {
                        pttl.saturating_sub(1000)
                    } else {
                        pttl
                    };
                    lease.until = Some(Instant::now() + Duration::from_millis(ms.max(0) as u64));
                }
                Err(e) => {
                    tracing::debug!(bin = %bin.id, error = %e, "forward lease claim failed");
                    lease.until = None;
                }
            }
            let pending = std::mem::take(&mut lease.pending);
            if lease.mine {
                pending
            } else {
                Vec::new()
            }
        };
        if let Some(hook) = self.forward_hook.get() {
            for seq in pending {
                hook(&bin, seq);
            }
        }
    }

    /// Create a bin in Redis, then its mirror.
    pub async fn create(
        self: &Arc<Self>,
        id: &str,
        key_hash: KeyHash,
        settings: Settings,
        pinned: bool,
    ) -> Result<Arc<Bin>, CreateError> {
        let epoch = ids::new_epoch();
        let json = serde_json::to_string(&settings).expect("settings serialize");
        let created = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut conn = self.conn.clone();
        let made: i64 = self
            .run(
                self.scripts
                    .create
                    .key(bin_key(id))
                    .arg(json)
                    .arg(settings.capacity)
                    .arg(hex::encode(key_hash))
                    .arg(epoch)
                    .arg(if pinned { "1" } else { "0" })
                    .arg(created)
                    .arg(UNUSED_TTL_S.min(self.bin_ttl_s))
                    .invoke_async(&mut conn),
            )
            .await
            .map_err(|e| CreateError::Unavailable(e.to_string()))?;
        if made == 0 {
            return Err(CreateError::Exists);
        }
        if let Some(stale) = self.mem.get(id) {
            // A mirror of an earlier bin with this id (deleted or expired elsewhere).
            self.mem.remove(&stale.id);
        }
        self.mem
            .create_with_epoch(id, key_hash, settings, pinned, epoch)
    }

    /// The ready bin: create it pinned, or adopt the stored one if its key matches.
    pub async fn ensure_ready(
        self: &Arc<Self>,
        id: &str,
        key_hash: KeyHash,
        settings: Settings,
    ) -> Result<Arc<Bin>, String> {
        match self.create(id, key_hash, settings, true).await {
            Ok(bin) => return Ok(bin),
            Err(CreateError::Exists) => {}
            Err(e) => return Err(e.to_string()),
        }
        let bin = self
            .load(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("ready bin {id} vanished while loading"))?;
        let stored = bin.key_hash();
        if stored != key_hash {
            self.mem.remove(id);
            return Err(format!(
                "bin {id} already exists in Redis with a different key"
            ));
        }
        let mut conn = self.conn.clone();
        let _: i64 = self
            .run(
                self.scripts
                    .pin
                    .key(bin_key(id))
                    .key(cap_key(id))
                    .key(dl_key(id))
                    .invoke_async(&mut conn),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(bin)
    }

    /// Store a capture: the script assigns its seq, appends and publishes it.
    pub async fn insert(
        self: &Arc<Self>,
        bin: &Arc<Bin>,
        builder: CaptureBuilder,
        meta: RequestMeta,
        extra: CaptureExtra,
    ) -> Result<Inserted, StoreError> {
        let payload = builder.encode(&meta, &extra);
        let id = &*bin.id;
        let mut conn = self.conn.clone();
        let seq: i64 = self
            .run(
                self.scripts
                    .capture
                    .key(bin_key(id))
                    .key(cap_key(id))
                    .key(dl_key(id))
                    .arg(payload)
                    .arg(self.bin_ttl_s)
                    .arg(channel(id))
                    .arg(&self.origin)
                    .invoke_async(&mut conn),
            )
            .await?;
        if seq < 0 {
            self.drop_mirror(bin);
            return Err(StoreError::Gone);
        }
        let capture = Arc::new(builder.finish(meta, extra, seq as u64));
        // In order, the mirror takes it now; otherwise the pub/sub echo brings it in order.
        self.apply(bin, capture.clone(), false, true);
        Ok(Inserted {
            capture,
            evicted: 0,
        })
    }

    /// Store new settings and announce them.
    pub async fn set_settings(&self, bin: &Bin, settings: &Settings) -> Result<(), StoreError> {
        let json = serde_json::to_string(settings).expect("settings serialize");
        let mut conn = self.conn.clone();
        let ok: i64 = self
            .run(
                self.scripts
                    .settings
                    .key(bin_key(&bin.id))
                    .key(cap_key(&bin.id))
                    .arg(json)
                    .arg(settings.capacity)
                    .arg(channel(&bin.id))
                    .arg(&self.origin)
                    .invoke_async(&mut conn),
            )
            .await?;
        if ok == 0 {
            return Err(StoreError::Gone);
        }
        Ok(())
    }

    /// Store a new key hash and announce it.
    pub async fn set_key_hash(&self, bin: &Bin, hash: &KeyHash) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let ok: i64 = self
            .run(
                self.scripts
                    .key
                    .key(bin_key(&bin.id))
                    .arg(hex::encode(hash))
                    .arg(channel(&bin.id))
                    .arg(&self.origin)
                    .invoke_async(&mut conn),
            )
            .await?;
        if ok == 0 {
            return Err(StoreError::Gone);
        }
        Ok(())
    }

    /// Delete a bin's keys and announce it.
    pub async fn remove(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .run(
                self.scripts
                    .delete
                    .key(bin_key(id))
                    .key(cap_key(id))
                    .key(dl_key(id))
                    .key(fwd_key(id))
                    .arg(channel(id))
                    .arg(&self.origin)
                    .invoke_async(&mut conn),
            )
            .await?;
        self.leases.remove(id);
        Ok(())
    }

    /// Clear a bin's captures; returns the last seq cleared.
    pub async fn clear(&self, bin: &Bin) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let through: i64 = self
            .run(
                self.scripts
                    .clear
                    .key(bin_key(&bin.id))
                    .key(cap_key(&bin.id))
                    .key(dl_key(&bin.id))
                    .arg(channel(&bin.id))
                    .arg(&self.origin)
                    .invoke_async(&mut conn),
            )
            .await?;
        u64::try_from(through).map_err(|_| StoreError::Gone)
    }

    /// Store and announce a delivery in the background (already in the local mirror).
    pub fn add_delivery(self: &Arc<Self>, bin: &Bin, seq: u64, delivery: Delivery) {
        let Ok(permit) = self.background.clone().try_acquire_owned() else {
            tracing::warn!(bin = %bin.id, seq, "too many Redis writes pending; delivery record kept locally only");
            return;
        };
        let me = self.clone();
        let id = bin.id.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let line = serde_json::to_string(&delivery).expect("delivery serializes");
            let message = format!("d{}{seq}:{line}", me.origin);
            let mut conn = me.conn.clone();
            let stored: Result<i64, _> = me
                .run(
                    me.scripts
                        .delivery
                        .key(bin_key(&id))
                        .key(cap_key(&id))
                        .key(dl_key(&id))
                        .arg(seq)
                        .arg(line)
                        .arg(channel(&id))
                        .arg(message)
                        .arg(me.bin_ttl_s)
                        .arg(MAX_DELIVERIES)
                        .invoke_async(&mut conn),
                )
                .await;
            if let Err(e) = stored {
                tracing::warn!(bin = %id, seq, error = %e, "delivery record not stored in Redis");
            }
        });
    }

    /// Push back a bin's key expiry after API use (at most once a minute per bin).
    pub fn touch(self: &Arc<Self>, bin: &Bin) {
        if bin.pinned() {
            return;
        }
        let now = Instant::now();
        if self
            .touched
            .get(&bin.id)
            .is_some_and(|t| now.duration_since(*t) < TOUCH_EVERY)
        {
            return;
        }
        if self.touched.len() > 100_000 {
            self.touched.clear(); // bounded: forgetting only costs an extra EXPIRE
        }
        self.touched.insert(bin.id.clone(), now);
        let Ok(permit) = self.background.clone().try_acquire_owned() else {
            return; // a skipped refresh only costs an earlier expiry check
        };
        let me = self.clone();
        let id = bin.id.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = me.conn.clone();
            let _: Result<i64, _> = me
                .run(
                    me.scripts
                        .touch
                        .key(bin_key(&id))
                        .key(cap_key(&id))
                        .key(dl_key(&id))
                        .arg(me.bin_ttl_s)
                        .invoke_async(&mut conn),
                )
                .await;
        });
    }

    /// Apply one pub/sub event to the mirror.
    async fn handle(self: &Arc<Self>, channel_name: &str, payload: &[u8]) {
        let Some(id) = channel_name.strip_prefix("hr:ev:") else {
            return;
        };
        let Some(bin) = self.mem.get(id) else {
            return; // not mirrored here: nothing to update
        };
        if payload.len() < 17 {
            return;
        }
        let (tag, origin, rest) = (payload[0], &payload[1..17], &payload[17..]);
        let own = origin == self.origin.as_bytes();
        match tag {
            b'c' => {
                let Some(colon) = rest.iter().position(|b| *b == b':') else {
                    return;
                };
                let Some(seq) = std::str::from_utf8(&rest[..colon])
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                else {
                    return;
                };
                let next = bin.info().last_seq + 1;
                if seq < next {
                    return; // already mirrored (our own ingest, or a catch-up)
                }
                if seq == next {
                    if let Some(capture) = Capture::decode(bin.id.clone(), seq, &rest[colon + 1..])
                    {
                        if self.apply(&bin, Arc::new(capture), false, true) {
                            return;
                        }
                    }
                }
                // A gap: missed messages. Everything up to `seq` is committed, so read it.
                if let Err(e) = self.sync(&bin, true).await {
                    tracing::debug!(bin = %id, error = %e, "catch-up failed");
                }
            }
            _ if own => {} // applied locally when it was made
            b'd' => {
                let text = String::from_utf8_lossy(rest);
                let Some((seq, json)) = text.split_once(':') else {
                    return;
                };
                if let (Ok(seq), Ok(d)) =
                    (seq.parse::<u64>(), serde_json::from_str::<Delivery>(json))
                {
                    self.mem.add_delivery(&bin, seq, d);
                }
            }
            b'x' => {
                if let Some(through) = std::str::from_utf8(rest).ok().and_then(|s| s.parse().ok()) {
                    self.mem.clear_through(&bin, through);
                }
            }
            b's' => {
                if let Ok(settings) = serde_json::from_slice::<Settings>(rest) {
                    self.mem.set_settings(&bin, settings);
                }
            }
            b'k' => {
                let mut hash = [0u8; 32];
                if hex::decode_to_slice(rest, &mut hash).is_ok() {
                    bin.set_key_hash(hash);
                }
            }
            b'D' => self.drop_mirror(&bin),
            _ => {}
        }
    }

    /// After a (re)subscription: events may have been missed, so re-read every mirrored bin.
    async fn resync_all(self: Arc<Self>) {
        for id in self.mem.ids() {
            let Some(bin) = self.mem.get(&id) else {
                continue;
            };
            match self.read_record(&id).await {
                Ok(None) => self.drop_mirror(&bin),
                Ok(Some(record)) if record.epoch != bin.epoch => self.drop_mirror(&bin),
                Ok(Some(record)) => {
                    if *bin.settings() != record.settings {
                        self.mem.set_settings(&bin, record.settings);
                    }
                    bin.set_key_hash(record.key_hash);
                    if record.seq > bin.info().last_seq {
                        if let Err(e) = self.sync(&bin, true).await {
                            tracing::debug!(bin = %id, error = %e, "resync failed");
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "resync stopped: Redis unavailable");
                    return;
                }
            }
        }
    }
}

async fn subscribe(client: &Client) -> Result<::redis::aio::PubSub, RedisError> {
    let connect = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.psubscribe("hr:ev:*").await?;
        Ok(pubsub)
    };
    match tokio::time::timeout(OP_TIMEOUT, connect).await {
        Ok(r) => r,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "subscribing timed out",
        ))),
    }
}

/// Receive events; on a lost connection, reconnect with backoff, resubscribe and catch up.
async fn pubsub_loop(
    store: Weak<RedisStore>,
    client: Client,
    mut first: Option<::redis::aio::PubSub>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let pubsub = match first.take() {
            Some(p) => Some(p),
            None => match tokio::time::timeout(OP_TIMEOUT, subscribe(&client)).await {
                Ok(Ok(p)) => {
                    let Some(me) = store.upgrade() else { return };
                    me.subscribed.store(true, Ordering::Relaxed);
                    tracing::info!("Redis event subscription restored");
                    tokio::spawn(me.resync_all());
                    Some(p)
                }
                _ => None,
            },
        };
        if let Some(pubsub) = pubsub {
            backoff = Duration::from_millis(100);
            let mut messages = pubsub.into_on_message();
            loop {
                tokio::select! {
                    msg = messages.next() => {
                        let Some(msg) = msg else { break };
                        let Some(me) = store.upgrade() else { return };
                        me.handle(msg.get_channel_name(), msg.get_payload_bytes()).await;
                    }
                    _ = stop.changed() => return,
                }
            }
            let Some(me) = store.upgrade() else { return };
            me.subscribed.store(false, Ordering::Relaxed);
            tracing::warn!("Redis event subscription lost; reconnecting");
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// PING Redis regularly so /healthz and recovery don't wait for traffic.
async fn health_loop(store: Weak<RedisStore>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PING_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(me) = store.upgrade() else { return };
        let mut conn = me.conn.clone();
        let ok = matches!(
            tokio::time::timeout(
                PING_EVERY.max(Duration::from_secs(1)),
                ::redis::cmd("PING").query_async::<String>(&mut conn),
            )
            .await,
            Ok(Ok(_))
        );
        let was = me.healthy.swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                tracing::info!("Redis reachable again");
            } else {
                tracing::warn!("Redis unreachable; inbound requests answer 503");
            }
        }
    }
}
