//! One test per validation rule: a valid and an invalid case, each asserting the exact error path
//! (see `shared::validate` for the path style). Each case edits one field of `base()`, a valid
//! config that uses every field, so a failing rule shows up as exactly one error.

use serde_json::{json, Value};
use shared::config::{Quantization, ServiceConfig};
use shared::validate::{
    parse_and_validate, validate, ValidationError, MAX_INSTANCES, MIN_TOKEN_LEN, ROOT_PATH,
};

const GPU_IMAGE: &str = "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:gpu_latest";
const CU110_IMAGE: &str = "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cu110_latest";
const CPU_IMAGE: &str = "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest";
/// JSON pointer and error path of the one model's items in `base()`.
const MI: &str = "/plugins/0/config/model_info/frozen.pb";
const MI_PATH: &str = "plugins[0].config.model_info[\"frozen.pb\"]";

/// A valid config that uses every field.
fn base() -> Value {
    json!({
        "name": "bert_service",
        "model_path": "file:///models/bert/",
        "processor": "tensorflow_gpu_1.15",
        "metadata": {
            "instance": 2, "cpu": 4, "memory": 4096, "gpu": 1, "gpu_memory": 8, "cuda": "10.0",
            "rpc": {
                "batching": true, "max_batch_size": 8, "max_batch_timeout": 10,
                "max_queue_size": 64, "keepalive": 5000, "io_threads": 2, "worker_threads": 4
            },
            "rolling_strategy": { "max_surge": 1, "max_unavailable": "50%" },
            "startup_check": { "initial_delay_seconds": 5, "period_seconds": 10, "failure_threshold": 30 },
            "readiness_check": { "period_seconds": 5, "timeout_seconds": 2, "failure_threshold": 3, "success_threshold": 2 },
            "liveness_check": { "period_seconds": 10, "timeout_seconds": 1, "failure_threshold": 3 }
        },
        "resource": "T4_8CORE",
        "token": "0123456789abcdef0123",
        "autoscaler": {
            "min": 1, "max": 4,
            "scale_strategies": [
                { "metric_name": "qps", "threshold": 50 },
                { "metric_name": "cpu", "threshold": 80.5 }
            ]
        },
        "warm_up_data_path": "data/warm_up.npz",
        "cronscaler": {
            "scale_jobs": [
                { "name": "day", "schedule": "0 8 * * 1-5", "target_size": 4 },
                { "name": "night", "schedule": "30 0 20 * * *", "target_size": 1 }
            ]
        },
        "plugins": [{
            "command": "blade --mode eas_plugin --optimize_for gpu",
            "image": GPU_IMAGE,
            "resource": "T4_8CORE",
            "gpu": 1,
            "config": { "model_info": { "frozen.pb": {
                "optimization_level": "o2",
                "inputs": ["input_ids", "mask"],
                "outputs": ["logits"],
                "test_data": "data/test.npy",
                "calibration_dataset": "data/calib.npy",
                "input_shapes": [["1*512", "1*512"], ["8*512", "8*512"]],
                "input_ranges": [["[0,30000]", "[0,1]"], ["[0,30000]", "[0,1]"]],
                "quantization": { "weight_adjustment": "true" }
            } } }
        }]
    })
}

fn set(v: &mut Value, pointer: &str, new: Value) {
    match v.pointer_mut(pointer) {
        Some(slot) => *slot = new,
        None => {
            // Insert a new key into the parent object.
            let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
            let obj = v
                .pointer_mut(parent)
                .and_then(Value::as_object_mut)
                .expect("parent object");
            obj.insert(key.to_string(), new);
        }
    }
}

fn remove(v: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let obj = v
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent object");
    assert!(obj.remove(key).is_some(), "{pointer} was not there");
}

fn errors_of(v: &Value) -> Vec<ValidationError> {
    parse_and_validate(&v.to_string()).err().unwrap_or_default()
}

/// The error paths after applying `edit` to `base()`.
fn paths(edit: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut v = base();
    edit(&mut v);
    errors_of(&v).into_iter().map(|e| e.path).collect()
}

/// The single error after applying `edit`; fails unless there is exactly one.
fn only_error(edit: impl FnOnce(&mut Value)) -> ValidationError {
    let mut v = base();
    edit(&mut v);
    let errs = errors_of(&v);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    errs.into_iter().next().expect("one error")
}

fn ok(edit: impl FnOnce(&mut Value)) {
    let mut v = base();
    edit(&mut v);
    let errs = errors_of(&v);
    assert!(errs.is_empty(), "expected no errors, got {errs:#?}");
}

fn mi(key: &str) -> String {
    format!("{MI}/{key}")
}

