fn main() {
    println!("cargo:rerun-if-changed=migrations");
    grpc();
    // libtorch ships without an rpath: give `whet` (built with the `torch`
    // feature) the library folder it was linked against, so the binary
    // starts without LD_LIBRARY_PATH.
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_some() {
        if let Some(libtorch) = std::env::var_os("LIBTORCH") {
            let lib = std::path::Path::new(&libtorch).join("lib");
            println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{}", lib.display());
        }
    }
}

/// The KServe v2 gRPC service (`proto/kserve_v2.proto`): parsed by protox,
/// a protobuf compiler in Rust, so the build needs no system `protoc`; tonic
/// writes the messages, the server trait (`whet serve --grpc-addr`) and the
/// client (the CLI-free tests and the serving benchmark).
fn grpc() {
    println!("cargo:rerun-if-changed=proto");
    let fds = match protox::compile(["kserve_v2.proto"], ["proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("proto/kserve_v2.proto: {e}"),
    };
    if let Err(e) = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Raw tensors are sliced out of the received message, not copied.
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_fds(fds)
    {
        panic!("generating the gRPC code: {e}");
    }
}
