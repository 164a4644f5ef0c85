//! `/new`: the config editor. Validated on every keystroke with the same
//! `shared::parse_and_validate` the server runs; Deploy is enabled only for a
//! valid config and goes to the service page. A model uploaded here lands in
//! the config's `model_path`; the service is created in the chosen team.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_navigate;
use serde_json::Value;
use shared::api::ServiceSummary;

use crate::api::{self, Failure};
use crate::auth::use_auth;
use crate::components::{ActionError, CollectAny, ModelUpload, PathErrors};

/// The picker's entry after the seed's examples: the server's example
/// model, uploaded for the user, with a config that deploys as it is (the
/// seed's examples name a model folder and a resource group to fill in).
const READY: usize = EXAMPLES.len();

/// The seed's example configs, as shipped in `shared`'s tests.
const EXAMPLES: [(&str, &str); 3] = [
    (
        "CPU with the Blade plugin",
        include_str!("../../../shared/tests/examples/cpu_plugin.json"),
    ),
    (
        "GPU with the Blade plugin",
        include_str!("../../../shared/tests/examples/gpu_plugin.json"),
    ),
    (
        "No plugin",
        include_str!("../../../shared/tests/examples/no_plugin.json"),
    ),
];

#[component]
pub fn NewServicePage() -> impl IntoView {
    let auth = use_auth();
    let navigate = use_navigate();
    let text = RwSignal::new(EXAMPLES[0].1.to_string());
    let errors =
        Memo::new(move |_| text.with(|t| shared::parse_and_validate(t).err().unwrap_or_default()));
    let busy = RwSignal::new(false);
    let failure = RwSignal::new(None::<Failure>);
    // What the server says it would meet (`POST /api/v2/services/check`:
    // resource groups, the model path, the processor), asked once typing
    // pauses and only of a config that passes the rules here; `None` while
    // the answer for the current text is not in.
    let server_problems = RwSignal::new(None::<Vec<shared::ValidationError>>);
    {
        let asked = std::rc::Rc::new(std::cell::Cell::new(0u32));
        let pending =
            std::rc::Rc::new(std::cell::Cell::new(None::<leptos::prelude::TimeoutHandle>));
        Effect::new(move |_| {
            let body = text.get();
            if let Some(h) = pending.take() {
                h.clear();
            }
            server_problems.set(None);
            if !errors.with(Vec::is_empty) {
                return;
            }
            let n = asked.get() + 1;
            asked.set(n);
            let asked = asked.clone();
            let handle = leptos::prelude::set_timeout_with_handle(
                move || {
                    let Some(token) = auth.current() else { return };
                    spawn_local(async move {
                        let answer = api::post::<shared::api::ConfigCheck>(
                            "/api/v2/services/check",
                            &token,
                            &body,
                        )
                        .await;
                        // A later edit asked again: this answer is stale.
                        if asked.get() == n {
                            server_problems
                                .try_set(Some(answer.map(|c| c.problems).unwrap_or_default()));
                        }
                    });
                },
                std::time::Duration::from_millis(400),
            );
            pending.set(handle.ok());
        });
    }
    // The team to create the service in; empty lets the server pick the
    // caller's first team where they may deploy.
    let team = RwSignal::new(String::new());
    Effect::new(move |_| {
        let teams = auth.deploy_teams();
        if !teams.contains(&team.get_untracked()) {
            team.set(teams.into_iter().next().unwrap_or_default());
        }
    });
    // Re-read only when the user's roles are (sign-in, reload).
    let may_deploy = move || auth.may_deploy_somewhere();
    let upload_note = RwSignal::new(None::<String>);
    let on_uploaded = Callback::new(move |model_path: String| {
        let mut updated = None;
        text.with_untracked(|t| {
            updated = with_model_path(t, &model_path).map(|t| {
                // The processor follows the file: an .onnx is served by ONNX
                // Runtime whatever example the config started from.
                let current = serde_json::from_str::<Value>(&t).ok().and_then(|v| {
                    v.get("processor")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                });
                match processor_for(&model_path, current.as_deref()) {
                    Some(p) if current.as_deref() != Some(p) => {
                        with_string_key(&t, "processor", p).unwrap_or(t)
                    }
                    _ => t,
                }
            })
        });
        match updated {
            Some(t) => {
                text.set(t);
                upload_note.set(None);
            }
            None => upload_note.set(Some(
                "The config is not a JSON object, so model_path was not set: copy the path into it."
                    .into(),
            )),
        }
    });

    // The example the editor started from (its text as loaded), and one
    // picked while the text holds edits of the user's (asked first: picking
    // replaces them). Index READY is the server's own example model.
    let example = RwSignal::new(0usize);
    let pristine = RwSignal::new(EXAMPLES[0].1.to_string());
    let replacing = RwSignal::new(None::<usize>);
    let set_text = move |i: usize, t: String| {
        text.set(t.clone());
        pristine.set(t);
        example.set(i);
        replacing.set(None);
        failure.set(None);
    };
    let load_example = move |i: usize| {
        if let Some((_, json)) = EXAMPLES.get(i) {
            set_text(i, json.to_string());
            return;
        }
        // The ready-to-deploy example: the server files its model as an
        // upload and answers a config that deploys it.
        let Some(token) = auth.current() else { return };
        busy.set(true);
        spawn_local(async move {
            match api::post::<Value>("/api/v2/uploads/example", &token, "").await {
                Ok(v) => {
                    let config = serde_json::to_string_pretty(&v["config"]).unwrap_or_default();
                    set_text(READY, config);
                }
                Err(f) => {
                    replacing.try_set(None);
                    failure.try_set(Some(f));
                }
            }
            busy.try_set(false);
        });
    };
    let pick_example = move |ev: leptos::ev::Event| {
        let Ok(i) = event_target_value(&ev).parse::<usize>() else {
            return;
        };
        let edited = text.with_untracked(|t| pristine.with_untracked(|p| t != p));
        if edited {
            replacing.set(Some(i));
        } else {
            load_example(i);
        }
    };
    let deploy = move |_| {
        let Some(token) = auth.current() else { return };
        let body = text.get_untracked();
        let navigate = navigate.clone();
        let path = match team.get_untracked() {
            t if t.is_empty() => "/api/v2/services".to_string(),
            t => format!("/api/v2/services?team={}", api::segment(&t)),
        };
        busy.set(true);
        failure.set(None);
        spawn_local(async move {
            // The answer is the new service; its name is all this page needs.
            match api::post::<ServiceSummary>(&path, &token, &body).await {
                Ok(d) => {
                    let to = format!("/services/{}", api::segment(&d.name));
                    navigate(&to, Default::default());
                }
                Err(f) => {
                    failure.try_set(Some(f));
                    busy.try_set(false);
                }
            }
        });
    };

    view! {
        <h1>"New service"</h1>
        <div class="editor-head">
            <label>
                "Start from an example: "
                <select
                    data-test="example"
                    on:change=pick_example
                    prop:value=move || replacing.get().unwrap_or(example.get()).to_string()
                >
                    {EXAMPLES
                        .iter()
                        .enumerate()
                        .map(|(i, (label, _))| view! { <option value=i.to_string()>{*label}</option> })
                        .collect_any()}
                    {move || (may_deploy() == Some(true)).then(|| view! {
                        <option value=READY.to_string()>"A small example model, ready to deploy"</option>
                    })}
                </select>
            </label>
            {move || replacing.get().map(|i| view! {
                <span class="confirm" data-test="confirm-example">
                    "Replace your edits with this example? "
                    <button data-test="confirm-example-button" on:click=move |_| load_example(i)>"Replace"</button>
                    <button data-test="keep-edits" on:click=move |_| replacing.set(None)>"Keep my edits"</button>
                </span>
            })}
            <span class="muted">
                " model_path: a "<code>"upload://"</code>" path (upload below, or "<code>"whet create"</code>
                "), or "<code>"file://"</code>" under a "<code>"--model-root"</code>" folder."
            </span>
        </div>
        {move || {
            (may_deploy() == Some(true)).then(|| view! {
                <ModelUpload on_uploaded=on_uploaded/>
                {move || upload_note.get().map(|n| view! { <p class="invalid">{n}</p> })}
            })
        }}
        <div class="editor">
            <textarea
                class="config"
                data-test="config-editor"
                spellcheck="false"
                aria-label="Service config (JSON)"
                prop:value=move || text.get()
                on:input=move |ev| {
                    text.set(event_target_value(&ev));
                    // A server's answer was about the config as it was.
                    failure.set(None);
                }
            ></textarea>
            <aside class="validation" data-test="validation">
                {move || {
                    let errs = errors.get();
                    if errs.is_empty() {
                        match server_problems.get() {
                            None => view! { <p class="muted" data-test="checking">"Valid here; checking with the server…"</p> }.into_any(),
                            Some(p) if p.is_empty() => view! { <p class="valid">"✓ Valid config, deployable on this server"</p> }.into_any(),
                            Some(p) => {
                                let n = p.len();
                                view! {
                                    <p class="invalid" data-test="server-problems">
                                        {format!("{n} problem{} on this server", if n == 1 { "" } else { "s" })}
                                    </p>
                                    <PathErrors errors=p/>
                                }
                                .into_any()
                            }
                        }
                    } else {
                        let n = errs.len();
                        view! {
                            <p class="invalid">{format!("{n} problem{}", if n == 1 { "" } else { "s" })}</p>
                            <PathErrors errors=errs/>
                        }
                        .into_any()
                    }
                }}
            </aside>
        </div>
        {move || {
            match may_deploy() {
                None => return ().into_any(),
                Some(false) => return view! {
                    <p class="muted" data-test="no-deploy">
                        "Your role does not allow deploying: viewers can check a config here but not deploy it."
                    </p>
                }
                .into_any(),
                Some(true) => {}
            }
            view! {
                <p class="actions">
                    <TeamChoice team=team/>
                    <button
                        class="primary"
                        data-test="deploy"
                        on:click=deploy.clone()
                        disabled=move || {
                            busy.get()
                                || !errors.with(Vec::is_empty)
                                || server_problems.with(|p| p.as_ref().is_some_and(|p| !p.is_empty()))
                        }
                    >
                        {move || if busy.get() { "Deploying…" } else { "Deploy" }}
                    </button>
                </p>
            }
            .into_any()
        }}
        <ActionError failure=failure/>
    }
}

