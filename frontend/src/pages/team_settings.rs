//! `/teams/:team/settings`: the team's members and their roles. Team admins
//! (and site admins) add members, change roles and remove members; everyone
//! else sees the list only.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::api::{Member, Role, SetMember, TeamDetail, TeamSettings};

use crate::api::{self, Failure};
use crate::auth::{use_auth, Auth};
use crate::components::{ActionError, CollectAny, ErrorBox, NameForm};
use crate::format;
use crate::pages::route_param;

const ROLES: [Role; 3] = [Role::Viewer, Role::Deployer, Role::Admin];

#[component]
pub fn TeamSettingsPage() -> impl IntoView {
    let team = route_param("team");
    move || view! { <TeamSettingsView team=team.get()/> }
}

/// What the member actions share: the team's API path and where answers go.
#[derive(Clone)]
struct Members {
    auth: Auth,
    base: String,
    detail: RwSignal<Option<Result<TeamDetail, Failure>>>,
    failure: RwSignal<Option<Failure>>,
}

impl Members {
    /// Sends a member change (a role, or None to remove); its answer (the
    /// team) replaces the list. `done` hears whether it worked.
    /// (Boxed, not generic: one copy of this for every caller.)
    fn change(&self, user: &str, role: Option<Role>, done: Box<dyn FnOnce(bool)>) {
        let auth = self.auth;
        let Some(token) = auth.current() else { return };
        let path = format!("{}/members/{}", self.base, api::segment(user));
        let (detail, failure) = (self.detail, self.failure);
        failure.set(None);
        spawn_local(async move {
            let result = match role {
                Some(role) => {
                    api::put::<TeamDetail>(&path, &token, &api::json_body(&SetMember { role }))
                        .await
                }
                None => api::delete_json::<TeamDetail>(&path, &token).await,
            };
            match result {
                Ok(d) => {
                    detail.try_set(Some(Ok(d)));
                    // The user's own role may have changed.
                    auth.refresh();
                    done(true);
                }
                Err(f) => {
                    failure.try_set(Some(f));
                    done(false);
                }
            }
        });
    }
}

#[component]
fn TeamSettingsView(team: String) -> impl IntoView {
    let auth = use_auth();
    let members = Members {
        auth,
        base: format!("/api/v2/teams/{}", api::segment(&team)),
        detail: RwSignal::new(None),
        failure: RwSignal::new(None),
    };
    {
        let (path, detail) = (members.base.clone(), members.detail);
        if let Some(token) = auth.current() {
            spawn_local(async move {
                let result = api::get::<TeamDetail>(&path, &token).await;
                detail.try_set(Some(result));
            });
        }
    }
    let (detail, failure) = (members.detail, members.failure);
    // Kept out of the list's re-render, so the form keeps what is typed.
    let manage =
        Memo::new(move |_| detail.with(|d| matches!(d, Some(Ok(d)) if d.your_role.can_manage())));
    let add_member = members.clone();
    let dashboard = format!("/teams/{}", api::segment(&team));
    view! {
        <p><a href=dashboard>{format!("← Team {team}")}</a></p>
        <h1 data-test="team-settings">"Team "{team.clone()}" — members"</h1>
        <ActionError failure=failure/>
        {move || match detail.get() {
            None => view! { <p class="muted">"Loading…"</p> }.into_any(),
            Some(Err(f)) => view! { <ErrorBox failure=f/> }.into_any(),
            Some(Ok(d)) => {
                let manage = d.your_role.can_manage();
                view! {
                    <p class="muted">
                        {format!("Your role here: {}. Created {} UTC.", d.your_role.as_str(), format::short_time(&d.created_at))}
                        {(!manage).then_some(" Only the team's admins change members.")}
                    </p>
                    <MemberTable members=d.members manage=manage actions=members.clone()/>
                    <SecretsSetting on=d.viewers_see_secrets manage=manage actions=members.clone()/>
                    {auth.is_site_admin().then(|| view! {
                        <p class="muted">
                            "Users, teams and users' tokens are managed on the "<a href="/admin">"admin page"</a>"."
                        </p>
                    })}
                }
                .into_any()
            }
        }}
        {move || manage.get().then(|| view! { <AddMember actions=add_member.clone()/> })}
    }
}

