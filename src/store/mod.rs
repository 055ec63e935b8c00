//! Storage of bins and captures behind one [`Store`] handle.
//!
//! - `memory` (default): a [`MemoryStore`] is the whole store.
//! - `redis://…`: Redis is the source of truth and the bus between instances
//!   ([`redis::RedisStore`]); the same [`MemoryStore`] serves as this instance's local
//!   mirror, so viewers, REST reads and forwarders read captures the same way on both.
//!
//! Reads (`get`, `len`, bin ring reads…) go to the local [`MemoryStore`] through `Deref`;
//! the changes below are the store's own methods, async because Redis must answer first.

pub mod memory;
pub mod redis;

use std::sync::Arc;

pub use memory::{Bin, BinEvent, CreateError, Cursor, Inserted, Item, MemoryStore, RingInfo};

use crate::capture::{Capture, CaptureBuilder, CaptureExtra, Delivery, RequestMeta};
use crate::error::ApiError;
use crate::ids::KeyHash;
use crate::settings::Settings;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend (Redis) can't be reached or answered an error; the caller should retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The bin no longer exists (deleted or expired, possibly by another instance).
    #[error("no such bin")]
    Gone,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Unavailable(why) => {
                ApiError::unavailable(format!("the store is unavailable ({why}); retry later"))
            }
            StoreError::Gone => ApiError::unknown_bin(),
        }
    }
}

/// The store the server uses: the local [`MemoryStore`], plus Redis when configured.
pub struct Store {
    mem: Arc<MemoryStore>,
    redis: Option<Arc<self::redis::RedisStore>>,
}

impl std::ops::Deref for Store {
    type Target = MemoryStore;
    fn deref(&self) -> &MemoryStore {
        &self.mem
    }
}

impl Store {
    /// A memory-only store.
    pub fn memory(mem: MemoryStore) -> Store {
        Store {
            mem: Arc::new(mem),
            redis: None,
        }
    }

    /// A Redis-backed store mirrored into `mem`; fails when Redis can't be reached.
    pub async fn redis(url: &str, mem: MemoryStore, bin_ttl_s: u64) -> Result<Store, StoreError> {
        let mem = Arc::new(mem);
        let redis = self::redis::RedisStore::connect(url, mem.clone(), bin_ttl_s).await?;
        Ok(Store {
            mem,
            redis: Some(redis),
        })
    }