#[test]
fn base_is_valid_and_matches_serde() {
    let text = base().to_string();
    let cfg = parse_and_validate(&text).expect("valid");
    let via_serde: ServiceConfig = serde_json::from_str(&text).expect("serde parses");
    assert_eq!(cfg, via_serde);
    assert_eq!(serde_json::to_value(&cfg).ok(), Some(base()));
    assert!(validate(&cfg).is_empty());
}

#[test]
fn syntax_error_names_line_and_column() {
    let errs = parse_and_validate("{\n  \"name\": \"abc\",\n}")
        .err()
        .unwrap_or_default();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, ROOT_PATH);
    assert!(errs[0].message.contains("line 3"), "{}", errs[0].message);
    assert!(errs[0].message.contains("column"), "{}", errs[0].message);
    assert_eq!(parse_and_validate("").err().map(|e| e.len()), Some(1));
}

#[test]
fn document_must_be_an_object() {
    for text in ["[]", "42", "\"x\"", "null"] {
        let errs = parse_and_validate(text).err().unwrap_or_default();
        assert_eq!(
            errs.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            vec!["$"],
            "{text}"
        );
    }
}

#[test]
fn required_keys() {
    for (pointer, path) in [
        ("/name", "name"),
        ("/model_path", "model_path"),
        ("/processor", "processor"),
        ("/plugins/0/command", "plugins[0].command"),
        ("/plugins/0/image", "plugins[0].image"),
        (
            "/plugins/0/config/model_info",
            "plugins[0].config.model_info",
        ),
    ] {
        let e = only_error(|v| remove(v, pointer));
        assert_eq!(e.path, path);
        assert!(e.message.starts_with("missing required key"), "{e}");
    }
    // Everything else is optional.
    ok(|v| {
        for p in ["/metadata", "/resource", "/token"] {
            remove(v, p);
        }
        set(v, "/processor", json!("onnx_gpu"));
        remove(v, &mi("optimization_level"));
    });
    assert_eq!(
        paths(|v| *v = json!({})),
        vec!["name", "model_path", "processor"],
    );
}

#[test]
fn unknown_keys_are_named_with_the_allowed_ones() {
    for (pointer, path, key) in [
        ("/cloud", "cloud", "cloud"),
        ("/metadata/gpus", "metadata.gpus", "gpus"),
        ("/metadata/rpc/threads", "metadata.rpc.threads", "threads"),
        ("/plugins/0/args", "plugins[0].args", "args"),
        (
            "/plugins/0/config/extra",
            "plugins[0].config.extra",
            "extra",
        ),
        (
            &mi("input_shape"),
            &format!("{MI_PATH}.input_shape"),
            "input_shape",
        ),
        (
            &mi("quantization/per_channel"),
            &format!("{MI_PATH}.quantization.per_channel"),
            "per_channel",
        ),
        ("/warm-up", "[\"warm-up\"]", "warm-up"),
    ] {
        let e = only_error(|v| set(v, pointer, json!(1)));
        assert_eq!(e.path, path);
        assert!(e.message.contains(&format!("unknown key \"{key}\"")), "{e}");
        assert!(e.message.contains("allowed keys: "), "{e}");
    }
    let e = only_error(|v| set(v, "/metadata/gpus", json!(1)));
    assert!(
        e.message
            .contains("instance, cpu, memory, gpu, gpu_memory, cuda, rpc"),
        "{e}"
    );
}

