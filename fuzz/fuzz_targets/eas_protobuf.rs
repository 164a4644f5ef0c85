//! The EAS SDK's TFRequest and TorchRequest protobufs (plain or snappy),
//! decoded and checked against a model's signature.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = backend::serving::eas::decode_inputs(&whetstone_fuzz::signature(), data);
});
