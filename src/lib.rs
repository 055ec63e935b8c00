//! hookrelay — capture, inspect and relay webhooks.
//!
//! # Layout
//!
//! Data flows one way: listener → ingest → store → live / deliver.
//!
//! - [`config`]: the CLI (clap) and its limits.
//! - [`server`]: listeners, TLS, the exact-header tap, routing, graceful shutdown.
//! - [`ingest`]: an inbound request becomes a [`capture::Capture`] and gets its answer.
//! - [`capture`]: the compact capture record and its lazily built JSON.
//! - [`store`]: bins and their ring buffers; memory, or Redis shared by several instances
//!   (with the memory store as each instance's local mirror).
//! - [`live`]: WebSocket sessions that stream a bin to viewers.
//! - [`api`]: the REST API; [`inspector`]: the browser pages.
//! - [`deliver`]: replay, auto-forward (with the SSRF guard) and the `listen` relay client.
//! - [`export`]: copy-as-cURL, HAR, NDJSON and OpenAPI exports of a bin's buffer.
//! - [`settings`]: per-bin settings and their validation.
//! - [`signature`]: webhook signature schemes; [`send`]: the `hookrelay send` test sender.
//! - [`metrics`]: Prometheus counters.
//! - [`alloc`]: malloc settings for the server process.
//! - [`ids`]: bin ids and keys; [`state`]: shared state; [`error`]: JSON errors.

// `alloc` alone may call into libc (mallopt); everything else is safe Rust.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod alloc;
pub mod api;
pub mod capture;
pub mod config;
pub mod deliver;
pub mod error;
pub mod export;
pub mod ids;
pub mod ingest;
pub mod inspector;
pub mod live;
pub mod metrics;
pub mod send;
pub mod server;
pub mod settings;
pub mod signature;
pub mod state;
pub mod store;

pub use config::{Cli, Command, ServeArgs};

pub use error::Error;
pub use server::Server;
