//! Teacher-cache files: the checkpoint container plus the key, row table and values.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kd_core::teacher_cache::check_cache_bytes(data);
});
