//! Image files of an `images:DIR` folder: whatever the bytes, decoding ends in pixels of the
//! requested size or an error, never a panic, and never an allocation the decoder's limits do
//! not bound. The first byte picks the options (size, resize, channels), so resizing and the
//! grey path are reached too.
#![no_main]
use kd_data::{DecodeSpec, decode_image};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&options, bytes)) = data.split_first() else { return };
    let side = 1 + u32::from(options & 0x0F);
    let spec = DecodeSpec { width: side, height: side, resize: options & 0x10 != 0, channels: if options & 0x20 != 0 { 1 } else { 3 } };
    let mut out = vec![0u8; spec.bytes_per_image()];
    if decode_image(bytes, &spec, &mut out).is_ok() {
        assert_eq!(out.len(), spec.channels * (side * side) as usize);
    }
});