/// The team the service is created in: those where the user may deploy.
#[component]
fn TeamChoice(team: RwSignal<String>) -> impl IntoView {
    let auth = use_auth();
    move || {
        let teams = auth.deploy_teams();
        (!teams.is_empty()).then(|| {
            view! {
                <label>
                    "Team "
                    <select
                        data-test="deploy-team"
                        prop:value=move || team.get()
                        on:change=move |ev| team.set(event_target_value(&ev))
                    >
                        {teams
                            .into_iter()
                            .map(|t| {
                                let selected = t == team.get_untracked();
                                view! { <option value=t.clone() selected=selected>{t.clone()}</option> }
                            })
                            .collect_any()}
                    </select>
                </label>
            }
        })
    }
}

/// `config` with its top-level `model_path` set to `model_path`, the rest of
/// the text (its layout) as typed; None when the text is not a JSON object.
fn with_model_path(config: &str, model_path: &str) -> Option<String> {
    with_string_key(config, "model_path", model_path)
}

/// `config` with its top-level string `key` set to `value`, the rest of the
/// text (its layout) as typed; None when the text is not a JSON object.
fn with_string_key(config: &str, key: &str, value: &str) -> Option<String> {
    let mut expected: Value = serde_json::from_str(config).ok()?;
    expected.as_object_mut()?.insert(key.into(), value.into());
    let quoted = Value::from(value).to_string();
    let edited = match value_span(config, &format!("\"{key}\"")) {
        Some((start, end)) => format!("{}{quoted}{}", &config[..start], &config[end..]),
        None => {
            // Not there yet: first key of the object.
            let open = config.find('{')? + 1;
            let rest = &config[open..];
            let sep = if rest.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            format!("{}\n  \"{key}\": {quoted}{sep}{rest}", &config[..open])
        }
    };
    // The text edit found the right spot only if the result says exactly
    // what was meant; otherwise rewrite the whole config.
    match serde_json::from_str::<Value>(&edited) {
        Ok(v) if v == expected => Some(edited),
        _ => Some(expected.to_string()),
    }
}

