//! With the `tch` feature, binaries and tests link against libtorch's shared libraries, which
//! live inside the PyTorch wheel (`.../site-packages/torch/lib`). An rpath to that folder lets
//! `cargo xtask ... --backend tch` and the tests start without LD_LIBRARY_PATH. The folder comes
//! from torch-sys (`links = "tch"`), whose build script prints it as `libtorch_lib`.
//! Used by the facade `kd` and by xtask (`build = "../build.rs"`).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else { return };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // rustc links with --as-needed; nothing calls into libtorch_cuda directly (its kernels
    // register themselves when it loads), so without this CUDA would silently be absent.
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
