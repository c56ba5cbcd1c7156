//! Small data and models shared by the tests.

use kd::core::burn::tensor::Device;
use kd::prelude::*;

pub fn device() -> Device {
    kd::backend::device("flex").expect("flex is the default backend")
}

pub use kd_testkit::blobs;

/// Batches of 16, SGD at 0.1.
pub fn config(epochs: usize, seed: u64) -> TrainConfig {
    kd_testkit::recipe(epochs, 16, 0.1, seed)
}

pub fn mlp(widths: &str, classes: usize, seed: u64) -> AnyModel {
    ModelSpec::parse(widths).unwrap().build_seeded([1, 2, 2], classes, &device().autodiff(), seed).unwrap()
}

/// Asserts `got` (a native kernel's result) matches `want` (Burn's composition) element by
/// element, relative to the largest value and absolute below 1 (a bias before batch norm has a
/// gradient of 0 up to rounding).
#[cfg(any(feature = "tch", feature = "flex"))]
pub fn close_to_burn(what: &str, got: kd::core::burn::tensor::Tensor<1>, want: kd::core::burn::tensor::Tensor<1>) {
    let (got, want) = (got.into_data().try_to_vec::<f32>().unwrap(), want.into_data().try_to_vec::<f32>().unwrap());
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 2e-5 * scale, "{what}[{i}]: native kernel {g}, Burn's composition {w}");
    }
}

/// All of a tensor's values in one dimension.
#[cfg(any(feature = "tch", feature = "flex"))]
pub fn flat<const D: usize>(t: kd::core::burn::tensor::Tensor<D>) -> kd::core::burn::tensor::Tensor<1> {
    t.flatten(0, D - 1)
}
