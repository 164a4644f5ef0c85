//! The API token, kept in `localStorage` so deep links and reloads stay
//! signed in, and who it belongs to (`GET /api/v2/me`), which decides what
//! the console offers. The server checks every call regardless: hiding a
//! button is a courtesy, not the protection.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::api::{Me, Role, TeamRole};

use crate::api::{self, Failure};

const STORAGE_KEY: &str = "whetstone.token";

/// The signed-in state, shared through context.
#[derive(Clone, Copy)]
pub struct Auth {
    pub token: RwSignal<Option<String>>,
    /// The token's user; None until `/api/v2/me` answered.
    pub me: RwSignal<Option<Result<Me, Failure>>>,
    /// Teams the user sees with their role in each (`GET /api/v2/teams`);
    /// for a site admin that is more than `me.teams`.
    pub teams: RwSignal<Vec<TeamRole>>,
}

impl Auth {
    pub fn load() -> Auth {
        let auth = Auth {
            token: RwSignal::new(stored_token()),
            me: RwSignal::new(None),
            teams: RwSignal::new(vec![]),
        };
        auth.refresh();
        auth.follow_storage();
        auth
    }

    /// Keeps this page's session the stored one. A page the browser brings
    /// back from its back/forward cache still holds the token in memory
    /// after a sign-out elsewhere in the history (or in another tab): such a
    /// page is loaded afresh, and a sign-out in another tab signs this one
    /// out too.
    fn follow_storage(self) {
        let stale = move || self.token.get_untracked() != stored_token();
        let _ = window_event_listener(leptos::ev::pageshow, move |e| {
            if e.persisted() && stale() {
                if let Some(w) = web_sys::window() {
                    let _ = w.location().reload();
                }
            }
        });
        let _ = window_event_listener(leptos::ev::storage, move |e| {
            if e.key().as_deref() == Some(STORAGE_KEY) && stale() {
                match stored_token() {
                    None => self.forget(),
                    Some(_) => {
                        if let Some(w) = web_sys::window() {
                            let _ = w.location().reload();
                        }
                    }
                }
            }
        });
    }

    /// Drops the session of this page (the stored token is already gone).
    fn forget(&self) {
        self.token.set(None);
        self.me.set(None);
        self.teams.set(vec![]);
    }

    /// Keeps a token whose `Me` is already known (the sign-in form asked).
    pub fn sign_in(&self, token: String, me: Me) {
        if let Some(s) = storage() {
            // A private window may refuse storage; the session still works until reload.
            let _ = s.set_item(STORAGE_KEY, &token);
        }
        self.teams.set(me.teams.clone());
        self.me.set(Some(Ok(me)));
        self.token.set(Some(token));
        self.refresh_teams();
    }

    pub fn sign_out(&self) {
        if let Some(s) = storage() {
            let _ = s.remove_item(STORAGE_KEY);
        }
        self.forget();
    }

    /// The current token, read without subscribing (for requests).
    pub fn current(&self) -> Option<String> {
        self.token.get_untracked()
    }

    /// Asks the server again who the token is (after a reload, or when a
    /// membership changed).
    pub fn refresh(&self) {
        let Some(token) = self.current() else { return };
        let me = self.me;
        spawn_local(async move {
            let result = api::get::<Me>("/api/v2/me", &token).await;
            me.try_set(Some(result));
        });
        self.refresh_teams();
    }

    /// Asks the server again for the teams the user sees (after creating one).
    pub fn refresh_teams(&self) {
        let Some(token) = self.current() else { return };
        let (teams, me) = (self.teams, self.me);
        spawn_local(async move {
            match api::get::<Vec<TeamRole>>("/api/v2/teams", &token).await {
                Ok(t) => {
                    teams.try_set(t);
                }
                // Without the list, the user's own memberships still name
                // their teams.
                Err(_) => {
                    let own = me
                        .try_with_untracked(|m| match m {
                            Some(Ok(m)) => m.teams.clone(),
                            _ => vec![],
                        })
                        .unwrap_or_default();
                    teams.try_set(own);
                }
            }
        });
    }

    /// The user's role in `team`; None while unknown or when not a member.
    /// Tracked: views that call it update once `/me` answers.
    pub fn role_in(&self, team: &str) -> Option<Role> {
        self.me.with(|m| match m {
            Some(Ok(me)) => me.role_in(team),
            _ => None,
        })
    }

    pub fn can_deploy_in(&self, team: &str) -> bool {
        self.role_in(team).is_some_and(Role::can_deploy)
    }

    /// Whether there is any team the user may deploy to (the "New service"
    /// entry points).
    pub fn can_deploy_somewhere(&self) -> bool {
        self.may_deploy_somewhere() == Some(true)
    }

    /// As [`Auth::can_deploy_somewhere`], None while the roles are unknown.
    pub fn may_deploy_somewhere(&self) -> Option<bool> {
        self.me.with(|m| match m {
            Some(Ok(me)) => Some(me.site_admin || me.teams.iter().any(|t| t.role.can_deploy())),
            _ => None,
        })
    }

    pub fn is_site_admin(&self) -> bool {
        self.me.with(|m| matches!(m, Some(Ok(me)) if me.site_admin))
    }

    pub fn user_name(&self) -> Option<String> {
        self.me.with(|m| match m {
            Some(Ok(me)) => Some(me.user.clone()),
            _ => None,
        })
    }

    /// Teams the user may deploy to, for the new-service team choice.
    pub fn deploy_teams(&self) -> Vec<String> {
        let admin = self.is_site_admin();
        self.teams.with(|ts| {
            ts.iter()
                .filter(|t| admin || t.role.can_deploy())
                .map(|t| t.team.clone())
                .collect()
        })
    }
}

pub fn use_auth() -> Auth {
    expect_context::<Auth>()
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

fn stored_token() -> Option<String> {
    storage()?
        .get_item(STORAGE_KEY)
        .ok()?
        .filter(|t| !t.trim().is_empty())
}
