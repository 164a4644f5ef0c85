//! Sign in with a pasted API token; the token is checked against the server
//! before it is kept.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::api::Me;

use crate::api::{self, Failure};
use crate::auth::use_auth;
use crate::components::ActionError;

#[component]
pub fn SignInPage() -> impl IntoView {
    let auth = use_auth();
    // Re-runs only when the token changes: signing in or out.
    move || {
        if auth.token.with(Option::is_none) {
            return view! { <SignInForm/> }.into_any();
        }
        view! {
            <h1>"Signed in"</h1>
            <p>
                <a href="/">"Go to services"</a>" · "
                <button class="link" on:click=move |_| auth.sign_out()>"Sign out"</button>
            </p>
        }
        .into_any()
    }
}

#[component]
fn SignInForm() -> impl IntoView {
    let auth = use_auth();
    let token = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let failure = RwSignal::new(None::<Failure>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let t = token.get_untracked().trim().to_string();
        if t.is_empty() {
            failure.set(Some(Failure {
                status: None,
                message: "Paste an API token first.".into(),
                errors: vec![],
            }));
            return;
        }
        busy.set(true);
        failure.set(None);
        spawn_local(async move {
            // Who the token belongs to also tells a good token from a bad one.
            match api::get::<Me>("/api/v2/me", &t).await {
                Ok(me) => auth.sign_in(t, me),
                Err(f) if f.is_unauthorized() => {
                    failure.try_set(Some(Failure {
                        message: "The server refused this token (invalid or revoked).".into(),
                        status: None,
                        errors: vec![],
                    }));
                }
                Err(f) => {
                    failure.try_set(Some(f));
                }
            }
            busy.try_set(false);
        });
    };
    view! {
        <form class="signin card" data-test="signin" on:submit=submit>
            <h1>"Sign in"</h1>
            <p>
                "Paste an API token. A local server's admin token is in "
                <code>"DATA/admin-token"</code>" (by default "
                <code>"~/.local/share/whetstone/data/admin-token"</code>")."
            </p>
            <input
                type="password"
                name="token"
                placeholder="whet_…"
                autocomplete="off"
                prop:value=move || token.get()
                on:input=move |ev| token.set(event_target_value(&ev))
            />
            <button type="submit" disabled=move || busy.get()>
                {move || if busy.get() { "Checking…" } else { "Sign in" }}
            </button>
            <ActionError failure=failure/>
        </form>
    }
}