/// Whether viewers see the services' tokens and share links: a checkbox
/// for the team's admins, a sentence for everyone else.
#[component]
fn SecretsSetting(on: bool, manage: bool, actions: Members) -> impl IntoView {
    let text = "Viewers see the services' prediction tokens and share links";
    if !manage {
        let said = if on {
            "yes"
        } else {
            "no (deployers and admins do)"
        };
        return view! { <p class="muted" data-test="viewers-see-secrets">{format!("{text}: {said}.")}</p> }
            .into_any();
    }
    let toggle = move |ev: leptos::ev::Event| {
        let Some(token) = actions.auth.current() else {
            return;
        };
        let checked = event_target_checked(&ev);
        let (path, detail, failure) = (actions.base.clone(), actions.detail, actions.failure);
        failure.set(None);
        spawn_local(async move {
            let body = api::json_body(&TeamSettings {
                viewers_see_secrets: Some(checked),
            });
            match api::patch::<TeamDetail>(&path, &token, &body).await {
                Ok(d) => {
                    detail.try_set(Some(Ok(d)));
                }
                Err(f) => {
                    failure.try_set(Some(f));
                }
            }
        });
    };
    view! {
        <p data-test="viewers-see-secrets">
            <label>
                <input type="checkbox" prop:checked=on on:change=toggle/>" "{text}
            </label>
        </p>
    }
    .into_any()
}

#[component]
fn MemberTable(members: Vec<Member>, manage: bool, actions: Members) -> impl IntoView {
    view! {
        <table class="grid members" data-test="members">
            <thead><tr><th>"User"</th><th>"Role"</th>{manage.then(|| view! { <th></th> })}</tr></thead>
            <tbody>
                {members
                    .into_iter()
                    .map(|m| {
                        let actions = actions.clone();
                        view! { <MemberRow m=m manage=manage actions=actions/> }
                    })
                    .collect_any()}
            </tbody>
        </table>
    }
}

#[component]
fn MemberRow(m: Member, manage: bool, actions: Members) -> impl IntoView {
    let user = m.user.clone();
    if !manage {
        return view! {
            <tr data-test="member" data-user=user.clone()>
                <td>{user.clone()}</td>
                <td data-test="member-role">{m.role.as_str()}</td>
            </tr>
        }
        .into_any();
    }
    let before = m.role;
    let set_role = Callback::new({
        let (user, actions) = (user.clone(), actions.clone());
        move |ev: leptos::ev::Event| {
            let select = event_target::<web_sys::HtmlSelectElement>(&ev);
            if let Some(role) = Role::parse(&select.value()) {
                actions.change(
                    &user,
                    Some(role),
                    Box::new(move |ok| {
                        // Refused: the list did not change, so the select
                        // must go back to the role the member still has.
                        if !ok {
                            select.set_value(before.as_str());
                        }
                    }),
                );
            }
        }
    });
    let remove = {
        let user = user.clone();
        move |_| actions.change(&user, None, Box::new(|_| ()))
    };
    view! {
        <tr data-test="member" data-user=user.clone()>
            <td>{user.clone()}</td>
            <td>
                <RoleSelect current=m.role on_change=set_role/>
            </td>
            <td><button class="small danger" data-test="member-remove" on:click=remove>"Remove"</button></td>
        </tr>
    }
    .into_any()
}

/// `selected` sets the first rendering; `prop:value` keeps a re-rendered
/// row right (after a removal, a row shows the next member, and an option
/// the user picked no longer follows its `selected` attribute).
#[component]
fn RoleSelect(current: Role, on_change: Callback<leptos::ev::Event>) -> impl IntoView {
    view! {
        <select
            data-test="member-role"
            aria-label="Role"
            prop:value=current.as_str()
            on:change=move |ev| on_change.run(ev)
        >
            {ROLES
                .iter()
                .map(|r| view! { <option value=r.as_str() selected={*r == current}>{r.as_str()}</option> })
                .collect_any()}
        </select>
    }
}

/// Adds a user (by name) with a role; an existing member gets the new role.
#[component]
fn AddMember(actions: Members) -> impl IntoView {
    let user = RwSignal::new(String::new());
    let role = RwSignal::new(Role::Viewer);
    let add = Callback::new(move |name: String| {
        actions.change(
            &name,
            Some(role.get_untracked()),
            Box::new(move |ok| {
                if ok {
                    user.try_set(String::new());
                }
            }),
        );
    });
    view! {
        <h2>"Add a member"</h2>
        <NameForm test="add-member" placeholder="user name" button="Add" name=user on_submit=add>
            <RoleSelect
                current=Role::Viewer
                on_change=Callback::new(move |ev: leptos::ev::Event| {
                    if let Some(r) = Role::parse(&event_target_value(&ev)) {
                        role.set(r)
                    }
                })
            />
        </NameForm>
    }
}
