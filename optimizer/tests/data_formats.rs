//! The data readers on the zoo's files in the seed's formats (checked against
//! their `.npz` twins), on hand-built pickles and archives, and on damaged
//! input. Needs the zoo (`WHETSTONE_ZOO`, default `../../shared/zoo` from this
//! crate); no Python and no ONNX Runtime.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use optimizer::data::{self, Dataset};
use optimizer::tensor::{DType, Tensor, TensorData};
use optimizer::OptimizerError;
use rand::{Rng, SeedableRng};
use shared::api::{ModelSignature, TensorSpec};

fn zoo() -> PathBuf {
    let dir = std::env::var_os("WHETSTONE_ZOO")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/zoo"));
    assert!(
        dir.join("test_minilm.pth").is_file(),
        "the model zoo is missing: no test_minilm.pth in {}; set WHETSTONE_ZOO to the folder \
         holding the zoo's data files",
        dir.display()
    );
    dir
}

fn sig(inputs: &[(&str, &str, &[i64])]) -> ModelSignature {
    ModelSignature {
        format: "onnx".into(),
        inputs: inputs
            .iter()
            .map(|&(name, datatype, shape)| TensorSpec {
                name: name.into(),
                datatype: datatype.into(),
                shape: shape.to_vec(),
            })
            .collect(),
        outputs: Vec::new(),
    }
}

fn resnet() -> ModelSignature {
    sig(&[("input", "FP32", &[-1, 3, 224, 224])])
}

fn minilm() -> ModelSignature {
    let s: &[i64] = &[-1, -1];
    sig(&[
        ("input_ids", "INT64", s),
        ("attention_mask", "INT64", s),
        ("token_type_ids", "INT64", s),
    ])
}

fn textcnn() -> ModelSignature {
    sig(&[("input_ids", "INT32", &[-1, 64])])
}

fn load(file: &str, sig: &ModelSignature) -> Dataset {
    data::load(&zoo().join(file), sig).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn load_err(path: &Path, sig: &ModelSignature) -> String {
    match data::load(path, sig) {
        Err(e @ OptimizerError::BadData { .. }) => e.to_string(),
        Err(other) => panic!("{}: expected BadData, got {other}", path.display()),
        Ok(ds) => panic!("{}: expected an error, got {}", path.display(), ds.source),
    }
}

/// Every sample has the model's inputs in order, with this shape and type.
fn check_layout(ds: &Dataset, sig: &ModelSignature, count: usize, shape: &[usize], dtype: DType) {
    assert_eq!(ds.samples.len(), count, "{}", ds.source);
    for sample in &ds.samples {
        let names: Vec<&str> = sample.iter().map(|(n, _)| n.as_str()).collect();
        let want: Vec<&str> = sig.inputs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, want);
        for (_, t) in sample {
            assert_eq!(t.shape, shape);
            assert_eq!(t.dtype(), dtype);
        }
    }
}

/// A seed-format file decodes to exactly the data of its `.npz` twin.
fn check_twin(
    file: &str,
    twin: &str,
    sig: &ModelSignature,
    count: usize,
    shape: &[usize],
    dtype: DType,
) {
    let ds = load(file, sig);
    let npz = load(twin, sig);
    check_layout(&ds, sig, count, shape, dtype);
    check_layout(&npz, sig, count, shape, dtype);
    for (i, (a, b)) in ds.samples.iter().zip(&npz.samples).enumerate() {
        assert!(a == b, "{file} sample {i} differs from {twin}");
    }
    assert_eq!(ds.source, format!("{file} ({count} samples)"));
}

#[test]
fn tensorflow_npy_feed_dicts_match_their_npz_twins() {
    check_twin(
        "test_textcnn.npy",
        "test_textcnn.npz",
        &textcnn(),
        10,
        &[1, 64],
        DType::I32,
    );
    check_twin(
        "calib_textcnn.npy",
        "calib_textcnn.npz",
        &textcnn(),
        128,
        &[1, 64],
        DType::I32,
    );
}

