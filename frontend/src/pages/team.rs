//! `/teams/:team`: the team's services with aggregate numbers — services
//! per status, instances, median speedup, and the last hour's traffic.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::api::TeamDashboard;

use crate::api::{self, Failure};
use crate::auth::use_auth;
use crate::components::{poll_every, CollectAny, ErrorBox, REFRESH};
use crate::format;
use crate::pages::route_param;
use crate::pages::services::ServicesTable;

#[component]
pub fn TeamDashboardPage() -> impl IntoView {
    let team = route_param("team");
    move || view! { <TeamDashboardView team=team.get()/> }
}

#[component]
fn TeamDashboardView(team: String) -> impl IntoView {
    let auth = use_auth();
    let dashboard = RwSignal::new(None::<Result<TeamDashboard, Failure>>);
    let path = format!("/api/v2/teams/{}/dashboard", api::segment(&team));
    let load = move || {
        let Some(token) = auth.current() else { return };
        let path = path.clone();
        spawn_local(async move {
            let result = api::get::<TeamDashboard>(&path, &token).await;
            dashboard.try_set(Some(result));
        });
    };
    load();
    // A team that does not exist (or that the user may not see) will not
    // appear by asking again: stop then.
    poll_every(REFRESH, move || {
        let gone = dashboard.with_untracked(
            |d| matches!(d, Some(Err(f)) if f.is_not_found() || f.is_unauthorized()),
        );
        if !gone {
            load()
        }
    });
    let settings = format!("/teams/{}/settings", api::segment(&team));
    view! {
        <div class="page-head" data-test="team-dashboard">
            <h1>"Team "{team.clone()}</h1>
            <a href=format!("/?team={}", api::segment(&team))>"Services list"</a>
            <a href=settings class="button" data-test="team-settings-link">"Members & settings"</a>
        </div>
        {move || match dashboard.get() {
            None => view! { <p class="muted">"Loading…"</p> }.into_any(),
            Some(Err(f)) => view! { <ErrorBox failure=f/> }.into_any(),
            Some(Ok(d)) => dashboard_body(d).into_any(),
        }}
    }
}

fn dashboard_body(d: TeamDashboard) -> impl IntoView {
    let by_status = d
        .by_status
        .iter()
        .map(|(name, n)| {
            // The status badge's look, from the status name as sent.
            let class = format!("status status-{}", name.to_lowercase());
            view! { <span class="count"><span class=class>{name.clone()}</span>" "{*n}</span> }
        })
        .collect_any();
    let p50 = d
        .p50_ms_last_hour
        .map(format::ms)
        .unwrap_or_else(|| "—".into());
    let instances = format!("{} / {}", d.running_instances, d.total_instances);
    view! {
        <div class="stats" data-test="team-stats">
            <div class="stat card" data-test="stat">
                <div class="stat-label">"Services"</div>
                <div class="stat-value">{d.services.len()}</div>
                <div class="by-status">{by_status}</div>
            </div>
            {stat("Instances", instances, "running / wanted")}
            {stat("Median speedup", format::speedup(d.median_speedup), "over the original models")}
            {stat("Requests, last hour", d.requests_last_hour.to_string(), "predictions answered")}
            {stat("p50 latency, last hour", p50, "server side")}
        </div>
        <h2>"Services"</h2>
        <ServicesTable rows=d.services/>
    }
}

/// One figure of the dashboard, with a line of detail under it. A plain
/// function rather than a component: one view type for all four.
fn stat(label: &'static str, value: String, detail: &'static str) -> impl IntoView {
    view! {
        <div class="stat card" data-test="stat">
            <div class="stat-label">{label}</div>
            <div class="stat-value">{value}</div>
            <div class="muted">{detail}</div>
        </div>
    }
}
