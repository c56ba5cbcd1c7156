//! The process's memory allocator, tuned for training loops.
//!
//! A training step allocates and frees the same large buffers every step (activations,
//! gradients: megabytes each). glibc's `malloc` serves blocks of that size by `mmap` and hands
//! them back to the kernel on `free`, or trims them off the top of its heap, so every step
//! faults its memory in again, page by page, each page zeroed by the kernel. Measured on a
//! 2-core AMD EPYC, resnet8's CE step on LibTorch at batch 64 (`cargo xtask throughput
//! --backend tch --setups resnet20:resnet8:3x32x32:10 --methods ce --batches 64 --steps 100`):
//! 7,400 page faults and about 10 ms of kernel time a step, 72.8 ms a step in all; with the
//! freed memory kept for reuse, 56-58 ms. PyTorch's own processes pay the same cost (its
//! performance guide suggests preloading another allocator); this is the in-process fix.
//!
//! [`retain_freed_memory`] is process-wide, so a library does not call it on its own: a
//! program that trains calls it once at the start of `main`, as `cargo xtask` does.

/// Blocks below this size come from the heap, not from `mmap` (glibc's largest allowed value
/// on 64-bit targets; its default starts at 128 KiB and grows only as big blocks are freed).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: i32 = 32 << 20;
/// Free memory at the top of the heap is returned to the kernel only above this size: a step's
/// freed activations stay for the next step (the resident set stays at the peak a step needs).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD_BYTES: i32 = 1 << 30;

/// Keeps freed memory in the process for reuse instead of returning it to the kernel after
/// every step. Returns whether the allocator took the setting: `true` on Linux with glibc,
/// `false` elsewhere (other allocators keep their own policy; nothing changes).
///
/// Call it once, at the start of a program that trains, before its threads start:
///
/// ```
/// // First thing in `main`; then build the device, the data and the trainer.
/// let kept = kd::allocator::retain_freed_memory();
/// assert_eq!(kept, cfg!(all(target_os = "linux", target_env = "gnu")));
/// ```
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only sets two of glibc's allocator parameters; it takes the
        // allocator's lock and is safe to call at any time. Both values are in its ranges.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_setting() {
        let taken = super::retain_freed_memory();
        assert_eq!(taken, cfg!(all(target_os = "linux", target_env = "gnu")));
        // The heap still serves and frees a block of a step's size.
        let block = vec![1u8; 8 << 20];
        assert_eq!(block.iter().map(|&b| b as usize).sum::<usize>(), 8 << 20);
    }
}
