//! With the `tch` feature, compiles `native/torch_backward.cpp`: libtorch's convolution and
//! batch-norm backward kernels as C functions for `src/native.rs`. The headers sit beside the
//! libraries torch-sys found (`links = "tch"` hands their folder over as `DEP_TCH_LIBTORCH_LIB`),
//! and the C++ ABI is torch-sys's: `LIBTORCH_CXX11_ABI`, 1 unless set (every PyTorch 2.9 wheel
//! for Linux uses the new ABI; a mismatch fails at link time, naming the missing symbol).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=native/torch_backward.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    #[cfg(feature = "tch")]
    compile_torch_backward();
}

#[cfg(feature = "tch")]
fn compile_torch_backward() {
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys names libtorch's library folder (DEP_TCH_LIBTORCH_LIB)");
    let include = std::path::Path::new(&lib).parent().expect("libtorch's library folder has a parent").join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    let mut build = cc::Build::new();
    build.cpp(true).pic(true).warnings(false).include(&include).file("native/torch_backward.cpp");
    if build.get_compiler().is_like_msvc() {
        build.flag("/std:c++17");
    } else {
        build.flag("-std=c++17").flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"));
    }
    build.compile("kd_torch_backward");
}
