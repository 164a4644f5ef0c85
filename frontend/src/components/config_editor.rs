//! The config a service runs, as deployed; for roles that may deploy, an
//! editor checked live by the same validation the server runs, and a
//! Redeploy that sends it as a modify (a new version, rolled out as its
//! `rolling_strategy` says).

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::de::IgnoredAny;

use crate::api::{self, Failure};
use crate::auth::use_auth;
use crate::components::{ActionError, PathErrors};

#[component]
pub fn ConfigEditor(
    name: String,
    /// The deployed config, pretty JSON.
    config: String,
    may_deploy: bool,
    /// Told when a redeploy was queued.
    on_action: Callback<bool>,
) -> impl IntoView {
    if !may_deploy {
        return view! { <pre class="body config-view" data-test="deployed-config">{config}</pre> }
            .into_any();
    }
    let auth = use_auth();
    let text = RwSignal::new(config.clone());
    let failure = RwSignal::new(None::<Failure>);
    let busy = RwSignal::new(false);
    let errors =
        Memo::new(move |_| text.with(|t| shared::parse_and_validate(t).err().unwrap_or_default()));
    let changed = {
        let config = config.clone();
        move || text.with(|t| t.trim() != config.trim())
    };
    let path = format!("/api/v2/services/{}", api::segment(&name));
    let redeploy = move |_| {
        let Some(token) = auth.current() else { return };
        let (path, body) = (path.clone(), text.get_untracked());
        busy.set(true);
        failure.set(None);
        spawn_local(async move {
            match api::put::<IgnoredAny>(&path, &token, &body).await {
                Ok(_) => on_action.run(true),
                Err(f) => {
                    failure.try_set(Some(f));
                }
            }
            busy.try_set(false);
        });
    };
    let reset = move |_| {
        text.set(config.clone());
        failure.set(None);
    };
    view! {
        <div class="editor">
            <textarea
                class="config"
                data-test="deployed-config"
                spellcheck="false"
                aria-label="The service's config (JSON)"
                prop:value=move || text.get()
                on:input=move |ev| {
                    text.set(event_target_value(&ev));
                    failure.set(None);
                }
            ></textarea>
            <aside class="validation">
                {move || {
                    let errs = errors.get();
                    if errs.is_empty() {
                        view! { <p class="valid">"✓ Valid config"</p> }.into_any()
                    } else {
                        view! { <PathErrors errors=errs/> }.into_any()
                    }
                }}
            </aside>
        </div>
        <p class="actions">
            <button
                data-test="redeploy"
                on:click=redeploy
                disabled={
                    let changed = changed.clone();
                    move || busy.get() || !errors.with(Vec::is_empty) || !changed()
                }
            >"Redeploy as a new version"</button>" "
            <button on:click=reset disabled=move || !changed()>"Undo changes"</button>
        </p>
        <ActionError failure=failure/>
    }
    .into_any()
}