#[test]
fn mobilenet_npy_holds_ten_nhwc_images() {
    // The frozen graph names its input `input:0`; either spelling matches.
    for name in ["input", "input:0"] {
        let s = sig(&[(name, "FP32", &[-1, 224, 224, 3])]);
        let ds = load("test_mobilenet_v2.npy", &s);
        check_layout(&ds, &s, 10, &[1, 224, 224, 3], DType::F32);
        let TensorData::F32(v) = &ds.samples[3][0].1.data else {
            unreachable!()
        };
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
        assert!(v.iter().any(|&x| x != v[0]));
        assert_ne!(ds.samples[0][0].1, ds.samples[1][0].1);
    }
}

#[test]
fn torch_pth_tuples_match_their_npz_twins() {
    check_twin(
        "test_resnet.pth",
        "test_resnet.npz",
        &resnet(),
        10,
        &[1, 3, 224, 224],
        DType::F32,
    );
    check_twin(
        "test_minilm.pth",
        "test_minilm.npz",
        &minilm(),
        10,
        &[1, 128],
        DType::I64,
    );
    check_twin(
        "calib_minilm.pth",
        "calib_minilm.npz",
        &minilm(),
        128,
        &[1, 128],
        DType::I64,
    );
}

/// TorchScript declares no inputs: the data gives them by position.
#[test]
fn positional_inputs_come_from_pth_tuples_and_npz_arrays() {
    let (ds, specs) = data::load_positional(&zoo().join("test_minilm.pth")).unwrap();
    assert_eq!(ds.samples.len(), 10);
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["input0", "input1", "input2"]);
    for s in &specs {
        assert_eq!(
            (s.datatype.as_str(), s.shape.as_slice()),
            ("INT64", &[1, 128][..])
        );
    }
    // The same values as the named reader gives, in tuple order.
    let named = load("test_minilm.pth", &minilm());
    for (a, b) in ds.samples.iter().zip(&named.samples) {
        for ((_, x), (_, y)) in a.iter().zip(b) {
            assert_eq!(x, y);
        }
    }

    // .npz: arrays input0, input1, …; samples on axis 0, a 0-d array shared.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("positional.npz");
    let x = Tensor::new(
        vec![3, 2],
        TensorData::F32(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]),
    )
    .unwrap();
    let sr = Tensor::new(vec![], TensorData::I64(vec![16000])).unwrap();
    data::write_npz(&path, &[("input0", &x), ("input1", &sr)]).unwrap();
    let (ds, specs) = data::load_positional(&path).unwrap();
    assert_eq!(ds.samples.len(), 3);
    assert_eq!(specs[0].shape, vec![1, 2]);
    assert_eq!(specs[1].shape, Vec::<i64>::new());
    assert_eq!(ds.samples[2][0].1.data, TensorData::F32(vec![4.0, 5.0]));
    assert_eq!(ds.samples[2][1].1, sr);

    // Arrays under other names are refused with the naming rule.
    let other = dir.path().join("named.npz");
    data::write_npz(&other, &[("x", &x)]).unwrap();
    let e = data::load_positional(&other).unwrap_err().to_string();
    assert!(e.contains("input0"), "{e}");
}

#[test]
fn calib_resnet_pth_holds_32_images() {
    let ds = load("calib_resnet.pth", &resnet());
    check_layout(&ds, &resnet(), 32, &[1, 3, 224, 224], DType::F32);
    for (_, t) in ds.samples.iter().flatten() {
        let TensorData::F32(v) = &t.data else {
            unreachable!()
        };
        assert!(v.iter().all(|x| x.is_finite() && x.abs() < 5.0));
    }
    assert_ne!(ds.samples[0], ds.samples[31]);
}

