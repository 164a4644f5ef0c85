fn main() {
    println!("cargo:rerun-if-changed=migrations");
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
