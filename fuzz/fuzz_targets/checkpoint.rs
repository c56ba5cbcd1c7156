//! Checkpoint files (the container of student checkpoints, teachers and caches). Each input is
//! read twice: as it is (the checksum must reject damage), and with its checksum recomputed, so
//! that the fuzzer also reaches the header and section parsing behind it.
#![no_main]
use kd_core::checkpoint::{Checkpoint, checksum};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut resealed = data[..data.len().saturating_sub(8)].to_vec();
    let sum = checksum(&resealed);
    resealed.extend_from_slice(&sum.to_le_bytes());
    for bytes in [data, &resealed[..]] {
        if let Ok(ckpt) = Checkpoint::from_bytes(bytes) {
            // What was read writes back and reads again to the same content (the JSON header
            // may be spelt differently: `1e2` comes back as `100.0`).
            let again = Checkpoint::from_bytes(&ckpt.to_bytes().expect("a read checkpoint serialises")).expect("and reads back");
            assert_eq!(again.meta, ckpt.meta);
            assert_eq!(again.sections, ckpt.sections);
        }
    }
});
