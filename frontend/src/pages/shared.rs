//! `/s/:token`: one deployment as its share link shows it — status, log
//! (replayed, then live) and report — to anyone holding the link, signed in
//! or not. A revoked or unknown link answers 404, and says so.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::api::SharedService;

use crate::api::{self, Failure};
use crate::components::{
    poll_every, DeployLog, ErrorBox, LogSource, ReportView, StatusBadge, REFRESH,
};
use crate::format;
use crate::pages::route_param;

#[component]
pub fn SharedPage() -> impl IntoView {
    let link = route_param("token");
    move || view! { <SharedView link=link.get()/> }
}

#[component]
fn SharedView(link: String) -> impl IntoView {
    let shared = RwSignal::new(None::<Result<SharedService, Failure>>);
    let path = format!("/api/v2/shared/{}", api::segment(&link));
    let load = move || {
        let path = path.clone();
        spawn_local(async move {
            let result = api::get_public::<SharedService>(&path).await;
            shared.try_set(Some(result));
        });
    };
    load();
    {
        let load = load.clone();
        poll_every(REFRESH, move || {
            let transient = shared
                .with_untracked(|s| matches!(s, Some(Ok(s)) if s.summary.status.is_transient()));
            if transient {
                load()
            }
        });
    }
    let on_log_end = Callback::new(move |_| load());
    // The log is opened once the link is known to work, and kept across
    // the overview's refreshes.
    let valid = Memo::new(move |_| shared.with(|s| matches!(s, Some(Ok(_)))));
    let generation = RwSignal::new(0u32);
    view! {
        <p class="muted shared-note">"Read-only view, shared by link."</p>
        {move || match shared.get() {
            None => view! { <p class="muted">"Loading…"</p> }.into_any(),
            Some(Err(f)) if f.is_not_found() => view! {
                <div class="error-box" role="alert" data-test="share-gone">
                    <p>"This link does not exist or was revoked."</p>
                    <p class="muted">"Ask whoever shared it for a new one."</p>
                </div>
            }
            .into_any(),
            Some(Err(f)) => view! { <ErrorBox failure=f/> }.into_any(),
            Some(Ok(s)) => shared_overview(s).into_any(),
        }}
        {move || {
            valid.get().then(|| {
                view! {
                    <section>
                        <h2>"Deploy log"</h2>
                        <DeployLog
                            source=LogSource::Shared(link.clone())
                            generation=generation
                            on_end=on_log_end
                        />
                    </section>
                }
            })
        }}
        {move || {
            shared
                .get()
                .and_then(Result::ok)
                .and_then(|s| s.report)
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

fn shared_overview(s: SharedService) -> impl IntoView {
    let sum = &s.summary;
    view! {
        <h1 data-test="service-name">{sum.name.clone()}</h1>
        <section class="overview" data-test="service-overview">
            <table class="kv">
                <tr><th>"Status"</th><td><StatusBadge status=sum.status/>
                    {s.stage.clone().map(|st| view! { <span class="muted">" stage: "{st}</span> })}
                </td></tr>
                {s.message.clone().map(|m| view! { <tr><th>"Message"</th><td>{m}</td></tr> })}
                <tr><th>"Team"</th><td>{sum.team.clone()}</td></tr>
                <tr><th>"Processor"</th><td>{sum.processor.clone()}</td></tr>
                <tr><th>"Instances"</th><td>{format!("{} running of {}", sum.running_instances, sum.instances)}</td></tr>
                <tr><th>"Level"</th><td>{sum.optimization_level.clone().unwrap_or_else(|| "—".into())}</td></tr>
                <tr><th>"Speedup"</th><td>{format::speedup(sum.speedup)}</td></tr>
                <tr><th>"Updated"</th><td>{format::short_time(&sum.updated_at)}" UTC"</td></tr>
            </table>
        </section>
    }
}
