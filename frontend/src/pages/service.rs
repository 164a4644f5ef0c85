//! `/services/:name`: status, endpoint, a "try it" panel, the deploy log
//! (live), the optimization report, share links, and the actions. Actions
//! and sharing show only to roles that may use them.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_navigate;
use serde::de::IgnoredAny;
use shared::api::{ModelSignature, ServiceStatus};

use crate::api::{self, Failure, ServiceView};
use crate::auth::use_auth;
use crate::components::{
    poll_every, ActionError, BackToServices, ConfigEditor, CopyButton, DeployLog, ErrorBox,
    LogSource, ReportView, RequestLog, ServiceMetrics, ShareLinks, StatusBadge, TryIt, Versions,
    REFRESH,
};
use crate::format;
use crate::pages::route_param;

#[component]
pub fn ServicePage() -> impl IntoView {
    let name = route_param("name");
    // Keyed on the name: following a link to another service starts afresh
    // (new log stream, no stale report).
    move || view! { <ServiceView name=name.get()/> }
}

/// What the service's controls (actions, endpoint, try-it, share) show.
#[derive(Clone, PartialEq)]
struct Controls {
    /// The user's role in the service's team allows deploying.
    may_deploy: bool,
    status: ServiceStatus,
    instances: u32,
    endpoint: String,
    token: String,
    signature: Option<ModelSignature>,
    /// The deployed config, pretty JSON.
    config: String,
}