#[test]
fn wrong_types() {
    for (pointer, value, path, expected) in [
        (
            "/name",
            json!(7),
            "name".to_string(),
            "expected a string, got the number 7",
        ),
        (
            "/metadata",
            json!(null),
            "metadata".to_string(),
            "expected an object",
        ),
        (
            "/metadata/instance",
            json!("2"),
            "metadata.instance".to_string(),
            "expected a positive integer",
        ),
        (
            "/metadata/cpu",
            json!(-1),
            "metadata.cpu".to_string(),
            "expected a positive integer",
        ),
        (
            "/metadata/gpu",
            json!(1.0),
            "metadata.gpu".to_string(),
            "expected a positive integer",
        ),
        (
            "/metadata/gpu",
            json!(5_000_000_000u64),
            "metadata.gpu".to_string(),
            "at most 4294967295",
        ),
        (
            "/metadata/memory",
            json!(1.5),
            "metadata.memory".to_string(),
            "expected a non-negative integer",
        ),
        (
            "/metadata/rpc/batching",
            json!("yes"),
            "metadata.rpc.batching".to_string(),
            "expected true or false",
        ),
        (
            "/plugins",
            json!({}),
            "plugins".to_string(),
            "expected a list of plugin objects",
        ),
        (
            "/plugins/0",
            json!("blade"),
            "plugins[0]".to_string(),
            "expected an object",
        ),
        (
            "/plugins/0/gpu",
            json!("1"),
            "plugins[0].gpu".to_string(),
            "expected a positive integer",
        ),
        (
            "/plugins/0/config/model_info",
            json!([]),
            "plugins[0].config.model_info".to_string(),
            "expected an object",
        ),
        (
            &mi("inputs"),
            json!("input_ids"),
            format!("{MI_PATH}.inputs"),
            "expected a list of strings",
        ),
        (
            &mi("inputs/1"),
            json!(2),
            format!("{MI_PATH}.inputs[1]"),
            "expected a string",
        ),
        (
            &mi("input_shapes/1"),
            json!("8*512"),
            format!("{MI_PATH}.input_shapes[1]"),
            "expected a list of strings",
        ),
        (
            &mi("input_shapes/0/1"),
            json!(512),
            format!("{MI_PATH}.input_shapes[0][1]"),
            "expected a string",
        ),
        (
            &mi("input_ranges"),
            json!("[0,1]"),
            format!("{MI_PATH}.input_ranges"),
            "expected a list of groups",
        ),
    ] {
        let e = only_error(|v| set(v, pointer, value.clone()));
        assert_eq!(e.path, path, "{pointer}");
        assert!(e.message.contains(expected), "{pointer}: {e}");
    }
}

#[test]
fn null_means_unset_for_optional_keys() {
    ok(|v| {
        set(v, "/token", json!(null));
        set(v, "/resource", json!(null));
        set(v, &mi("quantization"), json!(null));
    });
    assert_eq!(paths(|v| set(v, "/plugins", json!(null))), vec!["plugins"]);
    assert_eq!(paths(|v| set(v, "/name", json!(null))), vec!["name"]);
}

#[test]
fn name_rule() {
    for good in ["abc", "a_1", "blade_eas_plugin_test", &"a".repeat(63)] {
        ok(|v| set(v, "/name", json!(good)));
    }
    for bad in [
        "ab",
        "Abc",
        "1abc",
        "_abc",
        "a-b-c",
        "abc def",
        "ab\u{e9}",
        "",
        &"a".repeat(64),
    ] {
        let e = only_error(|v| set(v, "/name", json!(bad)));
        assert_eq!(e.path, "name", "{bad:?}");
        assert!(e.message.starts_with("expected 3 to 63 characters"), "{e}");
    }
}

#[test]
fn model_path_rule() {
    ok(|v| set(v, "/model_path", json!("oss://bucket/model/")));
    for bad in ["", "   "] {
        assert_eq!(
            paths(|v| set(v, "/model_path", json!(bad))),
            vec!["model_path"]
        );
    }
}

#[test]
fn processor_rule() {
    let e = only_error(|v| set(v, "/processor", json!("tensorflow_gpu_1.14")));
    assert_eq!(e.path, "processor");
    assert!(
        e.message.contains("tensorflow_cpu_1.15, pytorch_cpu_1.6"),
        "{e}"
    );
    assert!(e.message.contains("onnx_gpu"), "{e}");
}

#[test]
fn metadata_counts() {
    ok(|v| set(v, "/metadata/instance", json!(MAX_INSTANCES)));
    ok(|v| remove(v, "/metadata/instance"));
    for (pointer, value, path) in [
        ("/metadata/instance", json!(0), "metadata.instance"),
        (
            "/metadata/instance",
            json!(MAX_INSTANCES + 1),
            "metadata.instance",
        ),
        ("/metadata/cpu", json!(0), "metadata.cpu"),
        ("/metadata/gpu", json!(0), "metadata.gpu"),
        ("/metadata/memory", json!(0), "metadata.memory"),
        (
            "/metadata/rpc/max_batch_size",
            json!(0),
            "metadata.rpc.max_batch_size",
        ),
        (
            "/metadata/rpc/worker_threads",
            json!(0),
            "metadata.rpc.worker_threads",
        ),
    ] {
        assert_eq!(paths(|v| set(v, pointer, value)), vec![path], "{pointer}");
    }
    // Timeouts may be zero.
    ok(|v| set(v, "/metadata/rpc/max_batch_timeout", json!(0)));
}

#[test]
fn gpu_on_a_cpu_processor() {
    let cpu_service = |v: &mut Value| {
        remove(v, "/plugins");
        set(v, "/processor", json!("pytorch_cpu_1.6"));
    };
    ok(|v| {
        cpu_service(v);
        remove(v, "/metadata/gpu");
    });
    let e = only_error(cpu_service);
    assert_eq!(e.path, "metadata.gpu");
    assert!(
        e.message
            .contains("processor pytorch_cpu_1.6 serves on CPU"),
        "{e}"
    );
}

