//! "Try it": sends one prediction to the service from the page, the way any
//! client would (KServe v2 JSON, the service token in `Authorization`), and
//! shows what came back and how long the round trip took in the browser.

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::{json, Value};
use shared::api::{InferResponse, InferTensor, ModelSignature, TensorSpec};

use crate::api::{self, Failure};
use crate::components::{CollectAny, ErrorBox};

/// Values shown per output: enough to recognise an answer, not a dump.
const FIRST_VALUES: usize = 8;

#[component]
pub fn TryIt(name: String, token: String, signature: Option<ModelSignature>) -> impl IntoView {
    let example = signature
        .as_ref()
        .map(example_request)
        .unwrap_or_else(|| "{\"inputs\": []}".to_string());
    let body = RwSignal::new(example.clone());
    let busy = RwSignal::new(false);
    let answer = RwSignal::new(None::<Result<(InferResponse, f64), Failure>>);
    let send = move |_| {
        let text = body.get_untracked();
        // Checked here so a typo is a message about the JSON, not a 400.
        if let Err(e) = serde_json::from_str::<Value>(&text) {
            answer.set(Some(Err(Failure::local(format!(
                "The request is not valid JSON: {e}"
            )))));
            return;
        }
        let (name, token) = (name.clone(), token.clone());
        busy.set(true);
        answer.set(None);
        spawn_local(async move {
            let result = api::predict(&name, &token, &text).await;
            answer.try_set(Some(result));
            busy.try_set(false);
        });
    };
    view! {
        <div class="try-it" data-test="try-it">
            <p class="muted">
                "A KServe v2 request built from the model's inputs ("
                <code>"-1"</code>" dimensions as 1). Edit it and send it to the endpoint."
            </p>
            <textarea
                class="request"
                data-test="try-request"
                spellcheck="false"
                aria-label="Prediction request (KServe v2 JSON)"
                prop:value=move || body.get()
                on:input=move |ev| body.set(event_target_value(&ev))
            ></textarea>
            <p class="actions">
                <button
                    class="primary"
                    data-test="try-send"
                    on:click=send
                    disabled=move || busy.get()
                >
                    "Send"
                </button>
                <button on:click=move |_| body.set(example.clone())>"Reset example"</button>
            </p>
            {move || match answer.get() {
                None => ().into_any(),
                Some(Err(f)) => view! { <ErrorBox failure=f/> }.into_any(),
                Some(Ok((resp, ms))) => prediction_result(resp, ms).into_any(),
            }}
        </div>
    }
}

/// The answer: each output's name, datatype, shape and first values.
fn prediction_result(resp: InferResponse, ms: f64) -> impl IntoView {
    let latency = format!(
        "Answered in {} (measured in the browser)",
        crate::format::ms(ms)
    );
    view! {
        <div class="try-result" data-test="try-result">
            <p class="valid" data-test="try-latency">{latency}</p>
            <table class="grid">
                <thead>
                    <tr><th>"Output"</th><th>"Datatype"</th><th>"Shape"</th><th>"First values"</th></tr>
                </thead>
                <tbody>
                    {resp
                        .outputs
                        .into_iter()
                        .map(output_row)
                        .collect_any()}
                </tbody>
            </table>
        </div>
    }
}

fn output_row(t: InferTensor) -> impl IntoView {
    let dims: Vec<String> = t.shape.iter().map(i64::to_string).collect();
    let shape = format!("[{}]", dims.join(", "));
    let (first, total) = first_values(&t.data, FIRST_VALUES);
    let shown = if total > first.len() {
        format!("{} … ({total} values)", first.join(", "))
    } else {
        first.join(", ")
    };
    view! {
        <tr data-test="try-output">
            <td><code>{t.name}</code></td>
            <td>{t.datatype}</td>
            <td>{shape}</td>
            <td><code>{shown}</code></td>
        </tr>
    }
}

/// The first `n` scalars of a flat or nested JSON array, formatted, and how
/// many scalars there are in all.
fn first_values(data: &Value, n: usize) -> (Vec<String>, usize) {
    fn walk(v: &Value, n: usize, out: &mut Vec<String>, total: &mut usize) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, n, out, total)),
            scalar => {
                *total += 1;
                if out.len() < n {
                    out.push(match scalar.as_f64() {
                        Some(x) if scalar.is_f64() => format!("{x:.5}"),
                        _ => scalar.to_string(),
                    });
                }
            }
        }
    }
    let (mut out, mut total) = (Vec::new(), 0);
    walk(data, n, &mut out, &mut total);
    (out, total)
}

/// A valid request for `sig`: one tensor per input, dynamic dimensions as 1,
/// one input per line so even a large image input stays readable.
pub fn example_request(sig: &ModelSignature) -> String {
    let lines: Vec<String> = sig
        .inputs
        .iter()
        .map(|spec| format!("    {}", example_tensor(spec)))
        .collect();
    format!("{{\n  \"inputs\": [\n{}\n  ]\n}}", lines.join(",\n"))
}

fn example_tensor(spec: &TensorSpec) -> Value {
    let shape: Vec<i64> = spec
        .shape
        .iter()
        .map(|&d| if d < 0 { 1 } else { d })
        .collect();
    let count = shape.iter().product::<i64>().max(0) as usize;
    json!({
        "name": spec.name,
        "shape": shape,
        "datatype": spec.datatype,
        "data": example_values(spec, count),
    })
}

/// Values that any model of this kind accepts: ones for masks, zeros for
/// segment/type ids (their vocabulary may be just {0, 1}), small token-like
/// ids for other integers, zeros for floats, `false` for booleans.
fn example_values(spec: &TensorSpec, count: usize) -> Vec<Value> {
    let name = spec.name.to_lowercase();
    let integer = spec.datatype.starts_with("INT") || spec.datatype.starts_with("UINT");
    (0..count)
        .map(|i| match spec.datatype.as_str() {
            "BOOL" => json!(false),
            _ if integer && name.contains("mask") => json!(1),
            _ if integer && (name.contains("type") || name.contains("segment")) => json!(0),
            _ if integer => json!(1 + (i % 100)),
            _ => json!(0.0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, datatype: &str, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn the_example_is_a_valid_request_with_dynamic_dims_as_one() {
        let sig = ModelSignature {
            format: "onnx".into(),
            inputs: vec![
                spec("input_ids", "INT64", &[-1, -1]),
                spec("attention_mask", "INT64", &[-1, 3]),
                spec("x", "FP32", &[2]),
            ],
            outputs: vec![],
        };
        let req: shared::api::InferRequest =
            serde_json::from_str(&example_request(&sig)).expect("valid KServe v2 JSON");
        assert_eq!(req.inputs[0].shape, vec![1, 1]);
        assert_eq!(req.inputs[1].data, json!([1, 1, 1]));
        assert_eq!(req.inputs[2].data, json!([0.0, 0.0]));
    }

    #[test]
    fn first_values_flattens_nested_arrays() {
        let (v, n) = first_values(&json!([[1, 2], [3, 4]]), 3);
        assert_eq!((v, n), (vec!["1".into(), "2".into(), "3".into()], 4));
    }
}