#[component]
fn ServiceView(name: String) -> impl IntoView {
    let auth = use_auth();
    let detail = RwSignal::new(None::<Result<ServiceView, Failure>>);
    // Bumped after an action that queues a deploy job, so the log reconnects.
    let log_generation = RwSignal::new(0u32);
    let path = format!("/api/v2/services/{}", api::segment(&name));
    let load = {
        let path = path.clone();
        move || {
            let Some(token) = auth.current() else { return };
            let path = path.clone();
            spawn_local(async move {
                let result = api::get::<ServiceView>(&path, &token).await;
                detail.try_set(Some(result));
            });
        }
    };
    load();
    {
        // Kept fresh while it can change: a deploy in progress, and a running
        // service too (another user, the CLI or the autoscaler may scale or
        // update it; an instance may restart). A stopped or failed one waits
        // for an action here.
        let load = load.clone();
        poll_every(REFRESH, move || {
            let live = detail.with_untracked(|d| {
                matches!(d, Some(Ok(d)) if d.status.is_transient() || d.status == ServiceStatus::Running)
            });
            if live {
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
    // The controls re-render only when what they show changes, not on every
    // refresh of the overview: a re-render would drop what is being typed
    // (instances to scale to, a request being edited).
    let controls = Memo::new(move |_| {
        detail.with(|d| match d {
            Some(Ok(d)) => Some(Controls {
                may_deploy: auth.can_deploy_in(&d.team),
                status: d.status,
                instances: d.instances,
                endpoint: d.endpoint.clone(),
                token: d.token.clone(),
                signature: d.signature.clone(),
                config: d
                    .config
                    .as_ref()
                    .and_then(|c| serde_json::to_string_pretty(c).ok())
                    .unwrap_or_default(),
            }),
            _ => None,
        })
    });
    let title = name.clone();
    let controls_name = name.clone();
    let actions_name = name.clone();
    // While a deploy runs or after one failed, its log is what matters:
    // it moves to the top (a flex order, so its stream is not restarted).
    let log_order = move || {
        detail.with(|d| match d {
            Some(Ok(d)) if d.status.is_transient() || d.status == ServiceStatus::Failed => "-1",
            _ => "0",
        })
    };
    view! {
        <BackToServices/>
        <h1 data-test="service-name">{title}</h1>
        {move || match detail.get() {
            None => view! { <p class="muted">"Loading…"</p> }.into_any(),
            Some(Err(f)) => view! { <ErrorBox failure=f/> }.into_any(),
            Some(Ok(d)) => service_overview(d).into_any(),
        }}
        {move || {
            let name = actions_name.clone();
            controls.get().filter(|c| c.may_deploy).map(|c| view! {
                <ServiceActions
                    name=name
                    status=c.status
                    instances=c.instances
                    on_action=on_action
                />
            })
        }}
        <div class="service-sections">
            {move || {
                let name = controls_name.clone();
                controls.get().map(|c| {
                    let running = c.status == ServiceStatus::Running;
                    view! {
                        <section>
                            <h2>"Endpoint"</h2>
                            <EndpointTable url=format!("{}{}", api::origin(), c.endpoint) token=c.token.clone()/>
                        </section>
                        <section data-test="try-it-section">
                            <h2>"Try it"</h2>
                            {if running && c.token.is_empty() {
                                view! {
                                    <p class="muted">"Predictions need the service's token, which your role does not show."</p>
                                }.into_any()
                            } else if running {
                                view! { <TryIt name=name.clone() token=c.token signature=c.signature/> }.into_any()
                            } else {
                                view! {
                                    <p class="muted" data-test="try-it-later">
                                        {format!("Predictions work once the service is Running (it is {}).", c.status.as_str())}
                                    </p>
                                }.into_any()
                            }}
                        </section>
                        <section>
                            <h2>"Metrics"</h2>
                            <ServiceMetrics name=name.clone()/>
                        </section>
                        <section>
                            <h2>"Config"</h2>
                            <ConfigEditor
                                name=name.clone()
                                config=c.config
                                may_deploy=c.may_deploy
                                on_action=on_action
                            />
                        </section>
                        <section>
                            <h2>"Versions"</h2>
                            <Versions
                                name=name.clone()
                                may_deploy=c.may_deploy
                                generation=log_generation
                                on_action=on_action
                            />
                        </section>
                        <section>
                            <h2>"Requests"</h2>
                            <RequestLog name=name.clone()/>
                        </section>
                        {c.may_deploy.then(|| view! {
                            <section>
                                <h2>"Share"</h2>
                                <ShareLinks name=name/>
                            </section>
                        })}
                    }
                })
            }}
            <section data-test="deploy-log-section" style:order=log_order>
                <h2>"Deploy log"</h2>
                <DeployLog
                    source=LogSource::Service(name.clone())
                    generation=log_generation
                    on_end=on_log_end
                />
            </section>
            {move || {
                detail
                    .get()
                    .and_then(Result::ok)
                    .and_then(|d| d.report.map(|r| (r, d.name.clone())))
                    .map(|(r, service)| {
                        let path = format!("/api/v2/services/{}/artifact", api::segment(&service));
                        let file = format!("{service}-artifact.tar");
                        view! {
                            <section data-test="report">
                                <h2>"Optimization report"</h2>
                                <ReportView report=r artifact=(path, file)/>
                            </section>
                        }
                    })
            }}
        </div>
    }
}

fn service_overview(d: ServiceView) -> impl IntoView {
    let s = &d;
    let team_href = format!("/teams/{}", api::segment(&s.team));
    let team_name = s.team.clone();
    view! {
        <section class="overview" data-test="service-overview">
            <table class="kv">
                <tr><th>"Status"</th><td><StatusBadge status=s.status/>
                    {d.stage.clone().map(|st| view! { <span class="muted">" stage: "{st}</span> })}
                </td></tr>
                {d.message.clone().map(|m| view! { <tr><th>"Message"</th><td>{m}</td></tr> })}
                <tr><th>"Team"</th><td><a href=team_href>{team_name}</a></td></tr>
                <tr><th>"Processor"</th><td>{s.processor.clone()}</td></tr>
                <tr><th>"Instances"</th><td>{format!("{} running of {}", s.running_instances, s.instances)}</td></tr>
                <tr><th>"Level"</th><td>{s.optimization_level.clone().unwrap_or_else(|| "—".into())}</td></tr>
                <tr><th>"Speedup"</th><td>{format::speedup(s.speedup)}</td></tr>
                <tr><th>"Created"</th><td>{format::short_time(&s.created_at)}" UTC"</td></tr>
                {d.placements.iter().map(|p| {
                    let err = p.error.clone().map(|e| format!(": {e}")).unwrap_or_default();
                    view! {
                        <tr data-test="placement"><th>{format!("Placed {}", p.instance)}</th>
                        <td>{format!("on node {} ({}{err})", p.node, p.state)}</td></tr>
                    }
                }).collect::<Vec<_>>()}
                {d.runners.iter().map(|r| {
                    let state = match (r.up, r.ready) {
                        (true, true) => "up",
                        (true, false) => "up, not ready (failing its readiness check)",
                        (false, _) => "restarting",
                    };
                    let exit = r.last_exit.clone().map(|e| format!(", last exit: {e}")).unwrap_or_default();
                    view! {
                        <tr data-test="runner"><th>{format!("Instance {}", r.instance)}</th>
                        <td>{format!("{state}, {} restart(s){exit}", r.restarts)}
                        <span class="muted">{format!(" — {}", r.sandbox)}</span></td></tr>
                    }
                }).collect::<Vec<_>>()}
            </table>
        </section>
    }
}

/// The prediction URL and token; the token stays hidden until asked for.
#[component]
fn EndpointTable(url: String, token: String) -> impl IntoView {
    // The server leaves the token out for a viewer whose team does not
    // let viewers see it.
    let hidden = token.is_empty();
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
                {if hidden {
                    view! {
                        <td class="muted" data-test="token-hidden">
                            "Shown to the team's deployers (a team admin can let viewers see it)."
                        </td>
                    }.into_any()
                } else {
                    view! {
                        <td>
                            <code class="token">{token_text}</code>" "
                            <button class="small" on:click=move |_| shown.update(|s| *s = !*s)>
                                {move || if shown.get() { "Hide" } else { "Show" }}
                            </button>" "
                            <CopyButton text=token/>
                        </td>
                    }.into_any()
                }}
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
                // The answer (the service) is re-read by `on_action`.
                match api::post::<IgnoredAny>(&path, &token, &body).await {
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
            Err(_) => failure.set(Some(Failure::local("Instances must be a whole number."))),
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
    // What can work now: a deploy in progress can be stopped (cancelled),
    // not scaled or started; a running service scaled or stopped; a
    // stopped or failed one started (again).
    let deploying = status.is_transient();
    let running = status == ServiceStatus::Running;
    view! {
        <div class="actions" data-test="service-actions">
            {running.then(|| view! {
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
                <button data-test="scale" on:click=scale disabled=move || busy.get()>"Scale"</button>
            })}
            {if running || deploying {
                let label = if deploying { "Stop (cancels the deploy)" } else { "Stop" };
                view! { <button data-test="stop" on:click=stop disabled=move || busy.get()>{label}</button> }.into_any()
            } else {
                let label = if status == ServiceStatus::Failed { "Start again" } else { "Start" };
                view! { <button data-test="start" on:click=start disabled=move || busy.get()>{label}</button> }.into_any()
            }}
            {move || {
                if !confirming_delete.get() {
                    return view! {
                        <button class="danger" data-test="delete" on:click=move |_| confirming_delete.set(true)>
                            "Delete…"
                        </button>
                    }
                    .into_any();
                }
                view! {
                    <span class="confirm" data-test="confirm-delete">
                        {confirm_text.clone()}
                        <button class="danger" on:click=delete.clone() disabled=move || busy.get()>"Delete"</button>
                        <button on:click=move |_| confirming_delete.set(false)>"Cancel"</button>
                    </span>
                }
                .into_any()
            }}
        </div>
        <ActionError failure=failure/>
    }
}