#[test]
fn cuda_must_match_the_processor() {
    let e = only_error(|v| set(v, "/metadata/cuda", json!("11.0")));
    assert_eq!(e.path, "metadata.cuda");
    assert!(e.message.contains("expected \"10.0\""), "{e}");
    // CUDA 11 processor with the CUDA 11 image.
    ok(|v| {
        set(v, "/processor", json!("pytorch_gpu_1.7"));
        set(v, "/metadata/cuda", json!("11.0"));
        set(v, "/plugins/0/image", json!(CU110_IMAGE));
    });
    // onnx_gpu runs on any CUDA, with either GPU image.
    ok(|v| {
        set(v, "/processor", json!("onnx_gpu"));
        set(v, "/metadata/cuda", json!("11.0"));
    });
}

#[test]
fn at_most_one_plugin() {
    let e = only_error(|v| {
        let plugin = v["plugins"][0].clone();
        v["plugins"].as_array_mut().expect("list").push(plugin);
    });
    assert_eq!(e.path, "plugins");
    assert!(
        e.message.contains("Blade optimizer is the only plugin"),
        "{e}"
    );
    ok(|v| remove(v, "/plugins"));
    ok(|v| set(v, "/plugins", json!([])));
}

#[test]
fn plugin_command() {
    ok(|v| {
        set(
            v,
            "/plugins/0/command",
            json!("blade --optimize_for=gpu  --mode=eas_plugin"),
        )
    });
    let e = only_error(|v| {
        set(
            v,
            "/plugins/0/command",
            json!("blade --mode eas_plugin --optimize_for tpu"),
        )
    });
    assert_eq!(e.path, "plugins[0].command");
    assert!(
        e.message
            .starts_with("expected \"blade --mode eas_plugin --optimize_for cpu\""),
        "{e}"
    );
}

#[test]
fn plugin_image_must_be_known() {
    let e = only_error(|v| set(v, "/plugins/0/image", json!("pai-blade-deploy:latest")));
    assert_eq!(e.path, "plugins[0].image");
    assert!(e.message.contains(CU110_IMAGE), "{e}");
}

#[test]
fn image_device_must_match_the_command() {
    let e = only_error(|v| set(v, "/plugins/0/image", json!(CPU_IMAGE)));
    assert_eq!(e.path, "plugins[0].image");
    assert!(
        e.message.contains("expected a gpu image") && e.message.ends_with("got a cpu build"),
        "{e}"
    );
}

#[test]
fn processor_device_must_match_the_command() {
    let e = only_error(|v| {
        set(v, "/processor", json!("tensorflow_cpu_1.15"));
        remove(v, "/metadata/gpu");
    });
    assert_eq!(e.path, "plugins[0].command");
    assert!(e.message.contains("expected --optimize_for cpu"), "{e}");
}

#[test]
fn image_cuda_must_match_the_processor() {
    let e = only_error(|v| {
        set(v, "/processor", json!("tensorflow_gpu_2.4"));
        set(v, "/metadata/cuda", json!("11.0"));
    });
    assert_eq!(e.path, "plugins[0].image");
    assert!(e.message.ends_with("got one built for CUDA 10.0"), "{e}");
    assert!(e.message.contains(CU110_IMAGE), "{e}");
}

#[test]
fn gpu_plugin_needs_a_resource() {
    let e = only_error(|v| remove(v, "/plugins/0/resource"));
    assert_eq!(e.path, "plugins[0].resource");
    assert_eq!(
        paths(|v| set(v, "/plugins/0/resource", json!(" "))),
        vec!["plugins[0].resource"]
    );
}

#[test]
fn plugin_gpu_type_must_equal_the_services() {
    let e = only_error(|v| set(v, "/resource", json!("V100_8CORE")));
    assert_eq!(e.path, "plugins[0].resource");
    assert!(e.message.contains("GPU type V100"), "{e}");
    // Undeterminable service GPU type: nothing to compare.
    ok(|v| set(v, "/resource", json!("<yourEASResource>")));
    ok(|v| set(v, "/resource", json!("eas-r-1234")));
}

