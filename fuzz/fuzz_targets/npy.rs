//! `.npy` data files (np.save of a list of feed dicts: a pickle inside).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = whetstone_fuzz::scratch("data.npy", data);
    let _ = optimizer::data::load(&path, &whetstone_fuzz::signature());
});
