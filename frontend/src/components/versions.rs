//! A service's versions (every create and modify makes one), the one served
//! marked, each one's share of the traffic and how it did in the last hour,
//! and — for roles that may deploy — a way to serve another again from its
//! own artifact (a rollback, or forward after one), to split the traffic
//! between versions (a canary), and to promote a version of the split;
//! rollbacks and promotes are asked first.

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::de::IgnoredAny;
use serde::Deserialize;

use shared::api::{TrafficSplit, TrafficVersion};

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
    let split = RwSignal::new(None::<TrafficSplit>);
    let confirming = RwSignal::new(None::<Asked>);
    let busy = RwSignal::new(false);
    let editing = RwSignal::new(false);
    let base = format!("/api/v2/services/{}", api::segment(&name));
    let load = {
        let base = base.clone();
        move || {
            let Some(token) = auth.current() else { return };
            let path = format!("{base}/versions");
            let traffic = format!("{base}/traffic");
            spawn_local(async move {
                let result = api::get::<Vec<VersionView>>(&path, &token).await;
                versions.try_set(Some(result));
                // A viewer of a stopped service still sees the versions.
                split.try_set(api::get::<TrafficSplit>(&traffic, &token).await.ok());
            });
        }
    };
    Effect::new(move |_| {
        generation.track();
        load();
    });
    let serve = Callback::new({
        let base = base.clone();
        move |asked: Asked| {
            let Some(token) = auth.current() else { return };
            let (path, version) = match asked {
                Asked::Serve(v) => (format!("{base}/rollback"), v),
                Asked::Promote(v) => (format!("{base}/promote"), v),
            };
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
    let apply_split = Callback::new({
        let base = base.clone();
        move |weights: Vec<(u32, u32)>| {
            let Some(token) = auth.current() else { return };
            let path = format!("{base}/traffic");
            let body = serde_json::json!({
                "weights": weights
                    .iter()
                    .map(|(v, w)| (v.to_string(), serde_json::json!(w)))
                    .collect::<serde_json::Map<_, _>>()
            })
            .to_string();
            busy.set(true);
            failure.set(None);
            spawn_local(async move {
                match api::put::<TrafficSplit>(&path, &token, &body).await {
                    Ok(s) => {
                        split.try_set(Some(s));
                        editing.try_set(false);
                        on_action.run(false);
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
                    let traffic = split.get();
                    let splittable = may_deploy && traffic.is_some() && list.len() > 1;
                    view! {
                        {version_table(list.clone(), traffic.clone(), may_deploy, confirming, busy, serve)}
                        {splittable.then(|| view! {
                            {move || if editing.get() {
                                split_editor(list.clone(), split.get_untracked(), busy, apply_split, editing).into_any()
                            } else {
                                view! {
                                    <button class="small below" data-test="split-traffic" on:click=move |_| editing.set(true)>
                                        "Split traffic…"
                                    </button>
                                }.into_any()
                            }}
                        })}
                    }.into_any()
                }
            }}
        </div>
    }
}

/// What a deployer asked for and is asked to confirm.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Asked {
    /// Serve this version again (a rollback, or forward after one).
    Serve(u32),
    /// Give this version of the split every request and make it current.
    Promote(u32),
}

/// A share in per cent for each version that can serve (the current one,
/// and those with an artifact); applied when they sum to 100.
fn split_editor(
    list: Vec<VersionView>,
    split: Option<TrafficSplit>,
    busy: RwSignal<bool>,
    apply: Callback<Vec<(u32, u32)>>,
    editing: RwSignal<bool>,
) -> impl IntoView {
    let weight_of = |v: u32| {
        split
            .as_ref()
            .and_then(|s| s.versions.iter().find(|t| t.version == v))
            .map_or(0, |t| t.weight)
    };
    let rows: Vec<(u32, RwSignal<String>)> = list
        .iter()
        .filter(|v| v.current || v.artifact.is_some())
        .map(|v| (v.version, RwSignal::new(weight_of(v.version).to_string())))
        .collect();
    let parsed = {
        let rows = rows.clone();
        move || -> Option<Vec<(u32, u32)>> {
            rows.iter()
                .map(|(v, w)| w.get().trim().parse::<u32>().ok().map(|w| (*v, w)))
                .collect()
        }
    };
    let sum = {
        let parsed = parsed.clone();
        move || parsed().map(|w| w.iter().map(|(_, w)| u64::from(*w)).sum::<u64>())
    };
    let ready = {
        let sum = sum.clone();
        move || sum() == Some(100)
    };
    view! {
        <div class="split-editor" data-test="split-editor">
            <p class="muted">
                "Each version's share of new requests, in per cent. A version other than the served one runs instances of its own and gets requests once they run."
            </p>
            {rows
                .iter()
                .map(|(v, w)| {
                    let w = *w;
                    view! {
                        <label class="share">
                            {format!("v{v} ")}
                            <input
                                type="number" min="0" max="100" step="1"
                                data-test="share"
                                prop:value=move || w.get()
                                on:input=move |ev| w.set(event_target_value(&ev))
                            />
                            " %"
                        </label>
                    }
                })
                .collect_any()}
            <span class="muted" data-test="share-sum">
                {move || match sum() {
                    Some(100) => "Total 100 %".to_string(),
                    Some(s) => format!("Total {s} % (must be 100 %)"),
                    None => "Shares are whole per cents".to_string(),
                }}
            </span>
            <button
                data-test="apply-split"
                disabled=move || busy.get() || !ready()
                on:click=move |_| {
                    if let Some(w) = parsed() {
                        apply.run(w);
                    }
                }
            >"Apply split"</button>
            <button on:click=move |_| editing.set(false)>"Cancel"</button>
        </div>
    }
}

fn version_table(
    list: Vec<VersionView>,
    split: Option<TrafficSplit>,
    may_deploy: bool,
    confirming: RwSignal<Option<Asked>>,
    busy: RwSignal<bool>,
    serve: Callback<Asked>,
) -> impl IntoView {
    let current = list.iter().find(|v| v.current).map(|v| v.version);
    let traffic_of = move |n: u32| -> Option<TrafficVersion> {
        split
            .as_ref()
            .and_then(|s| s.versions.iter().find(|t| t.version == n).cloned())
    };
    view! {
        <table class="grid">
            <thead>
                <tr>
                    <th>"Version"</th><th>"Served"</th><th>"Share"</th>
                    <th title="in the last hour">"Requests"</th><th>"Errors"</th><th>"p50 / p99"</th>
                    <th>"By"</th><th>"Created"</th><th>"Artifact"</th><th></th>
                </tr>
            </thead>
            <tbody>
                {list
                    .into_iter()
                    .rev()
                    .map(|v| {
                        let n = v.version;
                        let t = traffic_of(n);
                        let share = t.as_ref().map(|t| t.weight).unwrap_or(0);
                        let what = if current.is_some_and(|c| n < c) { "Roll back to" } else { "Serve" };
                        let promotable = share > 0 && !v.current;
                        let action = (may_deploy && !v.current).then(|| view! {
                            {move || match confirming.get() {
                                Some(asked @ (Asked::Serve(c) | Asked::Promote(c))) if c == n => {
                                    let question = match asked {
                                        Asked::Serve(_) => format!("Serve version {n} again (its config and artifact)? "),
                                        Asked::Promote(_) => format!("Send every request to version {n} and make it the served version? "),
                                    };
                                    view! {
                                        <span class="confirm" data-test="confirm-serve">
                                            {question}
                                            <button
                                                data-test="confirm-serve-button"
                                                on:click=move |_| serve.run(asked)
                                                disabled=move || busy.get()
                                            >{match asked { Asked::Serve(_) => format!("Serve v{n}"), Asked::Promote(_) => format!("Promote v{n}") }}</button>
                                            <button on:click=move |_| confirming.set(None)>"Cancel"</button>
                                        </span>
                                    }.into_any()
                                }
                                _ => view! {
                                    {promotable.then(|| view! {
                                        <button
                                            class="small"
                                            data-test="promote-version"
                                            on:click=move |_| confirming.set(Some(Asked::Promote(n)))
                                        >{format!("Promote v{n}…")}</button>
                                        " "
                                    })}
                                    <button
                                        class="small"
                                        data-test="serve-version"
                                        on:click=move |_| confirming.set(Some(Asked::Serve(n)))
                                    >{format!("{what} v{n}…")}</button>
                                }.into_any(),
                            }}
                        });
                        let ms = |v: Option<f64>| v.map_or("—".to_string(), format::ms);
                        let served = match (v.current, &t) {
                            (true, _) => "✓ served".to_string(),
                            (false, Some(t)) if t.weight > 0 => {
                                format!("beside ({}/{} running)", t.running, t.instances)
                            }
                            _ => String::new(),
                        };
                        view! {
                            <tr data-test="version" class:current=v.current>
                                <td>{format!("v{n}")}</td>
                                <td>{served}</td>
                                <td data-test="share-cell">{if t.is_some() { format!("{share} %") } else { "—".into() }}</td>
                                <td>{t.as_ref().map_or("—".into(), |t| t.requests.to_string())}</td>
                                <td>{t.as_ref().map_or("—".into(), |t| t.errors.to_string())}</td>
                                <td>{t.as_ref().map_or("—".into(), |t| format!("{} / {}", ms(t.p50_ms), ms(t.p99_ms)))}</td>
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