    /// `memory` or `redis` (for /healthz).
    pub fn backend(&self) -> &'static str {
        if self.redis.is_some() {
            "redis"
        } else {
            "memory"
        }
    }

    /// Whether the backend is reachable now (always true for memory).
    pub fn healthy(&self) -> bool {
        self.redis.as_ref().is_none_or(|r| r.healthy())
    }

    /// Whether this instance should enqueue forwards at ingest (memory) or leave them to the
    /// Redis store's per-bin forward lease (see [`redis`]).
    pub fn forwards_at_ingest(&self) -> bool {
        self.redis.is_none()
    }

    /// With Redis: what to call for each capture this instance must forward (seq order).
    pub fn set_forward_hook(&self, hook: self::redis::ForwardHook) {
        if let Some(r) = &self.redis {
            r.set_forward_hook(hook);
        }
    }

    /// Stop background tasks (pub/sub, health checks).
    pub fn close(&self) {
        if let Some(r) = &self.redis {
            r.close();
        }
    }

    /// A bin for ingest: the local one, else (Redis) loaded from the shared store.
    pub async fn lookup(&self, id: &str) -> Result<Option<Arc<Bin>>, StoreError> {
        if let Some(bin) = self.mem.get(id) {
            return Ok(Some(bin));
        }
        match &self.redis {
            None => Ok(None),
            Some(r) => r.load(id).await,
        }
    }

    /// A bin for a REST read: like [`Store::lookup`], and with Redis brought up to date
    /// first (captures ingested by other instances, or deleted meanwhile).
    pub async fn lookup_fresh(&self, id: &str) -> Result<Option<Arc<Bin>>, StoreError> {
        let Some(bin) = self.lookup(id).await? else {
            return Ok(None);
        };
        if let Some(r) = &self.redis {
            if !r.refresh(&bin).await? {
                return Ok(None);
            }
        }
        Ok(Some(bin))
    }

    /// Create a bin.
    pub async fn create(
        &self,
        id: &str,
        key_hash: KeyHash,
        settings: Settings,
        pinned: bool,
    ) -> Result<Arc<Bin>, CreateError> {
        match &self.redis {
            None => self.mem.create(id, key_hash, settings, pinned),
            Some(r) => r.create(id, key_hash, settings, pinned).await,
        }
    }

    /// Create the ready bin, or (Redis) adopt the stored one when its key matches.
    pub async fn ensure_ready(
        &self,
        id: &str,
        key_hash: KeyHash,
        settings: Settings,
    ) -> Result<Arc<Bin>, String> {
        match &self.redis {
            None => self
                .mem
                .create(id, key_hash, settings, true)
                .map_err(|e| e.to_string()),
            Some(r) => r.ensure_ready(id, key_hash, settings).await,
        }
    }

    /// Store a capture: seq assigned (by Redis when shared), stored, published, viewers woken.
    pub async fn insert(
        &self,
        bin: &Arc<Bin>,
        builder: CaptureBuilder,
        meta: RequestMeta,
        extra: CaptureExtra,
    ) -> Result<Inserted, StoreError> {
        match &self.redis {
            None => Ok(self.mem.insert(bin, builder, meta, extra)),
            Some(r) => r.insert(bin, builder, meta, extra).await,
        }
    }

    /// Replace a bin's settings and announce them.
    pub async fn set_settings(
        &self,
        bin: &Bin,
        settings: Settings,
    ) -> Result<Arc<Settings>, StoreError> {
        if let Some(r) = &self.redis {
            r.set_settings(bin, &settings).await?;
        }
        Ok(self.mem.set_settings(bin, settings))
    }

    /// Delete a bin and its captures.
    pub async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        if let Some(r) = &self.redis {
            r.remove(id).await?;
        }
        Ok(self.mem.remove(id))
    }

    /// Remove all captures of a bin; seq continues.
    pub async fn clear(&self, bin: &Bin) -> Result<(), StoreError> {
        match &self.redis {
            None => self.mem.clear(bin),
            Some(r) => {
                let through = r.clear(bin).await?;
                self.mem.clear_through(bin, through);
            }
        }
        Ok(())
    }

    /// Give a bin a fresh random key; returns it.
    pub async fn rotate_key(&self, bin: &Bin) -> Result<String, StoreError> {
        let key = crate::ids::random_token();
        let hash = crate::ids::hash_key(&key);
        if let Some(r) = &self.redis {
            r.set_key_hash(bin, &hash).await?;
        }
        bin.set_key_hash(hash);
        Ok(key)
    }

    /// A stored capture's WebSocket frame, built once and charged to the memory budget
    /// (the local memory store or mirror holds it); returns it and the captures evicted.
    pub fn ws_frame(&self, bin: &Bin, capture: &Arc<Capture>) -> (crate::capture::WsText, u64) {
        self.mem.ws_frame(bin, capture)
    }

    /// Attach a delivery to capture `seq` and announce it; false if the capture is gone.
    /// With Redis the shared copy is written in the background (deliveries are records of
    /// attempts already made: nothing waits on them).
    pub fn add_delivery(&self, bin: &Bin, seq: u64, delivery: Delivery) -> bool {
        let shared = self.redis.as_ref().map(|_| delivery.clone());
        let added = self.mem.add_delivery(bin, seq, delivery);
        if let (true, Some(r), Some(d)) = (added, &self.redis, shared) {
            r.add_delivery(bin, seq, d);
        }
        added
    }

    /// Mark a bin used by the API (idle TTL; with Redis, its key expiry is pushed back).
    pub fn touch(&self, bin: &Bin) {
        self.mem.touch(bin);
        if let Some(r) = &self.redis {
            r.touch(bin);
        }
    }
}