#[test]
fn missing_inputs_and_wrong_tuple_sizes_are_named() {
    let z = zoo();
    let two = sig(&[
        ("input_ids", "INT32", &[-1, 64]),
        ("lengths", "INT32", &[-1]),
    ]);
    let e = load_err(&z.join("test_textcnn.npy"), &two);
    assert!(
        e.contains("test_textcnn.npy")
            && e.contains("sample 0")
            && e.contains("no value for model input 'lengths'")
            && e.contains("input_ids:0"),
        "{e}"
    );
    let pair = sig(&[
        ("input_ids", "INT64", &[-1, -1]),
        ("attention_mask", "INT64", &[-1, -1]),
    ]);
    let e = load_err(&z.join("test_minilm.pth"), &pair);
    assert!(
        e.contains(
            "sample 0 holds 3 values but the model has 2 inputs (input_ids, attention_mask)"
        ),
        "{e}"
    );
    let e = load_err(&z.join("test_resnet.pth"), &minilm());
    assert!(
        e.contains("sample 0 holds 1 value but the model has 3 inputs"),
        "{e}"
    );
    // Types and shapes are held to the model's declaration.
    let e = load_err(&z.join("test_resnet.pth"), &textcnn());
    assert!(
        e.contains("sample 0, input 'input_ids': expected datatype INT32, got FP32"),
        "{e}"
    );
    let e = load_err(
        &z.join("test_textcnn.npy"),
        &sig(&[("input_ids", "INT32", &[-1, 32])]),
    );
    assert!(
        e.contains("sample 0, input 'input_ids': expected shape [-1,32]"),
        "{e}"
    );
    // A plain array cannot feed several inputs.
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.npy");
    std::fs::write(&plain, npy_file("<i8", "(2, 3)", &[0; 48])).unwrap();
    assert!(load_err(&plain, &minilm()).contains("can only feed a single-input model"));
}

#[test]
fn plain_numeric_npy_feeds_a_single_input_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.npy");
    let data: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    std::fs::write(&p, npy_file("<f4", "(3, 2)", &data)).unwrap();
    let ds = data::load(&p, &sig(&[("x", "FP32", &[-1, 2])])).unwrap();
    assert_eq!(ds.samples.len(), 3);
    assert_eq!(
        ds.samples[2][0].1,
        Tensor::new(vec![1, 2], TensorData::F32(vec![4.0, 5.0])).unwrap()
    );
}

#[test]
fn the_seed_documents_feed_dict_example() {
    // np.save(path, [feed] * 2) with feed = {'image_placeholder:0': ones((8, 3, 2, 2),
    // float32), 'threshold_placeholder:0': float32(0.5)}: the same dict twice, by memo.
    let mut p = Pkl::default();
    p.op(b"\x80\x02");
    p.reconstruct();
    p.op(b"(K\x01(K\x02t");
    p.dtype("O8", "|");
    p.op(b"\x89](}q\x05(");
    p.str("image_placeholder:0");
    let ones: Vec<u8> = (0..96).flat_map(|_| 1.0f32.to_le_bytes()).collect();
    p.ndarray("f4", &[8, 3, 2, 2], &ones);
    p.str("threshold_placeholder:0");
    p.scalar("f4", &0.5f32.to_le_bytes());
    p.op(b"uh\x05etb.");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calib_data.npy");
    std::fs::write(&path, npy_file("|O", "(2,)", &p.0)).unwrap();
    let model = sig(&[
        ("image_placeholder", "FP32", &[-1, 3, 2, 2]),
        ("threshold_placeholder", "FP32", &[]),
    ]);
    let ds = data::load(&path, &model).unwrap();
    assert_eq!(ds.samples.len(), 2);
    for sample in &ds.samples {
        assert_eq!(
            sample[0],
            (
                "image_placeholder".to_string(),
                Tensor::new(vec![8, 3, 2, 2], TensorData::F32(vec![1.0; 96])).unwrap()
            )
        );
        assert_eq!(
            sample[1],
            (
                "threshold_placeholder".to_string(),
                Tensor::new(vec![], TensorData::F32(vec![0.5])).unwrap()
            )
        );
    }
}

