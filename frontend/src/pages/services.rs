//! `/`: every service of the user's teams, refreshed every few seconds, with
//! a text filter and a team filter (`?team=T`, so a filtered list is a link).

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::{use_navigate, use_query_map};
use leptos_router::NavigateOptions;
use shared::api::ServiceSummary;

use crate::api::{self, Failure};
use crate::auth::use_auth;
use crate::components::{poll_every, CollectAny, ErrorBox, StatusBadge, REFRESH};
use crate::format;

#[component]
pub fn ServicesPage() -> impl IntoView {
    let auth = use_auth();
    let query = use_query_map();
    let navigate = use_navigate();
    // The team filter, from `?team=`; `picked` reads it without subscribing
    // (for the select's initial state).
    let team = move || query.read().get("team").unwrap_or_default();
    let picked = move || query.read_untracked().get("team").unwrap_or_default();
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
    let pick_team = move |ev: leptos::ev::Event| {
        let t = event_target_value(&ev);
        let to = if t.is_empty() {
            "/".to_string()
        } else {
            format!("/?team={}", api::segment(&t))
        };
        navigate(
            &to,
            NavigateOptions {
                replace: true,
                ..Default::default()
            },
        );
    };
    view! {
        <div class="page-head" data-test="services-page">
            <h1>"Services"</h1>
            <select data-test="team-filter" aria-label="Team" on:change=pick_team>
                <option value="" selected=picked().is_empty()>"All teams"</option>
                // The teams the user sees: those whose services are listed.
                {move || {
                    auth.teams
                        .get()
                        .into_iter()
                        .map(|t| {
                            let selected = t.team == picked();
                            view! { <option value=t.team.clone() selected=selected>{t.team.clone()}</option> }
                        })
                        .collect_any()
                }}
            </select>
            <input
                type="search"
                class="filter"
                placeholder="Filter by name, status, processor, level"
                prop:value=move || filter.get()
                on:input=move |ev| filter.set(event_target_value(&ev))
            />
            {move || {
                auth.can_deploy_somewhere()
                    .then(|| view! { <a href="/new" class="button">"New service"</a> })
            }}
        </div>
        {move || match services.get() {
            None => view! { <p class="muted">"Loading…"</p> }.into_any(),
            Some(Err(f)) => view! { <ErrorBox failure=f/> }.into_any(),
            Some(Ok(rows)) => {
                let needle = filter.get().trim().to_lowercase();
                let team = team();
                let rows: Vec<_> = rows
                    .into_iter()
                    .filter(|s| team.is_empty() || s.team == team)
                    .collect();
                view! { <ServicesTable rows=rows needle=needle/> }.into_any()
            }
        }}
    }
}

/// The services table; also the team dashboard's list.
#[component]
pub fn ServicesTable(rows: Vec<ServiceSummary>, #[prop(optional)] needle: String) -> impl IntoView {
    let auth = use_auth();
    let total = rows.len();
    let shown: Vec<_> = rows
        .into_iter()
        .filter(|s| format::matches_filter(s, &needle))
        .collect();
    if total == 0 {
        return view! {
            <p class="muted">
                "No services yet. "
                {move || auth.can_deploy_somewhere().then(|| view! { <a href="/new">"Deploy one"</a>"." })}
            </p>
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
                    <th>"Team"</th>
                    <th>"Status"</th>
                    <th>"Processor"</th>
                    <th class="num">"Instances"</th>
                    <th>"Level"</th>
                    <th class="num">"Speedup"</th>
                    <th>"Created (UTC)"</th>
                </tr>
            </thead>
            <tbody>
                {shown.into_iter().map(|s| view! { <ServiceRow s=s/> }).collect_any()}
            </tbody>
        </table>
    }
    .into_any()
}

#[component]
fn ServiceRow(s: ServiceSummary) -> impl IntoView {
    let href = format!("/services/{}", api::segment(&s.name));
    let team_href = format!("/teams/{}", api::segment(&s.team));
    view! {
        <tr>
            <td><a href=href>{s.name.clone()}</a></td>
            <td class="team"><a href=team_href>{s.team.clone()}</a></td>
            <td><StatusBadge status=s.status/></td>
            <td>{s.processor.clone()}</td>
            <td class="num">{format!("{}/{}", s.running_instances, s.instances)}</td>
            <td>{s.optimization_level.clone().unwrap_or_else(|| "—".into())}</td>
            <td class="num">{format::speedup(s.speedup)}</td>
            <td>{format::short_time(&s.created_at)}</td>
        </tr>
    }
}
