//! `/`: every service, refreshed every few seconds, with a text filter.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use shared::api::ServiceSummary;

use crate::api::{self, Failure};
use crate::auth::use_auth;
use crate::components::{poll_every, ErrorBox, StatusBadge, REFRESH};
use crate::format;

#[component]
pub fn ServicesPage() -> impl IntoView {
    let auth = use_auth();
    let services = RwSignal::new(None::<Result<Vec<ServiceSummary>, Failure>>);
    let filter = RwSignal::new(String::new());
    let load = move || {
        let Some(token) = auth.current() else { return };
        spawn_local(async move {
            let result = api::get::<Vec<ServiceSummary>>("/api/v2/services", &token).await;
            services.try_set(Some(result));
        });
    };
    load();
    poll_every(REFRESH, load);
    view! {
        <div class="page-head" data-test="services-page">
            <h1>"Services"</h1>
            <input
                type="search"
                class="filter"
                placeholder="Filter by name, status, processor, level"
                prop:value=move || filter.get()
                on:input=move |ev| filter.set(event_target_value(&ev))
            />
            <A href="/new" attr:class="button">"New service"</A>
        </div>
        {move || match services.get() {
            None => view! { <p class="muted">"Loading…"</p> }.into_any(),
            Some(Err(f)) => view! { <ErrorBox failure=f/> }.into_any(),
            Some(Ok(rows)) => {
                let needle = filter.get().trim().to_lowercase();
                view! { <ServicesTable rows=rows needle=needle/> }.into_any()
            }
        }}
    }
}

#[component]
fn ServicesTable(rows: Vec<ServiceSummary>, needle: String) -> impl IntoView {
    let total = rows.len();
    let shown: Vec<_> = rows
        .into_iter()
        .filter(|s| format::matches_filter(s, &needle))
        .collect();
    if total == 0 {
        return view! {
            <p class="muted">"No services yet. "<A href="/new">"Deploy one"</A>"."</p>
        }
        .into_any();
    }
    if shown.is_empty() {
        return view! { <p class="muted">"No service matches the filter."</p> }.into_any();
    }
    view! {
        <table class="grid services">
            <thead>
                <tr>
                    <th>"Name"</th>
                    <th>"Status"</th>
                    <th>"Processor"</th>
                    <th class="num">"Instances"</th>
                    <th>"Level"</th>
                    <th class="num">"Speedup"</th>
                    <th>"Created (UTC)"</th>
                </tr>
            </thead>
            <tbody>
                {shown.into_iter().map(|s| view! { <ServiceRow s=s/> }).collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}

#[component]
fn ServiceRow(s: ServiceSummary) -> impl IntoView {
    let href = format!("/services/{}", api::segment(&s.name));
    view! {
        <tr>
            <td><A href=href>{s.name.clone()}</A></td>
            <td><StatusBadge status=s.status/></td>
            <td>{s.processor.clone()}</td>
            <td class="num">{format!("{}/{}", s.running_instances, s.instances)}</td>
            <td>{s.optimization_level.clone().unwrap_or_else(|| "—".into())}</td>
            <td class="num">{format::speedup(s.speedup)}</td>
            <td>{format::short_time(&s.created_at)}</td>
        </tr>
    }
}
