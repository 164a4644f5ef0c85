//! `/admin`: site administration — users (list, create, their API tokens)
//! and teams (create; each team's pages are linked from the top bar). Site
//! admins only; the server refuses others.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::api::{CreateTeam, CreateUser, TeamDetail, UserInfo};

use crate::api::{self, Failure};
use crate::auth::use_auth;
use crate::components::{ActionError, CollectAny, ErrorBox, NameForm};
use crate::format;
use crate::pages::account::{TeamRoles, UserTokens};

#[component]
pub fn AdminPage() -> impl IntoView {
    let auth = use_auth();
    let site_admin = move || {
        auth.me.with(|m| {
            m.as_ref()
                .map(|r| r.as_ref().map(|me| me.site_admin).map_err(Clone::clone))
        })
    };
    view! {
        <h1 data-test="admin">"Administration"</h1>
        {move || match site_admin() {
            None => view! { <p class="muted">"Loading…"</p> }.into_any(),
            Some(Ok(true)) => view! {
                <h2>"Teams"</h2>
                <Teams/>
                <h2>"Users"</h2>
                <Users/>
            }
            .into_any(),
            Some(Ok(false)) => view! {
                <div class="error-box" role="alert">
                    <p>"Only site admins manage users and teams."</p>
                </div>
            }
            .into_any(),
            Some(Err(f)) => view! { <ErrorBox failure=f/> }.into_any(),
        }}
    }
}

#[component]
fn Teams() -> impl IntoView {
    let auth = use_auth();
    let name = RwSignal::new(String::new());
    let failure = RwSignal::new(None::<Failure>);
    let create = Callback::new(move |team: String| {
        let Some(token) = auth.current() else { return };
        failure.set(None);
        spawn_local(async move {
            let body = api::json_body(&CreateTeam { name: team });
            match api::post::<TeamDetail>("/api/v2/teams", &token, &body).await {
                Ok(_) => {
                    name.try_set(String::new());
                    // The top bar's team links come from the session's
                    // teams. Only those: re-reading `me` would re-render
                    // this page (and lose a token shown once), and a site
                    // admin's rights do not change with a new team.
                    auth.refresh_teams();
                }
                Err(f) => {
                    failure.try_set(Some(f));
                }
            }
        });
    });
    view! {
        <p class="muted">"Each team's dashboard and members are linked from the top bar."</p>
        <NameForm
            test="team-create"
            placeholder="new team name"
            button="Create team"
            name=name
            on_submit=create
        />
        <ActionError failure=failure/>
    }
}

#[component]
fn Users() -> impl IntoView {
    let auth = use_auth();
    let users = RwSignal::new(None::<Result<Vec<UserInfo>, Failure>>);
    let failure = RwSignal::new(None::<Failure>);
    let name = RwSignal::new(String::new());
    // The user whose tokens are open below the table.
    let tokens_of = RwSignal::new(None::<String>);
    let load = move || {
        let Some(token) = auth.current() else { return };
        spawn_local(async move {
            let result = api::get::<Vec<UserInfo>>("/api/v2/users", &token).await;
            users.try_set(Some(result));
        });
    };
    load();
    let create = Callback::new(move |user: String| {
        let Some(token) = auth.current() else { return };
        // Site admins are made with `whet user create --site-admin`; the
        // console creates ordinary users, who get roles in teams.
        let body = api::json_body(&CreateUser {
            name: user,
            site_admin: false,
        });
        failure.set(None);
        spawn_local(async move {
            match api::post::<UserInfo>("/api/v2/users", &token, &body).await {
                Ok(u) => {
                    name.try_set(String::new());
                    // Its first token is what the new user needs next.
                    tokens_of.try_set(Some(u.name));
                    load();
                }
                Err(f) => {
                    failure.try_set(Some(f));
                }
            }
        });
    });
    view! {
        <NameForm
            test="user-create"
            placeholder="new user name"
            button="Create user"
            name=name
            on_submit=create
        />
        <ActionError failure=failure/>
        {move || match users.get() {
            None => view! { <p class="muted">"Loading users…"</p> }.into_any(),
            Some(Err(f)) => view! { <ErrorBox failure=f/> }.into_any(),
            Some(Ok(list)) => user_table(list, tokens_of).into_any(),
        }}
        {move || {
            tokens_of.get().map(|u| {
                view! {
                    <h2>{format!("Tokens of {u}")}</h2>
                    <UserTokens user=u/>
                }
            })
        }}
    }
}

fn user_table(users: Vec<UserInfo>, tokens_of: RwSignal<Option<String>>) -> impl IntoView {
    view! {
        <table class="grid" data-test="users">
            <thead>
                <tr><th>"User"</th><th>"Site admin"</th><th>"Teams"</th><th>"Created (UTC)"</th><th></th></tr>
            </thead>
            <tbody>
                {users
                    .into_iter()
                    .map(|u| {
                        let user = u.name.clone();
                        view! {
                            <tr data-test="user-row" data-user=u.name.clone()>
                                <td>{u.name.clone()}</td>
                                <td>{if u.site_admin { "yes" } else { "" }}</td>
                                <td><TeamRoles teams=u.teams/></td>
                                <td>{format::short_time(&u.created_at)}</td>
                                <td>
                                    <button class="small" on:click=move |_| tokens_of.set(Some(user.clone()))>
                                        "Tokens…"
                                    </button>
                                </td>
                            </tr>
                        }
                    })
                    .collect_any()}
            </tbody>
        </table>
    }
}
