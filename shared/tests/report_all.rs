//! parse_and_validate reports every problem of a config at once, at its exact path.

use serde_json::{json, Value};
use shared::config::ServiceConfig;
use shared::validate::{parse_and_validate, ValidationError};

const GPU_PLUGIN: &str = include_str!("examples/gpu_plugin.json");
const MI: &str = "plugins[0].config.model_info[\"frozen.pb\"]";

fn errors(v: &Value) -> Vec<ValidationError> {
    parse_and_validate(&v.to_string()).err().unwrap_or_default()
}

fn paths(errors: &[ValidationError]) -> Vec<&str> {
    errors.iter().map(|e| e.path.as_str()).collect()
}

fn gpu_example() -> Value {
    serde_json::from_str(GPU_PLUGIN).expect("example is JSON")
}

#[test]
fn five_violations_five_errors() {
    let mut v = gpu_example();
    // 1. name charset
    v["name"] = json!("Blade-Test");
    // 2. instance >= 1
    v["metadata"]["instance"] = json!(0);
    // 3. the image's device must be the one --optimize_for names
    v["plugins"][0]["image"] =
        json!("registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest");
    let info = &mut v["plugins"][0]["config"]["model_info"]["frozen.pb"];
    // 4. shape grammar (group 0 has the right length: one input)
    info["input_shapes"] = json!([["1*512"], ["8x512"]]);
    // 5. weight_adjustment is the string "true", not the boolean
    info["quantization"] = json!({ "weight_adjustment": true });

    let errs = errors(&v);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    let mut got = paths(&errs);
    got.sort_unstable();
    let mut want = vec![
        "name".to_string(),
        "metadata.instance".to_string(),
        "plugins[0].image".to_string(),
        format!("{MI}.input_shapes[1][0]"),
        format!("{MI}.quantization.weight_adjustment"),
    ];
    want.sort_unstable();
    assert_eq!(got, want);
    for e in &errs {
        assert!(
            e.message.starts_with("expected"),
            "every message says what is expected: {e}"
        );
    }
}

#[test]
fn structural_and_rule_errors_come_together() {
    let mut v = gpu_example();
    v.as_object_mut().expect("object").remove("processor"); // missing key
    v["metadata"]["cpu"] = json!("4"); // wrong type
    v["token"] = json!("short"); // rule
    v["plugins"][0]["config"]["model_info"]["frozen.pb"]["inputs"] = json!([]); // rule
    let errs = errors(&v);
    assert_eq!(
        paths(&errs),
        vec![
            "processor",
            "metadata.cpu",
            "token",
            &format!("{MI}.inputs")
        ],
        "{errs:#?}"
    );
}

#[test]
fn unknown_keys_everywhere_are_each_named() {
    let mut v = gpu_example();
    v["containers"] = json!([]);
    v["metadata"]["gpus"] = json!(1);
    v["metadata"]["memroy"] = json!(1);
    v["plugins"][0]["config"]["model_info"]["frozen.pb"]["input_shape"] = json!([["1*512"]]);
    let errs = errors(&v);
    assert_eq!(
        paths(&errs),
        vec![
            "containers".to_string(),
            "metadata.gpus".to_string(),
            "metadata.memroy".to_string(),
            format!("{MI}.input_shape"),
        ]
    );
    for (e, key) in errs
        .iter()
        .zip(["containers", "gpus", "memroy", "input_shape"])
    {
        assert!(e.message.contains(&format!("unknown key \"{key}\"")), "{e}");
        assert!(e.message.contains("allowed keys:"), "{e}");
    }
    assert!(
        errs[3].message.contains("input_shapes"),
        "names the key meant: {}",
        errs[3]
    );
}

/// Every value in the tree replaced, one at a time, by values of every JSON type: never a panic,
/// and the walker never accepts what serde rejects nor builds anything other than serde would.
#[test]
fn mutations_never_panic_and_agree_with_serde() {
    let replacements = [
        json!(null),
        json!(true),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(u64::MAX),
        json!(""),
        json!("o2"),
        json!("[a,f]"),
        json!([]),
        json!([["1*2"]]),
        json!({}),
    ];
    let base = gpu_example();
    let mut pointers = Vec::new();
    collect_pointers(&base, String::new(), &mut pointers);
    assert!(pointers.len() > 25);
    let mut accepted = 0;
    for pointer in &pointers {
        for new in &replacements {
            let mut v = base.clone();
            if let Some(slot) = v.pointer_mut(pointer) {
                *slot = new.clone();
            }
            let text = v.to_string();
            let ours = parse_and_validate(&text);
            let serde = serde_json::from_str::<ServiceConfig>(&text);
            match (&ours, &serde) {
                (Ok(cfg), Ok(typed)) => {
                    accepted += 1;
                    assert_eq!(cfg, typed, "{pointer} = {new}");
                }
                (Ok(_), Err(e)) => panic!("{pointer} = {new}: accepted, but serde says {e}"),
                (Err(errs), _) => assert!(!errs.is_empty()),
            }
        }
    }
    assert!(accepted > 0);
}

fn collect_pointers(v: &Value, here: String, out: &mut Vec<String>) {
    let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                collect_pointers(child, format!("{here}/{}", escape(k)), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_pointers(child, format!("{here}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(here);
}

#[test]
fn hostile_inputs_do_not_panic() {
    let deep = "[".repeat(10_000);
    let long_key = format!("{{\"{}\": 1}}", "k".repeat(100_000));
    for text in [
        "",
        "{",
        "\u{feff}{}",
        &deep,
        &long_key,
        "{\"name\": \"\\ud800\"}",
        r#"{"plugins": [[], {}, null, {"config": {"model_info": {"": {
            "input_shapes": [["99999999999999999999999*1"]], "input_ranges": [["[1e400,2]"]]
        }}}}]}"#,
        r#"{"name": "abc", "model_path": "m", "processor": "onnx_cpu",
            "metadata": {"instance": 1e3}}"#,
    ] {
        let result = parse_and_validate(text);
        assert!(result.is_err(), "{:.60}", text);
    }
    // Long user strings are shortened in messages.
    let errs = parse_and_validate(&long_key).err().unwrap_or_default();
    assert!(errs.iter().all(|e| e.message.len() < 1_000), "{errs:.200?}");
}

#[test]
fn errors_serialize_for_the_api() {
    let errs = parse_and_validate("{}").err().unwrap_or_default();
    let json = serde_json::to_value(&errs).expect("serializes");
    assert_eq!(
        json[0],
        json!({ "path": "name", "message": "missing required key \"name\"" })
    );
}
