//! Process-wide malloc settings for a server whose memory is mostly large, short-lived
//! bodies.
//!
//! glibc gives each thread that allocates concurrently its own arena (up to 8 per core).
//! Under a flood of large bodies, blocks freed by eviction then sit in several arenas'
//! free lists at once, and RSS runs far past what the store holds (measured ≈ +135 MiB
//! over a 64 MiB `--max-memory`). With one arena the freed blocks are reused by whichever
//! thread allocates next (≈ +96–99 MiB); small allocations stay per thread in glibc's
//! tcache, so ingest throughput does not suffer (see README, Performance).
#![allow(unsafe_code)]

/// Limit glibc malloc to one arena, unless `MALLOC_ARENA_MAX` already says otherwise.
///
/// Call it first thing in `main`, before any thread is started: threads that have already
/// allocated keep the arena they got.
pub fn use_one_malloc_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; M_ARENA_MAX is valid since glibc
    // 2.10 and the call is made before other threads exist (see above).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
