//! A service's versions (every create and modify makes one), the one served
//! marked, and — for roles that may deploy — a way to serve another again
//! from its own artifact (a rollback, or forward after one), asked first.

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::api::{self, Failure};
use crate::auth::use_auth;
use crate::components::{ActionError, CollectAny, ErrorBox};
use crate::format;

/// `GET /api/v2/services/{name}/versions` as the console reads it: without
/// each version's config (no deserializer for it in the bundle).
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct VersionView {
    version: u32,
    current: bool,
    author: String,
    created_at: String,
    artifact: Option<String>,
}

/// The versions of `name`; reloaded when `generation` changes (an action
/// queued a deploy). `may_deploy` shows the buttons; `on_action` is told
/// when a rollback was queued.
#[component]
pub fn Versions(
    name: String,
    may_deploy: bool,
    generation: RwSignal<u32>,
    on_action: Callback<bool>,
) -> impl IntoView {
    let auth = use_auth();
    let versions = RwSignal::new(None::<Result<Vec<VersionView>, Failure>>);
    let failure = RwSignal::new(None::<Failure>);
    let confirming = RwSignal::new(None::<u32>);
    let busy = RwSignal::new(false);
    let base = format!("/api/v2/services/{}", api::segment(&name));
    let load = {
        let base = base.clone();
        move || {
            let Some(token) = auth.current() else { return };
            let path = format!("{base}/versions");
            spawn_local(async move {
                let result = api::get::<Vec<VersionView>>(&path, &token).await;
                versions.try_set(Some(result));
            });
        }
    };
    Effect::new(move |_| {
        generation.track();
        load();
    });
    let serve = Callback::new({
        let base = base.clone();
        move |version: u32| {
            let Some(token) = auth.current() else { return };
            let path = format!("{base}/rollback");
            busy.set(true);
            failure.set(None);
            spawn_local(async move {
                let body = format!("{{\"version\":{version}}}");
                match api::post::<IgnoredAny>(&path, &token, &body).await {
                    // The action bumps `generation`, which reloads the list.
                    Ok(_) => {
                        confirming.try_set(None);
                        on_action.run(true);
                    }
                    Err(f) => {
                        failure.try_set(Some(f));
                    }
                }
                busy.try_set(false);
            });
        }
    });
    view! {
        <div data-test="versions">
            <ActionError failure=failure/>
            {move || match versions.get() {
                None => view! { <p class="muted">"Loading versions…"</p> }.into_any(),
                Some(Err(f)) => view! { <ErrorBox failure=f/> }.into_any(),
                Some(Ok(list)) => {
                    version_table(list, may_deploy, confirming, busy, serve).into_any()
                }
            }}
        </div>
    }
}

fn version_table(
    list: Vec<VersionView>,
    may_deploy: bool,
    confirming: RwSignal<Option<u32>>,
    busy: RwSignal<bool>,
    serve: Callback<u32>,
) -> impl IntoView {
    let current = list.iter().find(|v| v.current).map(|v| v.version);
    view! {
        <table class="grid">
            <thead>
                <tr>
                    <th>"Version"</th><th>"Served"</th><th>"By"</th><th>"Created"</th>
                    <th>"Artifact"</th><th></th>
                </tr>
            </thead>
            <tbody>
                {list
                    .into_iter()
                    .rev()
                    .map(|v| {
                        let n = v.version;
                        let what = if current.is_some_and(|c| n < c) { "Roll back to" } else { "Serve" };
                        let action = (may_deploy && !v.current).then(|| view! {
                            {move || if confirming.get() == Some(n) {
                                view! {
                                    <span class="confirm" data-test="confirm-serve">
                                        {format!("Serve version {n} again (its config and artifact)? ")}
                                        <button
                                            data-test="confirm-serve-button"
                                            on:click=move |_| serve.run(n)
                                            disabled=move || busy.get()
                                        >{format!("Serve v{n}")}</button>
                                        <button on:click=move |_| confirming.set(None)>"Cancel"</button>
                                    </span>
                                }.into_any()
                            } else {
                                view! {
                                    <button
                                        class="small"
                                        data-test="serve-version"
                                        on:click=move |_| confirming.set(Some(n))
                                    >{format!("{what} v{n}…")}</button>
                                }.into_any()
                            }}
                        });
                        view! {
                            <tr data-test="version" class:current=v.current>
                                <td>{format!("v{n}")}</td>
                                <td>{if v.current { "✓ served" } else { "" }}</td>
                                <td>{v.author}</td>
                                <td>{format::short_time(&v.created_at)}</td>
                                <td><code>{v.artifact.map(|a| a.chars().take(12).collect::<String>()).unwrap_or_else(|| "—".into())}</code></td>
                                <td>{action}</td>
                            </tr>
                        }
                    })
                    .collect_any()}
            </tbody>
        </table>
    }
}
