//! `/new`: the config editor. Validated on every keystroke with the same
//! `shared::parse_and_validate` the server runs; Deploy is enabled only for a
//! valid config and goes to the service page.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_navigate;
use shared::api::ServiceDetail;

use crate::api::{self, Failure};
use crate::auth::use_auth;
use crate::components::{ErrorBox, PathErrors};

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

    let pick_example = move |ev: leptos::ev::Event| {
        let choice = event_target_value(&ev);
        if let Some((_, json)) = choice.parse::<usize>().ok().and_then(|i| EXAMPLES.get(i)) {
            text.set(json.to_string());
            failure.set(None);
        }
    };
    let deploy = move |_| {
        let Some(token) = auth.current() else { return };
        let body = text.get_untracked();
        let navigate = navigate.clone();
        busy.set(true);
        failure.set(None);
        spawn_local(async move {
            match api::post::<ServiceDetail>("/api/v2/services", &token, &body).await {
                Ok(d) => {
                    let to = format!("/services/{}", api::segment(&d.summary.name));
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
                <select on:change=pick_example>
                    {EXAMPLES
                        .iter()
                        .enumerate()
                        .map(|(i, (label, _))| view! { <option value=i.to_string()>{*label}</option> })
                        .collect_view()}
                </select>
            </label>
            <span class="muted">
                " model_path: a "<code>"upload://"</code>" path from "<code>"whet create"</code>
                ", or "<code>"file://"</code>" under a "<code>"--model-root"</code>" folder."
            </span>
        </div>
        <div class="editor">
            <textarea
                class="config"
                data-test="config-editor"
                spellcheck="false"
                aria-label="Service config (JSON)"
                prop:value=move || text.get()
                on:input=move |ev| text.set(event_target_value(&ev))
            ></textarea>
            <aside class="validation" data-test="validation">
                {move || {
                    let errs = errors.get();
                    if errs.is_empty() {
                        view! { <p class="valid">"✓ Valid config"</p> }.into_any()
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
        <p>
            <button
                class="primary"
                data-test="deploy"
                on:click=deploy
                disabled=move || busy.get() || !errors.with(Vec::is_empty)
            >
                {move || if busy.get() { "Deploying…" } else { "Deploy" }}
            </button>
        </p>
        {move || failure.get().map(|f| view! { <ErrorBox failure=f/> })}
    }
}
