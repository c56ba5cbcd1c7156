//! Seeded initial weights that are the same on every backend.
//!
//! Each backend draws random numbers with its own generator, so `device.seed(s)` on flex and on
//! LibTorch gives different networks. Drawing on the host (flex, always compiled) and moving
//! the result makes a seed mean one network everywhere, which is what lets the backend parity
//! tests compare training runs step by step.

use std::cell::Cell;
use std::sync::Mutex;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};

use crate::Result;

/// Builds a module with `build` on the host device seeded with `seed`, then moves it to
/// `device` (autodiff or not, like `device`).
///
/// Reproducible even when other threads build at the same time: flex draws from one global
/// generator and Burn draws weights lazily, so the seeding and every draw happen under one lock.
pub fn seeded_on_host<M: Module>(device: &Device, seed: u64, build: impl FnOnce(&Device) -> Result<M>) -> Result<M> {
    /// Reads every parameter, which forces Burn's lazy initialisation to draw now.
    struct Touch;
    impl ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    static INIT_LOCK: Mutex<()> = Mutex::new(());
    thread_local! {
        // Builds nest (a method's learnable parts may hold seeded models of their own): the
        // thread that holds the lock does not take it again.
        static HOLDS_LOCK: Cell<bool> = const { Cell::new(false) };
    }
    let host = if device.is_autodiff() { Device::flex().autodiff() } else { Device::flex() };
    let module = {
        let nested = HOLDS_LOCK.with(Cell::get);
        // A poisoned lock only means another build panicked; the guard protects no data.
        let _guard = (!nested).then(|| INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner()));
        HOLDS_LOCK.with(|h| h.set(true));
        host.seed(seed);
        let built = build(&host).inspect(|module| module.visit(&mut Touch));
        HOLDS_LOCK.with(|h| h.set(nested));
        built?
    };
    // `fork` (not `to_device`) makes each parameter a leaf of the target device's graph.
    Ok(if host == *device { module } else { module.fork(device) })
}
