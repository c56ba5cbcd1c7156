//! CIFAR-10 and CIFAR-100 binary batches.
#![no_main]
use std::path::Path;

use kd_data::cifar::{CifarFormat, CifarLabels, parse_cifar};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [CifarFormat::Cifar10, CifarFormat::Cifar100(CifarLabels::Fine), CifarFormat::Cifar100(CifarLabels::Coarse)] {
        if let Ok((pixels, labels)) = parse_cifar(data, Path::new("fuzz.bin"), format) {
            assert_eq!(pixels.len(), labels.len() * kd_data::cifar::CIFAR_PIXELS);
            assert!(labels.iter().all(|&l| l < format.classes()));
        }
    }
});