#[test]
fn plugin_gpu_count() {
    assert_eq!(
        paths(|v| set(v, "/plugins/0/gpu", json!(0))),
        vec!["plugins[0].gpu"]
    );
    ok(|v| remove(v, "/plugins/0/gpu"));
    let cpu_plugin = |v: &mut Value| {
        set(v, "/processor", json!("tensorflow_cpu_1.15"));
        remove(v, "/metadata/gpu");
        set(
            v,
            "/plugins/0/command",
            json!("blade --mode eas_plugin --optimize_for cpu"),
        );
        set(v, "/plugins/0/image", json!(CPU_IMAGE));
    };
    let e = only_error(cpu_plugin);
    assert_eq!(e.path, "plugins[0].gpu");
    assert!(e.message.contains("the plugin optimizes for CPU"), "{e}");
    ok(|v| {
        cpu_plugin(v);
        remove(v, "/plugins/0/gpu");
        remove(v, "/plugins/0/resource");
    });
}

#[test]
fn exactly_one_model() {
    let path = "plugins[0].config.model_info";
    let e = only_error(|v| set(v, "/plugins/0/config/model_info", json!({})));
    assert_eq!(
        (e.path.as_str(), e.message.contains("got none")),
        (path, true),
        "{e}"
    );
    let e = only_error(|v| {
        let info = v.pointer(MI).cloned().expect("model");
        set(v, "/plugins/0/config/model_info/other.pb", info);
    });
    assert_eq!(e.path, path);
    assert!(e.message.contains("\"frozen.pb\", \"other.pb\""), "{e}");
    ok(|v| remove(v, "/plugins/0/config"));
}

#[test]
fn model_file_inside_model_path() {
    let rename = |to: &str| {
        let to = to.to_string();
        move |v: &mut Value| {
            let info = v.pointer(MI).cloned().expect("model");
            set(v, "/plugins/0/config/model_info", json!({ to: info }));
        }
    };
    ok(rename("saved/model.pb"));
    ok(rename("model"));
    for (bad, path) in [
        (
            "/models/frozen.pb",
            "plugins[0].config.model_info[\"/models/frozen.pb\"]",
        ),
        (
            "../frozen.pb",
            "plugins[0].config.model_info[\"../frozen.pb\"]",
        ),
        (
            "a/../../b.pb",
            "plugins[0].config.model_info[\"a/../../b.pb\"]",
        ),
        (
            "oss://b/frozen.pb",
            "plugins[0].config.model_info[\"oss://b/frozen.pb\"]",
        ),
        ("C:\\m.pb", "plugins[0].config.model_info[\"C:\\\\m.pb\"]"),
        ("", "plugins[0].config.model_info[\"\"]"),
    ] {
        let e = only_error(rename(bad));
        assert_eq!(e.path, path, "{bad:?}");
    }
    // An identifier-like key is written with a dot.
    let e = only_error(|v| {
        rename("model")(v);
        set(
            v,
            "/plugins/0/config/model_info/model/test_data",
            json!("/t.npy"),
        );
    });
    assert_eq!(e.path, "plugins[0].config.model_info.model.test_data");
}

#[test]
fn optimization_level() {
    ok(|v| set(v, &mi("optimization_level"), json!("o1")));
    for bad in [json!("o3"), json!("O1"), json!(1)] {
        let e = only_error(|v| set(v, &mi("optimization_level"), bad.clone()));
        assert_eq!(e.path, format!("{MI_PATH}.optimization_level"));
        assert!(e.message.starts_with("expected \"o1\""), "{e}");
    }
    let e = only_error(|v| set(v, &mi("optimization_level"), json!("o3")));
    assert!(e.message.ends_with("got the string \"o3\""), "{e}");
}

#[test]
fn input_and_output_names() {
    ok(|v| remove(v, &mi("outputs")));
    for (pointer, value, path) in [
        (mi("outputs"), json!([]), format!("{MI_PATH}.outputs")),
        (mi("inputs"), json!([]), format!("{MI_PATH}.inputs")),
        (
            mi("inputs"),
            json!(["input_ids", ""]),
            format!("{MI_PATH}.inputs[1]"),
        ),
        (
            mi("inputs"),
            json!(["mask", "mask"]),
            format!("{MI_PATH}.inputs[1]"),
        ),
        (
            mi("outputs"),
            json!(["a", "b", "a"]),
            format!("{MI_PATH}.outputs[2]"),
        ),
    ] {
        assert_eq!(paths(|v| set(v, &pointer, value)), vec![path], "{pointer}");
    }
    let e = only_error(|v| set(v, &mi("inputs"), json!(["mask", "mask"])));
    assert!(
        e.message.contains("got \"mask\" again (the same as [0])"),
        "{e}"
    );
}

