//! Checkpoint files (the container of student checkpoints, teachers and caches).
#![no_main]
use kd_core::checkpoint::Checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ckpt) = Checkpoint::from_bytes(data) {
        // What was read writes back to the same bytes.
        assert_eq!(ckpt.to_bytes().map(|b| b.len()).ok(), Some(data.len()));
    }
});