#[test]
fn npz_written_by_write_npz_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.npz");
    let ids = Tensor::new(vec![3, 2], TensorData::I8(vec![1, -2, 3, -4, 5, -6])).unwrap();
    let mask = Tensor::new(
        vec![3, 2],
        TensorData::Bool(vec![true, false, true, true, false, false]),
    )
    .unwrap();
    // A 0-d array is shared by every sample; an [n] array gives 0-d input `sr`
    // one value per sample.
    let scale = Tensor::new(vec![], TensorData::F64(vec![0.25])).unwrap();
    let sr = Tensor::new(vec![3], TensorData::I64(vec![8000, 16000, 8000])).unwrap();
    data::write_npz(
        &path,
        &[
            ("ids", &ids),
            ("mask:0", &mask),
            ("scale", &scale),
            ("sr", &sr),
        ],
    )
    .unwrap();
    let model = sig(&[
        ("ids", "INT8", &[-1, 2]),
        ("mask", "BOOL", &[-1, 2]),
        ("scale", "FP64", &[]),
        ("sr", "INT64", &[]),
    ]);
    let ds = data::load(&path, &model).unwrap();
    assert_eq!(ds.samples.len(), 3);
    assert_eq!(ds.samples[1][0].1, ids.batch_item(1));
    assert_eq!(ds.samples[1][1].1, mask.batch_item(1));
    assert_eq!(ds.samples[2][2].1, scale);
    assert_eq!(
        ds.samples[1][3].1,
        Tensor::new(vec![], TensorData::I64(vec![16000])).unwrap()
    );
}

#[test]
fn python_globals_outside_the_allow_list_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // np.save of an object whose pickle would run os.system('ls').
    let evil = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.";
    let npy = dir.path().join("evil.npy");
    std::fs::write(&npy, npy_file("|O", "(1,)", evil)).unwrap();
    let e = load_err(&npy, &textcnn());
    assert!(
        e.contains(
            "refusing to load: the file references python global 'os.system'; only \
                    numpy/torch tensor data is accepted"
        ),
        "{e}"
    );
    // The same in a torch archive, with protocol 4's STACK_GLOBAL.
    let pth = dir.path().join("evil.pth");
    let pkl = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x01x\x85R.";
    write_pth(&pth, pkl, &[]);
    assert!(load_err(&pth, &textcnn()).contains("python global 'builtins.eval'"));
}

#[test]
fn non_contiguous_and_0d_torch_tensors_decode() {
    // One storage of six floats 0..5 shared by three views:
    // a = storage viewed (3,2) then transposed: size (2,3), stride (1,2);
    // b = every other element from offset 1: size (3,), stride (2,);
    // c = a 0-d tensor at offset 5, like tensor(0.5) indexed out of a batch,
    //     saved as an nn.Parameter.
    let mut p = Pkl::default();
    p.op(b"\x80\x02]q\x00((");
    p.tensor("FloatStorage", "0", 6, 0, &[2, 3], &[1, 2]);
    p.tensor("FloatStorage", "0", 6, 1, &[3], &[2]);
    p.op(b"ctorch._utils\n_rebuild_parameter\n(");
    p.tensor("FloatStorage", "0", 6, 5, &[], &[]);
    p.op(b"\x88ccollections\nOrderedDict\n)RtR");
    p.op(b"te.");
    let storage: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.pth");
    write_pth(&path, &p.0, &[("0", &storage)]);
    let model = sig(&[
        ("a", "FP32", &[2, 3]),
        ("b", "FP32", &[3]),
        ("c", "FP32", &[]),
    ]);
    let ds = data::load(&path, &model).unwrap();
    let t = |shape: Vec<usize>, v: Vec<f32>| Tensor::new(shape, TensorData::F32(v)).unwrap();
    assert_eq!(
        ds.samples,
        vec![vec![
            ("a".to_string(), t(vec![2, 3], vec![0., 2., 4., 1., 3., 5.])),
            ("b".to_string(), t(vec![3], vec![1., 3., 5.])),
            ("c".to_string(), t(vec![], vec![5.])),
        ]]
    );

    // A view reaching past its storage is an error, not a read out of bounds.
    let mut p = Pkl::default();
    p.op(b"\x80\x02]q\x00(");
    p.tensor("FloatStorage", "0", 6, 4, &[2, 2], &[2, 1]);
    p.op(b"e.");
    write_pth(&path, &p.0, &[("0", &storage)]);
    let e = load_err(&path, &sig(&[("a", "FP32", &[2, 2])]));
    assert!(e.contains("reaches past the 6 elements"), "{e}");

    // A storage record shorter than the pickle claims.
    let mut p = Pkl::default();
    p.op(b"\x80\x02]q\x00(");
    p.tensor("LongStorage", "0", 6, 0, &[6], &[1]);
    p.op(b"e.");
    write_pth(&path, &p.0, &[("0", &storage)]);
    let e = load_err(&path, &sig(&[("a", "INT64", &[6])]));
    assert!(e.contains("holds 24 bytes; the pickle needs 48"), "{e}");

    // An element type we have no use for is named.
    let mut p = Pkl::default();
    p.op(b"\x80\x02]q\x00(");
    p.tensor("BFloat16Storage", "0", 2, 0, &[2], &[1]);
    p.op(b"e.");
    write_pth(&path, &p.0, &[("0", &storage)]);
    let e = load_err(&path, &sig(&[("a", "FP32", &[2])]));
    assert!(e.contains("torch.BFloat16Storage are not supported"), "{e}");
}