#[test]
fn data_files_inside_model_path() {
    ok(|v| set(v, &mi("test_data"), json!("test_len9240_bc1.npy")));
    for key in ["test_data", "calibration_dataset"] {
        for bad in ["/etc/passwd", "../calib.npy", "", "s3://b/c.npy"] {
            assert_eq!(
                paths(|v| set(v, &mi(key), json!(bad))),
                vec![format!("{MI_PATH}.{key}")],
                "{bad}"
            );
        }
    }
}

#[test]
fn input_shapes() {
    let p = |s: &str| format!("{MI_PATH}.input_shapes{s}");
    ok(|v| set(v, &mi("input_shapes"), json!([["1*512", "1*512"]])));
    ok(|v| {
        remove(v, &mi("inputs"));
        set(
            v,
            &mi("input_shapes"),
            json!([["1*512", "3*256"], ["5*512", "9*256"], ["10*512", "27*256"]]),
        );
    });
    assert_eq!(
        paths(|v| set(v, &mi("input_shapes"), json!([]))),
        vec![p("")]
    );
    // One group short of the number of inputs.
    let e = only_error(|v| set(v, &mi("input_shapes/1"), json!(["8*512"])));
    assert_eq!(e.path, p("[1]"));
    assert!(
        e.message
            .contains("expected 2 shapes (one per input, and inputs lists 2), got 1"),
        "{e}"
    );
    assert_eq!(
        paths(|v| set(v, &mi("input_shapes/0"), json!([]))),
        vec![p("[0]")]
    );
    // Without inputs, every group must be as long as the first.
    let e = only_error(|v| {
        remove(v, &mi("inputs"));
        set(v, &mi("input_shapes/1"), json!(["8*512"]));
    });
    assert_eq!(e.path, p("[1]"));
    // Each element is parsed, and reported at its own path.
    let e = only_error(|v| set(v, &mi("input_shapes/1/0"), json!("1x512")));
    assert_eq!(e.path, p("[1][0]"));
    assert_eq!(
        e.message,
        "expected a shape like \"1*512\" (positive integers joined by '*'), got \"1x512\""
    );
    assert_eq!(
        paths(|v| set(
            v,
            &mi("input_shapes"),
            json!([["0*512", "1*512"], ["8*512", "-8"]])
        )),
        vec![p("[0][0]"), p("[1][1]")]
    );
}

#[test]
fn input_ranges() {
    let p = |s: &str| format!("{MI_PATH}.input_ranges{s}");
    ok(|v| {
        set(
            v,
            &mi("input_ranges"),
            json!([["[0.1,0.4]", "[a,f]"], ["[1.1,1.4]", "[h,l]"]]),
        )
    });
    assert_eq!(
        paths(|v| set(v, &mi("input_ranges"), json!([]))),
        vec![p("")]
    );
    let e = only_error(|v| set(v, &mi("input_ranges/0"), json!(["[0,1]", "[0,1]", "[0,1]"])));
    assert_eq!(e.path, p("[0]"));
    assert!(e.message.contains("expected 2 ranges"), "{e}");
    // Without inputs, the count comes from input_shapes...
    let e = only_error(|v| {
        remove(v, &mi("inputs"));
        set(v, &mi("input_ranges/1"), json!(["[0,1]"]));
    });
    assert_eq!(e.path, p("[1]"));
    assert!(e.message.contains("like the groups of input_shapes"), "{e}");
    // ...and without both, from the first range group.
    let e = only_error(|v| {
        remove(v, &mi("inputs"));
        remove(v, &mi("input_shapes"));
        set(v, &mi("input_ranges/1"), json!(["[0,1]"]));
    });
    assert_eq!(e.path, p("[1]"));
    let e = only_error(|v| set(v, &mi("input_ranges/1/1"), json!("[1,0]")));
    assert_eq!(e.path, p("[1][1]"));
    assert!(e.message.starts_with("expected a range like"), "{e}");
}

#[test]
fn weight_adjustment() {
    let pointer = mi("quantization/weight_adjustment");
    let path = format!("{MI_PATH}.quantization.weight_adjustment");
    ok(|v| set(v, &pointer, json!("false")));
    for bad in [json!(true), json!("yes"), json!("True"), json!(1)] {
        let e = only_error(|v| set(v, &pointer, bad.clone()));
        assert_eq!(e.path, path);
        assert!(
            e.message
                .starts_with("expected the string \"true\" or \"false\""),
            "{e}"
        );
    }
    // The typed layer alone catches strings other than the two.
    let mut cfg = parse_and_validate(&base().to_string()).expect("valid");
    if let Some(info) = cfg.plugins[0]
        .config
        .as_mut()
        .and_then(|c| c.model_info.get_mut("frozen.pb"))
    {
        info.quantization = Some(Quantization {
            weight_adjustment: Some("TRUE".into()),
        });
    }
    assert_eq!(
        validate(&cfg)
            .into_iter()
            .map(|e| e.path)
            .collect::<Vec<_>>(),
        vec![path]
    );
}

