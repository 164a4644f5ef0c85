//! `/services/:name`: status, endpoint, the deploy log (live), the
//! optimization report, and the actions.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::{use_navigate, use_params_map};
use shared::api::{ServiceDetail, ServiceStatus};

use crate::api::{self, Failure};
use crate::auth::use_auth;
use crate::components::{
    poll_every, BackToServices, CopyButton, DeployLog, ErrorBox, ReportView, StatusBadge, REFRESH,
};
use crate::format;

#[component]
pub fn ServicePage() -> impl IntoView {
    let params = use_params_map();
    let name = Memo::new(move |_| params.read().get("name").unwrap_or_default());
    // Keyed on the name: following a link to another service starts afresh
    // (new log stream, no stale report).
    move || view! { <ServiceView name=name.get()/> }
}

#[component]
fn ServiceView(name: String) -> impl IntoView {
    let auth = use_auth();
    let detail = RwSignal::new(None::<Result<ServiceDetail, Failure>>);
    // Bumped after an action that queues a deploy job, so the log reconnects.
    let log_generation = RwSignal::new(0u32);
    let path = format!("/api/v2/services/{}", api::segment(&name));
    let load = {
        let path = path.clone();
        move || {
            let Some(token) = auth.current() else { return };
            let path = path.clone();
            spawn_local(async move {
                let result = api::get::<ServiceDetail>(&path, &token).await;
                detail.try_set(Some(result));
            });
        }
    };
    load();
    {
        // Running services change rarely; a deploy in progress changes often.
        let load = load.clone();
        poll_every(REFRESH, move || {
            let transient = detail
                .with_untracked(|d| matches!(d, Some(Ok(d)) if d.summary.status.is_transient()));
            if transient {
                load()
            }
        });
    }
    let on_log_end = Callback::new({
        let load = load.clone();
        move |_| load()
    });
    let on_action = Callback::new({
        let load = load.clone();
        move |queued_job: bool| {
            load();
            if queued_job {
                log_generation.update(|g| *g += 1);
            }
        }
    });
    let title = name.clone();
    view! {
        <BackToServices/>
        <h1 data-test="service-name">{title}</h1>
        {move || match detail.get() {
            None => view! { <p class="muted">"Loading…"</p> }.into_any(),
            Some(Err(f)) => view! { <ErrorBox failure=f/> }.into_any(),
            Some(Ok(d)) => view! { <ServiceOverview d=d on_action=on_action/> }.into_any(),
        }}
        <section>
            <h2>"Deploy log"</h2>
            <DeployLog name=name.clone() generation=log_generation on_end=on_log_end/>
        </section>
        {move || {
            detail
                .get()
                .and_then(Result::ok)
                .and_then(|d| d.report)
                .map(|r| {
                    view! {
                        <section data-test="report">
                            <h2>"Optimization report"</h2>
                            <ReportView report=r/>
                        </section>
                    }
                })
        }}
    }
}

#[component]
fn ServiceOverview(d: ServiceDetail, on_action: Callback<bool>) -> impl IntoView {
    let s = &d.summary;
    let url = format!("{}{}", api::origin(), d.endpoint);
    view! {
        <section class="overview" data-test="service-overview">
            <table class="kv">
                <tr><th>"Status"</th><td><StatusBadge status=s.status/>
                    {d.stage.clone().map(|st| view! { <span class="muted">" stage: "{st}</span> })}
                </td></tr>
                {d.message.clone().map(|m| view! { <tr><th>"Message"</th><td>{m}</td></tr> })}
                <tr><th>"Processor"</th><td>{s.processor.clone()}</td></tr>
                <tr><th>"Instances"</th><td>{format!("{} running of {}", s.running_instances, s.instances)}</td></tr>
                <tr><th>"Level"</th><td>{s.optimization_level.clone().unwrap_or_else(|| "—".into())}</td></tr>
                <tr><th>"Speedup"</th><td>{format::speedup(s.speedup)}</td></tr>
                <tr><th>"Created"</th><td>{format::short_time(&s.created_at)}" UTC"</td></tr>
            </table>
            <ServiceActions name=s.name.clone() status=s.status instances=s.instances on_action=on_action/>
        </section>
        <section>
            <h2>"Endpoint"</h2>
            <EndpointTable url=url token=d.token.clone()/>
        </section>
    }
}

