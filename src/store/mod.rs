//! Storage of bins and captures. `memory` is the default backend.

pub mod memory;

pub use memory::{Bin, BinEvent, CreateError, Cursor, Inserted, Item, MemoryStore, RingInfo};
