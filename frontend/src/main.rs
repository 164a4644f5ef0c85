//! The Whetstone web console: a Leptos single-page app (client-side rendered,
//! wasm32) served by `whet serve`. It uses `shared` for the wire types and
//! for config validation, so the editor reports exactly what the server would.
//!
//! Built by `cargo run -p xtask -- build-console`; see `xtask/`.

mod api;
mod auth;
mod components;
mod format;
mod pages;

use leptos::prelude::*;
use leptos_router::components::{Route, Router, Routes};
use leptos_router::hooks::use_location;
use leptos_router::path;

use crate::api::Failure;
use crate::auth::{use_auth, Auth};
use crate::components::{CollectAny, ErrorBox};
use crate::pages::{
    AccountPage, AdminPage, NewServicePage, NotFoundPage, ServicePage, ServicesPage, SharedPage,
    SignInPage, TeamDashboardPage, TeamSettingsPage,
};

fn main() {
    // Panics go to the browser console with a message instead of "unreachable".
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

#[component]
fn App() -> impl IntoView {
    provide_context(Auth::load());
    view! {
        <Router>
            <TopBar/>
            <main>
                <Pages/>
            </main>
        </Router>
    }
}

/// The page the location names. Signed out, only a share link opens; every
/// other deep link shows the sign-in form in place, so the page the link
/// names appears once a token is given.
#[component]
fn Pages() -> impl IntoView {
    let auth = use_auth();
    let location = use_location();
    // A memo, so navigating does not rebuild the routes, only signing in
    // or out (or leaving a share link while signed out) does.
    let routed = Memo::new(move |_| {
        auth.token.with(Option::is_some) || location.pathname.with(|p| p.starts_with("/s/"))
    });
    move || {
        if !routed.get() {
            return view! { <SignInPage/> }.into_any();
        }
        view! {
            <AccountProblem/>
            <Routes fallback=NotFoundPage>
                <Route path=path!("/") view=ServicesPage/>
                <Route path=path!("/services/:name") view=ServicePage/>
                <Route path=path!("/new") view=NewServicePage/>
                <Route path=path!("/teams/:team") view=TeamDashboardPage/>
                <Route path=path!("/teams/:team/settings") view=TeamSettingsPage/>
                <Route path=path!("/account") view=AccountPage/>
                <Route path=path!("/admin") view=AdminPage/>
                <Route path=path!("/s/:token") view=SharedPage/>
                <Route path=path!("/signin") view=SignInPage/>
            </Routes>
        }
        .into_any()
    }
}

/// `/api/v2/me` failed: roles are unknown, so role-gated actions stay
/// hidden; say why instead of leaving the reader to wonder.
#[component]
fn AccountProblem() -> impl IntoView {
    let auth = use_auth();
    move || match auth.me.get() {
        Some(Err(f)) => {
            let failure = Failure {
                message: format!(
                    "Could not load your account, so actions are hidden: {}",
                    f.message
                ),
                ..f
            };
            Some(view! { <ErrorBox failure=failure/> })
        }
        _ => None,
    }
}

/// The brand, and signed in: the pages, the user's teams' dashboards, the
/// account, sign-out. One closure for all of it: it changes only when the
/// user or their teams do.
#[component]
fn TopBar() -> impl IntoView {
    let auth = use_auth();
    let nav = move || {
        if auth.token.with(Option::is_none) {
            return None;
        }
        let teams = auth.teams.get();
        let team_links = (!teams.is_empty()).then(|| {
            view! {
                <span class="team-links">
                    <span class="muted">"Teams:"</span>
                    {teams
                        .into_iter()
                        .map(|t| {
                            let href = format!("/teams/{}", api::segment(&t.team));
                            view! { <a href=href data-test="team-link">{t.team}</a> }
                        })
                        .collect_any()}
                </span>
            }
        });
        Some(view! {
            <nav>
                <a href="/">"Services"</a>
                {auth.can_deploy_somewhere().then(|| view! { <a href="/new">"New service"</a> })}
                {team_links}
                {auth.is_site_admin().then(|| view! { <a href="/admin">"Admin"</a> })}
            </nav>
            {auth.user_name().map(|u| view! { <a href="/account" data-test="user">{u}</a> })}
            <button class="link" on:click=move |_| auth.sign_out()>"Sign out"</button>
        })
    };
    view! {
        <header class="topbar">
            <a href="/" class="brand">"Whetstone"</a>
            {nav}
        </header>
    }
}
