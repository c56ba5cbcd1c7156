//! Teacher-cache files: the checkpoint container plus the key, row table, values and top-k
//! indices. As for checkpoints, each input is also read with its checksum recomputed.
#![no_main]
use kd_core::checkpoint::checksum;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut resealed = data[..data.len().saturating_sub(8)].to_vec();
    let sum = checksum(&resealed);
    resealed.extend_from_slice(&sum.to_le_bytes());
    let _ = kd_core::teacher_cache::check_cache_bytes(data);
    let _ = kd_core::teacher_cache::check_cache_bytes(&resealed);
});