/// The prediction URL and token; the token stays hidden until asked for.
#[component]
fn EndpointTable(url: String, token: String) -> impl IntoView {
    let shown = RwSignal::new(false);
    let masked = "•".repeat(16);
    let token_text = {
        let token = token.clone();
        move || {
            if shown.get() {
                token.clone()
            } else {
                masked.clone()
            }
        }
    };
    let curl = format!("curl -s {url} -H \"Authorization: $TOKEN\" -d @request.json");
    view! {
        <table class="kv endpoint">
            <tr>
                <th>"URL"</th>
                <td><code>{url.clone()}</code>" "<CopyButton text=url.clone()/></td>
            </tr>
            <tr>
                <th>"Token"</th>
                <td>
                    <code class="token">{token_text}</code>" "
                    <button class="small" on:click=move |_| shown.update(|s| *s = !*s)>
                        {move || if shown.get() { "Hide" } else { "Show" }}
                    </button>" "
                    <CopyButton text=token/>
                </td>
            </tr>
            <tr>
                <th>"Request"</th>
                <td><code>{curl}</code>" (KServe v2 JSON body)"</td>
            </tr>
        </table>
    }
}

/// Scale, stop/start, delete (delete asks first).
#[component]
fn ServiceActions(
    name: String,
    status: ServiceStatus,
    instances: u32,
    on_action: Callback<bool>,
) -> impl IntoView {
    let auth = use_auth();
    let navigate = use_navigate();
    let busy = RwSignal::new(false);
    let failure = RwSignal::new(None::<Failure>);
    let confirming_delete = RwSignal::new(false);
    let scale_to = RwSignal::new(instances.to_string());
    let base = format!("/api/v2/services/{}", api::segment(&name));

    // POSTs an action whose answer is the service; each of them queues a job.
    let post_action = {
        let base = base.clone();
        move |suffix: &'static str, body: String| {
            let Some(token) = auth.current() else { return };
            let path = format!("{base}/{suffix}");
            busy.set(true);
            failure.set(None);
            spawn_local(async move {
                match api::post::<ServiceDetail>(&path, &token, &body).await {
                    Ok(_) => on_action.run(true),
                    Err(f) => {
                        failure.try_set(Some(f));
                    }
                }
                busy.try_set(false);
            });
        }
    };
    let scale = {
        let post_action = post_action.clone();
        move |_| match scale_to.get_untracked().trim().parse::<u32>() {
            Ok(n) => post_action("scale", format!("{{\"instances\":{n}}}")),
            Err(_) => failure.set(Some(Failure {
                status: None,
                message: "Instances must be a whole number.".into(),
                errors: vec![],
            })),
        }
    };
    let stop = {
        let post_action = post_action.clone();
        move |_| post_action("stop", String::new())
    };
    let start = move |_| post_action("start", String::new());
    let delete = {
        let base = base.clone();
        move |_| {
            let Some(token) = auth.current() else { return };
            let base = base.clone();
            let navigate = navigate.clone();
            busy.set(true);
            spawn_local(async move {
                match api::delete(&base, &token).await {
                    Ok(()) => navigate("/", Default::default()),
                    Err(f) => {
                        failure.try_set(Some(f));
                        busy.try_set(false);
                    }
                }
            });
        }
    };
    let confirm_text = format!("Delete {name} and stop serving it? ");
    let can_stop = matches!(status, ServiceStatus::Running | ServiceStatus::Updating);
    view! {
        <div class="actions">
            <label>
                "Instances "
                <input
                    type="number"
                    min="1"
                    class="narrow"
                    prop:value=move || scale_to.get()
                    on:input=move |ev| scale_to.set(event_target_value(&ev))
                />
            </label>
            <button on:click=scale disabled=move || busy.get()>"Scale"</button>
            {if can_stop {
                view! { <button on:click=stop disabled=move || busy.get()>"Stop"</button> }.into_any()
            } else {
                view! { <button on:click=start disabled=move || busy.get()>"Start"</button> }.into_any()
            }}
            <Show
                when=move || confirming_delete.get()
                fallback=move || view! {
                    <button class="danger" on:click=move |_| confirming_delete.set(true)>"Delete…"</button>
                }
            >
                <span class="confirm">
                    {confirm_text.clone()}
                    <button class="danger" on:click=delete.clone() disabled=move || busy.get()>"Delete"</button>
                    <button on:click=move |_| confirming_delete.set(false)>"Cancel"</button>
                </span>
            </Show>
        </div>
        {move || failure.get().map(|f| view! { <ErrorBox failure=f/> })}
    }
}