/// The processor that serves an uploaded `file` (by its extension), on the
/// device the config's `current` processor names (the CPU when it names no
/// known one); None when the name does not say (a folder's archive).
fn processor_for(file: &str, current: Option<&str>) -> Option<&'static str> {
    use shared::processor::{Device, Processor, Runtime};
    let now = current.and_then(Processor::parse);
    let gpu = now.is_some_and(|p| p.device == Device::Gpu);
    let ext = file.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "onnx" if gpu => "onnx_gpu",
        "onnx" => "onnx_cpu",
        "pt" | "pth" | "jit" | "torchscript" if gpu => "pytorch_gpu_1.7",
        "pt" | "pth" | "jit" | "torchscript" => "pytorch_cpu_1.6",
        "pb" => match now {
            // Already a TensorFlow processor: its version is the user's choice.
            Some(p) if p.runtime == Runtime::TensorFlow => p.name,
            _ if gpu => "tensorflow_gpu_1.15",
            _ => "tensorflow_cpu_1.15",
        },
        _ => return None,
    })
}

/// Byte span of the string value after the first `key:` in `text`.
fn value_span(text: &str, key: &str) -> Option<(usize, usize)> {
    let after_key = text.find(key)? + key.len();
    let colon = after_key + text[after_key..].find(':')? + 1;
    let start = colon + text[colon..].find('"')?;
    let mut escaped = false;
    for (i, c) in text[start + 1..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some((start, start + 1 + i + 1)),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_processor_follows_the_uploaded_file_and_keeps_its_device() {
        let up = |f: &str| format!("upload://abc/{f}");
        assert_eq!(
            processor_for(&up("m.onnx"), Some("tensorflow_cpu_1.15")),
            Some("onnx_cpu")
        );
        assert_eq!(
            processor_for(&up("m.ONNX"), Some("tensorflow_gpu_1.15")),
            Some("onnx_gpu")
        );
        assert_eq!(processor_for(&up("m.pt"), None), Some("pytorch_cpu_1.6"));
        assert_eq!(
            processor_for(&up("m.jit"), Some("onnx_gpu")),
            Some("pytorch_gpu_1.7")
        );
        assert_eq!(
            processor_for(&up("g.pb"), Some("tensorflow_gpu_1.15")),
            Some("tensorflow_gpu_1.15")
        );
        assert_eq!(
            processor_for(&up("g.pb"), Some("onnx_cpu")),
            Some("tensorflow_cpu_1.15")
        );
        assert_eq!(processor_for(&up("model.tar"), Some("onnx_cpu")), None);
        let cfg = "{\n  \"name\": \"a\",\n  \"processor\": \"tensorflow_cpu_1.15\"\n}";
        let out = with_string_key(cfg, "processor", "onnx_cpu").expect("object");
        assert_eq!(
            out,
            "{\n  \"name\": \"a\",\n  \"processor\": \"onnx_cpu\"\n}"
        );
    }

    #[test]
    fn model_path_is_replaced_in_place() {
        let config = "{\n  \"name\": \"x\",\n  \"model_path\": \"file:///a\\\"b\",\n  \"n\": 1\n}";
        let out = with_model_path(config, "upload://abc/m.onnx").unwrap();
        assert_eq!(
            out,
            "{\n  \"name\": \"x\",\n  \"model_path\": \"upload://abc/m.onnx\",\n  \"n\": 1\n}"
        );
    }

    #[test]
    fn model_path_is_added_when_missing() {
        let out = with_model_path("{\"name\": \"x\"}", "upload://abc/m.onnx").unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["model_path"], "upload://abc/m.onnx");
        assert_eq!(v["name"], "x");
        assert_eq!(with_model_path("[1]", "p"), None);
    }
}