#[test]
fn safetensors_round_trip() {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    let ids: Vec<u8> = (0..12i64).flat_map(|i| i.to_le_bytes()).collect();
    let mask: Vec<u8> = (0..12)
        .flat_map(|i| half::f16::from_f32(i as f32 * 0.5).to_le_bytes())
        .collect();
    let tensors = [
        (
            "input_ids",
            TensorView::new(Dtype::I64, vec![3, 4], &ids).unwrap(),
        ),
        (
            "mask:0",
            TensorView::new(Dtype::F16, vec![3, 4], &mask).unwrap(),
        ),
        (
            "unused",
            TensorView::new(Dtype::U16, vec![1], &[0, 0]).unwrap(),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.safetensors");
    safetensors::serialize_to_file(tensors, None, &path).unwrap();

    let model = sig(&[("input_ids", "INT64", &[-1, 4]), ("mask", "FP32", &[-1, 4])]);
    let ds = data::load(&path, &model).unwrap();
    assert_eq!(ds.samples.len(), 3);
    assert_eq!(ds.source, "data.safetensors (3 samples)");
    let s = &ds.samples[2];
    assert_eq!(
        s[0].1,
        Tensor::new(vec![1, 4], TensorData::I64(vec![8, 9, 10, 11])).unwrap()
    );
    assert_eq!(
        s[1].1,
        Tensor::new(vec![1, 4], TensorData::F32(vec![4.0, 4.5, 5.0, 5.5])).unwrap()
    );

    let e = load_err(&path, &sig(&[("unused", "INT32", &[1])]));
    assert!(
        e.contains("tensor 'unused': element type U16 is not supported"),
        "{e}"
    );
    let e = load_err(&path, &sig(&[("other", "INT32", &[1])]));
    assert!(e.contains("no tensor for model input 'other'"), "{e}");
}

#[test]
fn truncated_and_garbage_files_are_errors() {
    let z = zoo();
    let dir = tempfile::tempdir().unwrap();
    let npy = std::fs::read(z.join("test_textcnn.npy")).unwrap();
    let cut = dir.path().join("cut.npy");
    for n in 0..npy.len() {
        std::fs::write(&cut, &npy[..n]).unwrap();
        load_err(&cut, &textcnn());
    }
    let pth = std::fs::read(z.join("test_minilm.pth")).unwrap();
    let cut = dir.path().join("cut.pth");
    for n in (0..pth.len()).step_by(97).chain([pth.len() - 1]) {
        std::fs::write(&cut, &pth[..n]).unwrap();
        load_err(&cut, &minilm());
    }
    for ext in ["npy", "pth", "pt", "npz", "safetensors"] {
        let junk = dir.path().join(format!("junk.{ext}"));
        std::fs::write(&junk, b"\x93NUMPY\x01\x00junk PK\x03\x04 junk").unwrap();
        load_err(&junk, &textcnn());
    }
    // A zip that is not a torch archive.
    let npz_as_pth = dir.path().join("npz.pth");
    std::fs::copy(z.join("test_textcnn.npz"), &npz_as_pth).unwrap();
    assert!(load_err(&npz_as_pth, &textcnn()).contains("no data.pkl"));
}

/// Random damage to real files must give errors or data, never a panic.
#[test]
fn corrupted_pickles_never_panic() {
    let z = zoo();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    let npy = std::fs::read(z.join("test_textcnn.npy")).unwrap();
    let path = dir.path().join("bad.npy");
    for _ in 0..1500 {
        let mut b = npy.clone();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..b.len());
            b[i] = rng.random();
        }
        std::fs::write(&path, &b).unwrap();
        let _ = data::load(&path, &textcnn());
    }

    let (pkl, storages) = read_pth(&z.join("test_minilm.pth"));
    let storages: Vec<(&str, &[u8])> = storages.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
    let path = dir.path().join("bad.pth");
    for _ in 0..300 {
        let mut b = pkl.clone();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..b.len());
            b[i] = rng.random();
        }
        write_pth(&path, &b, &storages);
        let _ = data::load(&path, &minilm());
    }
}

