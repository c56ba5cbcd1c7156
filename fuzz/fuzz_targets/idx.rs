//! IDX (MNIST) files, raw or gzip-compressed: any bytes give an array or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(array) = kd_data::idx::parse_idx(data) {
        assert_eq!(array.dims.iter().product::<usize>(), array.data.len());
    }
});
