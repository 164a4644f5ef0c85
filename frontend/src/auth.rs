//! The API token: kept in `localStorage` so deep links and reloads stay signed in.

use leptos::prelude::*;

const STORAGE_KEY: &str = "whetstone.token";

/// The signed-in state, shared through context.
#[derive(Clone, Copy)]
pub struct Auth {
    pub token: RwSignal<Option<String>>,
}

impl Auth {
    pub fn load() -> Auth {
        Auth {
            token: RwSignal::new(stored_token()),
        }
    }

    pub fn sign_in(&self, token: String) {
        if let Some(s) = storage() {
            // A private window may refuse storage; the session still works until reload.
            let _ = s.set_item(STORAGE_KEY, &token);
        }
        self.token.set(Some(token));
    }

    pub fn sign_out(&self) {
        if let Some(s) = storage() {
            let _ = s.remove_item(STORAGE_KEY);
        }
        self.token.set(None);
    }

    /// The current token, read without subscribing (for requests).
    pub fn current(&self) -> Option<String> {
        self.token.get_untracked()
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