/// A `.npy` file with this descr and shape literal around `payload`.
fn npy_file(descr: &str, shape: &str, payload: &[u8]) -> Vec<u8> {
    let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}\n");
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((header.len() as u16).to_le_bytes());
    b.extend(header.as_bytes());
    b.extend(payload);
    b
}

/// A torch-style archive: `archive/data.pkl`, `archive/byteorder`, storages.
fn write_pth(path: &Path, pkl: &[u8], storages: &[(&str, &[u8])]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(pkl).unwrap();
    zip.start_file("archive/byteorder", opts).unwrap();
    zip.write_all(b"little").unwrap();
    for (key, bytes) in storages {
        zip.start_file(format!("archive/data/{key}"), opts).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

/// `data.pkl` and the storages of a torch archive.
fn read_pth(path: &Path) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut pkl = Vec::new();
    let mut storages = Vec::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        let name = f.name().to_string();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        if name.ends_with("/data.pkl") {
            pkl = bytes;
        } else if let Some((_, key)) = name.split_once("/data/") {
            storages.push((key.to_string(), bytes));
        }
    }
    (pkl, storages)
}

/// Writes pickle opcodes the way torch.save does (protocol 2, GLOBAL).
#[derive(Default)]
struct Pkl(Vec<u8>);

impl Pkl {
    fn op(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    fn str(&mut self, s: &str) {
        self.op(b"X");
        self.op(&(s.len() as u32).to_le_bytes());
        self.op(s.as_bytes());
    }

    fn int(&mut self, i: i32) {
        self.op(b"J");
        self.op(&i.to_le_bytes());
    }

    fn ints(&mut self, v: &[i32]) {
        self.op(b"(");
        for &i in v {
            self.int(i);
        }
        self.op(b"t");
    }

    /// `numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')`, awaiting BUILD.
    fn reconstruct(&mut self) {
        self.op(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R");
    }

    /// `numpy.dtype(code, False, True)` with its BUILD state.
    fn dtype(&mut self, code: &str, order: &str) {
        self.op(b"cnumpy\ndtype\n");
        self.str(code);
        self.op(b"\x89\x88\x87R(K\x03");
        self.str(order);
        self.op(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb");
    }

    fn bytes(&mut self, raw: &[u8]) {
        self.op(b"B");
        self.op(&(raw.len() as u32).to_le_bytes());
        self.op(raw);
    }

    /// A C-order little-endian numeric array.
    fn ndarray(&mut self, code: &str, shape: &[i32], raw: &[u8]) {
        self.reconstruct();
        self.op(b"(K\x01");
        self.ints(shape);
        self.dtype(code, "<");
        self.op(b"\x89");
        self.bytes(raw);
        self.op(b"tb");
    }

    /// `numpy.core.multiarray.scalar(dtype, raw)`.
    fn scalar(&mut self, code: &str, raw: &[u8]) {
        self.op(b"cnumpy.core.multiarray\nscalar\n");
        self.dtype(code, "<");
        self.bytes(raw);
        self.op(b"\x86R");
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
    fn tensor(
        &mut self,
        kind: &str,
        key: &str,
        numel: i32,
        offset: i32,
        size: &[i32],
        stride: &[i32],
    ) {
        self.op(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        self.str("storage");
        self.op(format!("ctorch\n{kind}\n").as_bytes());
        self.str(key);
        self.str("cpu");
        self.int(numel);
        self.op(b"tQ");
        self.int(offset);
        self.ints(size);
        self.ints(stride);
        self.op(b"\x89ccollections\nOrderedDict\n)RtR");
    }
}
