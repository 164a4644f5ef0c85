//! `.npz` data files: a zip of `.npy` arrays, by name and by position.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = whetstone_fuzz::scratch("data.npz", data);
    let _ = optimizer::data::load(&path, &whetstone_fuzz::signature());
    let _ = optimizer::data::load_positional(&path);
});