#[test]
fn token_rule() {
    ok(|v| set(v, "/token", json!("a".repeat(MIN_TOKEN_LEN))));
    ok(|v| remove(v, "/token"));
    for bad in [
        "short",
        "0123456789 abcdef",
        "0123456789abcdef\n",
        &"a".repeat(MIN_TOKEN_LEN - 1),
    ] {
        assert_eq!(
            paths(|v| set(v, "/token", json!(bad))),
            vec!["token"],
            "{bad:?}"
        );
    }
}

#[test]
fn service_resource_not_empty() {
    assert_eq!(paths(|v| set(v, "/resource", json!(""))), vec!["resource"]);
}

#[test]
fn broken_plugin_keeps_later_indices_and_causes_no_cascade() {
    let errs = paths(|v| {
        let second = v["plugins"][0].clone();
        set(v, "/plugins", json!([42, second]));
        set(v, "/plugins/1/gpu", json!(0));
    });
    assert_eq!(errs, vec!["plugins[0]", "plugins", "plugins[1].gpu"]);
}

#[test]
fn autoscaler_bounds_metrics_and_thresholds() {
    ok(|v| set(v, "/autoscaler/max", json!(MAX_INSTANCES)));
    ok(|v| remove(v, "/autoscaler"));
    let e = only_error(|v| set(v, "/autoscaler/min", json!(0)));
    assert_eq!(e.path, "autoscaler.min");
    let e = only_error(|v| set(v, "/autoscaler/max", json!(MAX_INSTANCES + 1)));
    assert_eq!(e.path, "autoscaler.max");
    // max below min, and the starting count outside the range.
    assert_eq!(
        paths(|v| {
            set(v, "/autoscaler/min", json!(3));
            set(v, "/autoscaler/max", json!(2));
        }),
        ["autoscaler.max"]
    );
    let e = only_error(|v| set(v, "/autoscaler/scale_strategies", json!([])));
    assert_eq!(e.path, "autoscaler.scale_strategies");
    let e = only_error(|v| {
        set(
            v,
            "/autoscaler/scale_strategies/1/metric_name",
            json!("gpu"),
        )
    });
    assert_eq!(e.path, "autoscaler.scale_strategies[1].metric_name");
    assert!(e.message.contains("qps, cpu"), "{}", e.message);
    let e = only_error(|v| {
        set(
            v,
            "/autoscaler/scale_strategies/1/metric_name",
            json!("qps"),
        )
    });
    assert!(e.message.contains("already"), "{}", e.message);
    for bad in [json!(0), json!(-5)] {
        let e = only_error(|v| set(v, "/autoscaler/scale_strategies/0/threshold", bad));
        assert_eq!(e.path, "autoscaler.scale_strategies[0].threshold");
    }
    let e = only_error(|v| set(v, "/autoscaler/scale_strategies/0/threshold", json!("50")));
    assert_eq!(e.path, "autoscaler.scale_strategies[0].threshold");
    let e = only_error(|v| set(v, "/autoscaler/scale_strategies/0/unit", json!("rps")));
    assert_eq!(e.path, "autoscaler.scale_strategies[0].unit");
    let e = only_error(|v| remove(v, "/autoscaler/min"));
    assert_eq!(e.path, "autoscaler.min");
}

#[test]
fn cronscaler_names_schedules_and_sizes() {
    ok(|v| set(v, "/cronscaler/scale_jobs/0/schedule", json!("@hourly")));
    ok(|v| remove(v, "/cronscaler"));
    let e = only_error(|v| {
        set(
            v,
            "/cronscaler/scale_jobs/1/schedule",
            json!("every day at 8"),
        )
    });
    assert_eq!(e.path, "cronscaler.scale_jobs[1].schedule");
    assert!(e.message.contains("cron schedule"), "{}", e.message);
    let e = only_error(|v| set(v, "/cronscaler/scale_jobs/0/schedule", json!("61 * * * *")));
    assert_eq!(e.path, "cronscaler.scale_jobs[0].schedule");
    let e = only_error(|v| set(v, "/cronscaler/scale_jobs/1/name", json!("day")));
    assert_eq!(e.path, "cronscaler.scale_jobs[1].name");
    let e = only_error(|v| set(v, "/cronscaler/scale_jobs/0/name", json!(" ")));
    assert_eq!(e.path, "cronscaler.scale_jobs[0].name");
    for bad in [0, MAX_INSTANCES + 1] {
        let e = only_error(|v| set(v, "/cronscaler/scale_jobs/0/target_size", json!(bad)));
        assert_eq!(e.path, "cronscaler.scale_jobs[0].target_size");
    }
    let e = only_error(|v| set(v, "/cronscaler/scale_jobs", json!([])));
    assert_eq!(e.path, "cronscaler.scale_jobs");
    let e = only_error(|v| remove(v, "/cronscaler/scale_jobs/0/target_size"));
    assert_eq!(e.path, "cronscaler.scale_jobs[0].target_size");
    let e = only_error(|v| set(v, "/cronscaler/scale_jobs/0/when", json!("now")));
    assert_eq!(e.path, "cronscaler.scale_jobs[0].when");
}

