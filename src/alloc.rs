//! Process-wide malloc settings for a server whose memory is mostly large, short-lived
//! bodies.
//!
//! glibc gives each thread that allocates concurrently its own arena (up to 8 per core).
//! Under a flood of large bodies, blocks freed by eviction then sit in several arenas'
//! free lists at once, and RSS runs far past what the store holds (measured ≈ +135 MiB
//! over a 64 MiB `--max-memory`). With one arena the freed blocks are reused by whichever
//! thread allocates next (≈ +96–102 MiB). The price is lock traffic on that arena for
//! allocations glibc's per-thread tcache doesn't absorb: `cargo bench`, whose load generator
//! shares the process, measured scenario 1 at ≈ 0.60–0.63× baseline with one arena against
//! ≈ 0.68–0.71× with eight (README, Performance). The memory bound is a requirement; the
//! bench's figure is a worst case, since a real server does not share its arena with clients.
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
