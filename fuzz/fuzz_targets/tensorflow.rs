//! The TensorFlow importer: a frozen GraphDef to ONNX.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = optimizer::tf::op_census(data);
    let _ = optimizer::tf::import(data, &optimizer::tf::ImportOptions::default());
});
