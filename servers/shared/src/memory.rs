//! How a server process asks the C allocator to hold its memory.
//!
//! glibc serves allocations above its mmap threshold (128 KiB) with their own mappings, which go
//! back to the kernel when freed and grow in place (`mremap`) — but after the first such block is
//! freed it raises the threshold to that block's size. A server frees big blocks early (argon2's
//! 19 MiB while hashing the decoy secret at start-up), so its session tables, which double as
//! connections arrive, then come from the heap instead: each doubling copies, and the old copy
//! stays resident. Measured with 10,000 idle frame clients: 811 bytes per connection with the
//! moving threshold, 473 with it fixed (issue 14). Fixing it costs nothing else we can measure.

/// Keeps glibc's mmap threshold at its 128 KiB default for the life of the process. Call once,
/// first thing in `main`. Does nothing with other C libraries.
pub fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
