//! The pickle reader, as `torch.save` archives carry it: the input is the
//! `data.pkl` of an otherwise well-formed `.pth` zip (with a storage file
//! it may refer to), so the fuzzer spends its time in the pickle.
#![no_main]
use std::io::Write;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut put = |name: &str, bytes: &[u8]| {
        zip.start_file(name, stored).expect("zip entry");
        zip.write_all(bytes).expect("zip write");
    };
    put("archive/data.pkl", data);
    put("archive/byteorder", b"little");
    put("archive/data/0", &[0u8; 64]);
    let bytes = zip.finish().expect("zip").into_inner();
    let path = whetstone_fuzz::scratch("data.pth", &bytes);
    let _ = optimizer::data::load_positional(&path);
    let _ = optimizer::data::load(&path, &whetstone_fuzz::signature());
});
