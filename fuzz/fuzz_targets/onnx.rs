//! The ONNX loader and what inspection reads of a model (its signature),
//! as the inspector child runs them on an upload.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = whetstone_fuzz::scratch("model.onnx", data);
    let _ = optimizer::inspect::onnx(&path);
});
