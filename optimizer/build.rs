//! Generates the TensorFlow protobuf messages (`proto/tensorflow.proto`).
//! With the `torch` feature, compiles `cpp/torch_freeze.cpp` (TorchScript
//! freezing through libtorch's C++ API, which tch does not expose) against
//! the libtorch that tch builds with: the folder in `LIBTORCH`.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    tensorflow_messages();
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    torch::compile();
}

/// The TensorFlow protobuf messages the importer reads
/// (`proto/tensorflow.proto`), generated into `OUT_DIR/tensorflow.rs`.
fn tensorflow_messages() {
    println!("cargo:rerun-if-changed=proto");
    let fds = match protox::compile(["tensorflow.proto"], ["proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("proto/tensorflow.proto: {e}"),
    };
    if let Err(e) = prost_build::Config::new().compile_fds(fds) {
        panic!("generating the TensorFlow messages: {e}");
    }
}

#[cfg(feature = "torch")]
mod torch {
    use std::path::PathBuf;

    pub fn compile() {
        println!("cargo:rerun-if-changed=cpp/torch_freeze.cpp");
        println!("cargo:rerun-if-env-changed=LIBTORCH");
        println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
        let Some(root) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
            panic!(
                "the `torch` feature needs LIBTORCH (the libtorch folder, as tch's build does): \
                 LIBTORCH=$(scripts/install-libtorch.sh) cargo build --features torch"
            );
        };
        let include = root.join("include");
        // The same ABI flag as torch-sys (libtorch 2.x wheels use the C++11 ABI).
        let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
        cc::Build::new()
            .cpp(true)
            .pic(true)
            .warnings(false)
            .include(&include)
            .include(include.join("torch/csrc/api/include"))
            .flag("-std=c++17")
            .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
            .flag("-DGLOG_USE_GLOG_EXPORT")
            .file("cpp/torch_freeze.cpp")
            .compile("whet_torch_freeze");
        // libtorch itself is linked by torch-sys (c10, torch_cpu, torch).
    }
}

#[cfg(not(feature = "torch"))]
mod torch {
    pub fn compile() {}
}
