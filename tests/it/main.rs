//! End-to-end tests of the facade (one binary: each test binary links all of Burn).

mod backend_kernels;
mod backends;
mod common;
mod flex_kernels;
mod golden;
mod identity;
mod losses;
mod properties;
mod pytorch;
mod registry;
mod safety;
mod teacher_cache;
mod training;