#[test]
fn the_queue_of_an_instance_is_bounded() {
    ok(|v| {
        set(
            v,
            "/metadata/rpc/max_queue_size",
            json!(shared::validate::MAX_QUEUE_SIZE),
        )
    });
    let e = only_error(|v| {
        set(
            v,
            "/metadata/rpc/max_queue_size",
            json!(shared::validate::MAX_QUEUE_SIZE + 1),
        )
    });
    assert_eq!(e.path, "metadata.rpc.max_queue_size");
    assert!(e.message.contains("at most 4096"), "{}", e.message);
}

#[test]
fn rolling_strategy_is_counts_or_per_cents() {
    ok(|v| set(v, "/metadata/rolling_strategy/max_surge", json!("25%")));
    ok(|v| remove(v, "/metadata/rolling_strategy"));
    for bad in [json!("25"), json!("150%"), json!(-1), json!(1.5)] {
        let e = only_error(|v| set(v, "/metadata/rolling_strategy/max_surge", bad.clone()));
        assert_eq!(e.path, "metadata.rolling_strategy.max_surge", "{bad}");
    }
    let e = only_error(|v| set(v, "/metadata/rolling_strategy/surge", json!(1)));
    assert_eq!(e.path, "metadata.rolling_strategy.surge");
    use shared::config::{RollingStrategy, Share};
    let rs = |s: Option<Share>, u: Option<Share>| RollingStrategy {
        max_surge: s,
        max_unavailable: u,
    };
    // EAS's defaults: 2 % of the instances (at least 1) at once, none missing.
    assert_eq!(RollingStrategy::steps(None, 4), (1, 0));
    assert_eq!(RollingStrategy::steps(None, 100), (2, 0));
    let p = |s: &str| Some(Share::Percent(s.into()));
    assert_eq!(
        RollingStrategy::steps(Some(&rs(p("50%"), p("25%"))), 4),
        (2, 1)
    );
    assert_eq!(RollingStrategy::steps(Some(&rs(p("30%"), None)), 4), (2, 0));
    assert_eq!(
        RollingStrategy::steps(Some(&rs(Some(Share::Count(0)), None)), 4),
        (1, 0)
    );
    // Never all missing at once.
    assert_eq!(
        RollingStrategy::steps(Some(&rs(None, Some(Share::Count(9)))), 3),
        (1, 2)
    );
}

#[test]
fn health_checks_take_timings_and_a_built_in_probe() {
    for (check, field, bad) in [
        ("liveness_check", "period_seconds", 0),
        ("readiness_check", "timeout_seconds", 4000),
        ("startup_check", "failure_threshold", 0),
        ("liveness_check", "success_threshold", 101),
    ] {
        let e = only_error(|v| set(v, &format!("/metadata/{check}/{field}"), json!(bad)));
        assert_eq!(e.path, format!("metadata.{check}.{field}"));
    }
    let e = only_error(|v| {
        set(
            v,
            "/metadata/liveness_check/http_get",
            json!({"path": "/health", "port": 8000}),
        )
    });
    assert_eq!(e.path, "metadata.liveness_check.http_get");
    assert!(e.message.contains("built in"), "{}", e.message);
    let e = only_error(|v| set(v, "/metadata/readiness_check/period", json!(3)));
    assert_eq!(e.path, "metadata.readiness_check.period");
    let cfg: ServiceConfig = serde_json::from_value(base()).expect("the base config");
    let startup = cfg.metadata.startup_check.expect("startup_check");
    assert_eq!(startup.budget(), std::time::Duration::from_secs(305));
}

#[test]
fn warm_up_data_is_a_file_inside_the_model_folder() {
    ok(|v| remove(v, "/warm_up_data_path"));
    for bad in ["../up.npz", "/etc/passwd", ""] {
        let e = only_error(|v| set(v, "/warm_up_data_path", json!(bad)));
        assert_eq!(e.path, "warm_up_data_path", "{bad}");
    }
}
