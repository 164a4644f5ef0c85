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
use leptos_router::components::{Route, Router, Routes, A};
use leptos_router::path;

use crate::auth::{use_auth, Auth};
use crate::pages::{NewServicePage, NotFoundPage, ServicePage, ServicesPage, SignInPage};

fn main() {
    // Panics go to the browser console with a message instead of "unreachable".
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

#[component]
fn App() -> impl IntoView {
    provide_context(Auth::load());
    let auth = use_auth();
    let signed_in = Memo::new(move |_| auth.token.with(Option::is_some));
    view! {
        <Router>
            <TopBar/>
            <main>
                // Signed out, every deep link shows the sign-in form in place,
                // so the page the link names appears once a token is given.
                {move || {
                    if signed_in.get() {
                        view! {
                            <Routes fallback=NotFoundPage>
                                <Route path=path!("/") view=ServicesPage/>
                                <Route path=path!("/services/:name") view=ServicePage/>
                                <Route path=path!("/new") view=NewServicePage/>
                                <Route path=path!("/signin") view=SignInPage/>
                            </Routes>
                        }
                            .into_any()
                    } else {
                        view! { <SignInPage/> }.into_any()
                    }
                }}
            </main>
        </Router>
    }
}

#[component]
fn TopBar() -> impl IntoView {
    let auth = use_auth();
    view! {
        <header class="topbar">
            <A href="/" attr:class="brand">"Whetstone"</A>
            <Show when=move || auth.token.with(Option::is_some)>
                <nav>
                    <A href="/">"Services"</A>
                    <A href="/new">"New service"</A>
                </nav>
                <button class="link" on:click=move |_| auth.sign_out()>"Sign out"</button>
            </Show>
        </header>
    }
}
