//! `/account`: who you are, your teams, and your API tokens — list, create
//! (the token is shown once), revoke.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::api::{CreateToken, NewToken, TeamRole, TokenInfo};

use crate::api::{self, Failure};
use crate::auth::use_auth;
use crate::components::{ActionError, CollectAny, ErrorBox, NameForm, ShownOnce};
use crate::format;

#[component]
pub fn AccountPage() -> impl IntoView {
    let auth = use_auth();
    view! {
        <h1 data-test="account">"Your account"</h1>
        {move || match auth.me.get() {
            None => view! { <p class="muted">"Loading…"</p> }.into_any(),
            Some(Err(f)) => view! { <ErrorBox failure=f/> }.into_any(),
            Some(Ok(me)) => view! {
                <table class="kv">
                    <tr><th>"User"</th><td data-test="account-user">{me.user.clone()}</td></tr>
                    <tr><th>"Site admin"</th><td>{if me.site_admin { "yes" } else { "no" }}</td></tr>
                    <tr><th>"Teams"</th><td><TeamRoles teams=me.teams.clone()/></td></tr>
                </table>
                <h2>"API tokens"</h2>
                <UserTokens user=me.user.clone()/>
            }
            .into_any(),
        }}
    }
}

/// `team (role)` links, comma separated.
#[component]
pub fn TeamRoles(teams: Vec<TeamRole>) -> impl IntoView {
    if teams.is_empty() {
        return view! { <span class="muted">"none"</span> }.into_any();
    }
    teams
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let href = format!("/teams/{}", api::segment(&t.team));
            view! {
                {(i > 0).then_some(", ")}
                <a href=href>{t.team.clone()}</a>{format!(" ({})", t.role.as_str())}
            }
        })
        .collect_any()
        .into_any()
}

/// A user's tokens: the list, a form to create one (shown once), revoke.
/// Used for one's own account, and by site admins for any user.
#[component]
pub fn UserTokens(user: String) -> impl IntoView {
    let auth = use_auth();
    let tokens = RwSignal::new(None::<Result<Vec<TokenInfo>, Failure>>);
    let failure = RwSignal::new(None::<Failure>);
    let created = RwSignal::new(None::<NewToken>);
    let label = RwSignal::new(String::new());
    let base = format!("/api/v2/users/{}/tokens", api::segment(&user));
    let load = {
        let base = base.clone();
        move || {
            let Some(token) = auth.current() else { return };
            let base = base.clone();
            spawn_local(async move {
                let result = api::get::<Vec<TokenInfo>>(&base, &token).await;
                tokens.try_set(Some(result));
            });
        }
    };
    load();
    let create = Callback::new({
        let (base, load) = (base.clone(), load.clone());
        move |name: String| {
            let Some(token) = auth.current() else { return };
            let (base, load) = (base.clone(), load.clone());
            failure.set(None);
            spawn_local(async move {
                let body = api::json_body(&CreateToken { name });
                match api::post::<NewToken>(&base, &token, &body).await {
                    Ok(t) => {
                        created.try_set(Some(t));
                        label.try_set(String::new());
                        load();
                    }
                    Err(f) => {
                        failure.try_set(Some(f));
                    }
                }
            });
        }
    });
    // The token this console is signed in with, when these are the signed-in
    // user's tokens: marked, and revoking it signs out.
    let in_use = {
        let user = user.clone();
        move || {
            auth.me.with(|m| match m {
                Some(Ok(me)) if me.user == user => me.token_id,
                _ => None,
            })
        }
    };
    let revoke = Callback::new({
        let (base, load) = (base.clone(), load.clone());
        let in_use = in_use.clone();
        move |id: i64| {
            let Some(token) = auth.current() else { return };
            let (path, load) = (format!("{base}/{id}"), load.clone());
            let own = in_use() == Some(id);
            failure.set(None);
            spawn_local(async move {
                match api::delete(&path, &token).await {
                    Ok(()) if own => auth.sign_out(),
                    Ok(()) => load(),
                    Err(f) => {
                        failure.try_set(Some(f));
                    }
                }
            });
        }
    });
    view! {
        <div data-test="tokens">
            {move || created.get().map(|t| view! {
                <ShownOnce label=format!("New token \u{201c}{}\u{201d}", t.name) secret=t.token/>
            })}
            <ActionError failure=failure/>
            <NameForm
                test="token-create"
                placeholder="token name (laptop, ci…)"
                button="Create token"
                name=label
                on_submit=create
            />
            {move || match tokens.get() {
                None => view! { <p class="muted">"Loading tokens…"</p> }.into_any(),
                Some(Err(f)) => view! { <ErrorBox failure=f/> }.into_any(),
                Some(Ok(list)) => token_table(list, in_use(), revoke).into_any(),
            }}
        </div>
    }
}

fn token_table(tokens: Vec<TokenInfo>, in_use: Option<i64>, revoke: Callback<i64>) -> AnyView {
    if tokens.is_empty() {
        return view! { <p class="muted">"No tokens."</p> }.into_any();
    }
    view! {
        <table class="grid">
            <thead><tr><th>"Name"</th><th>"Created (UTC)"</th><th>"Revoked (UTC)"</th><th></th></tr></thead>
            <tbody>
                {tokens
                    .into_iter()
                    .map(|t| {
                        let id = t.id;
                        let active = t.revoked_at.is_none();
                        let mine = in_use == Some(id);
                        let warning = if mine {
                            "This is the token this console is signed in with: revoking it signs you out. "
                        } else {
                            "Revoke it? Clients using it stop working. "
                        };
                        view! {
                            <tr data-test="token-row" data-name=t.name.clone() class:muted=!active>
                                <td>
                                    {t.name.clone()}
                                    {mine.then(|| view! { <span class="muted" data-test="token-in-use">" (this session)"</span> })}
                                </td>
                                <td>{format::short_time(&t.created_at)}</td>
                                <td>{t.revoked_at.as_deref().map(format::short_time).unwrap_or_else(|| "—".into())}</td>
                                <td>
                                    {active.then(|| {
                                        // Asked first: a revoked token stops
                                        // every client using it at once.
                                        let asking = RwSignal::new(false);
                                        view! {
                                            {move || if asking.get() {
                                                view! {
                                                    <span class="confirm" data-test="confirm-revoke">
                                                        {warning}
                                                        <button class="small danger" data-test="token-revoke-confirm" on:click=move |_| revoke.run(id)>
                                                            "Revoke"
                                                        </button>
                                                        <button class="small" on:click=move |_| asking.set(false)>"Cancel"</button>
                                                    </span>
                                                }.into_any()
                                            } else {
                                                view! {
                                                    <button class="small danger" data-test="token-revoke" on:click=move |_| asking.set(true)>
                                                        "Revoke…"
                                                    </button>
                                                }.into_any()
                                            }}
                                        }
                                    })}
                                </td>
                            </tr>
                        }
                    })
                    .collect_any()}
            </tbody>
        </table>
    }
    .into_any()
}
