//! Pieces shared by the pages.

mod deploy_log;
mod report;

pub use deploy_log::DeployLog;
pub use report::ReportView;

use std::time::Duration;

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use shared::api::ServiceStatus;
use wasm_bindgen::JsCast;

use crate::api::Failure;
use crate::auth::use_auth;

/// A server or network failure as a message (never a blank page), with the
/// config problems' paths when the server sent some.
#[component]
pub fn ErrorBox(failure: Failure) -> impl IntoView {
    let auth = use_auth();
    let unauthorized = failure.is_unauthorized();
    let errors = failure.errors.clone();
    view! {
        <div class="error-box" role="alert">
            <p>{failure.message.clone()}</p>
            {(!errors.is_empty()).then(|| view! { <PathErrors errors=errors/> })}
            {unauthorized.then(|| view! {
                <p>
                    "Your token was not accepted. "
                    <button class="link" on:click=move |_| auth.sign_out()>"Sign in again"</button>
                </p>
            })}
        </div>
    }
}

/// Config problems, each with its JSON path.
#[component]
pub fn PathErrors(errors: Vec<shared::ValidationError>) -> impl IntoView {
    view! {
        <ul class="path-errors">
            {errors
                .into_iter()
                .map(|e| view! { <li><code class="path">{e.path}</code>" "{e.message}</li> })
                .collect_view()}
        </ul>
    }
}

#[component]
pub fn StatusBadge(status: ServiceStatus) -> impl IntoView {
    let class = format!("status status-{}", status.as_str().to_lowercase());
    view! { <span class=class>{status.as_str()}</span> }
}

#[component]
pub fn BackToServices() -> impl IntoView {
    view! { <p><A href="/">"← All services"</A></p> }
}

/// Calls `f` every `period` while the calling component is mounted.
pub fn poll_every(period: Duration, f: impl Fn() + 'static) {
    if let Ok(handle) = set_interval_with_handle(f, period) {
        on_cleanup(move || handle.clear());
    }
}

/// A button that copies `text`; its label says whether that worked.
#[component]
pub fn CopyButton(#[prop(into)] text: Signal<String>) -> impl IntoView {
    let label = RwSignal::new("Copy");
    let copy = move |_| {
        let text = text.get_untracked();
        spawn_local(async move {
            let done = match write_clipboard(&text).await {
                Ok(()) => "Copied",
                Err(()) => "Copy failed",
            };
            label.try_set(done);
        });
    };
    view! { <button class="small" on:click=copy>{move || label.get()}</button> }
}

/// `navigator.clipboard.writeText`, looked up at run time: it is absent
/// outside secure contexts (plain http to a non-local host), and that must
/// be a message, not a crash.
async fn write_clipboard(text: &str) -> Result<(), ()> {
    let window = web_sys::window().ok_or(())?;
    let clipboard =
        js_sys::Reflect::get(&window.navigator(), &"clipboard".into()).map_err(|_| ())?;
    if clipboard.is_undefined() || clipboard.is_null() {
        return Err(());
    }
    let write: js_sys::Function = js_sys::Reflect::get(&clipboard, &"writeText".into())
        .map_err(|_| ())?
        .dyn_into()
        .map_err(|_| ())?;
    let promise: js_sys::Promise = write
        .call1(&clipboard, &text.into())
        .map_err(|_| ())?
        .dyn_into()
        .map_err(|_| ())?;
    wasm_bindgen_futures::JsFuture::from(promise)
        .await
        .map(|_| ())
        .map_err(|_| ())
}

/// How often lists and transient services are refreshed.
pub const REFRESH: Duration = Duration::from_secs(3);
