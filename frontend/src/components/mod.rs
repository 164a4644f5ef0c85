//! Pieces shared by the pages.

mod config_editor;
mod deploy_log;
mod metrics;
mod model_upload;
mod report;
mod requests;
mod share_links;
mod try_it;
mod versions;

pub use config_editor::ConfigEditor;
pub use deploy_log::{DeployLog, LogSource};
pub use metrics::ServiceMetrics;
pub use model_upload::ModelUpload;
pub use report::ReportView;
pub use requests::RequestLog;
pub use share_links::ShareLinks;
pub use try_it::TryIt;
pub use versions::Versions;

use std::time::Duration;

use leptos::prelude::*;
use leptos::task::spawn_local;
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

/// The failure of the last action on a page, if it failed; one component
/// rather than a closure per page keeps the bundle small.
#[component]
pub fn ActionError(failure: RwSignal<Option<Failure>>) -> impl IntoView {
    move || failure.get().map(|f| view! { <ErrorBox failure=f/> })
}

/// Config problems, each with its JSON path.
#[component]
pub fn PathErrors(errors: Vec<shared::ValidationError>) -> impl IntoView {
    view! {
        <ul class="path-errors">
            {errors
                .into_iter()
                .map(|e| view! { <li><code class="path">{e.path}</code>" "{e.message}</li> })
                .collect_any()}
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
    view! { <p><a href="/">"← All services"</a></p> }
}

/// A form of one name field and its button: create a team, a user or a
/// token, add a member. `on_submit` gets the trimmed name; the button stays
/// disabled until there is one. `children` (a role) go between the two.
#[component]
pub fn NameForm(
    test: &'static str,
    placeholder: &'static str,
    button: &'static str,
    name: RwSignal<String>,
    on_submit: Callback<String>,
    #[prop(optional)] children: Option<Children>,
) -> impl IntoView {
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let typed = name.get_untracked().trim().to_string();
        if !typed.is_empty() {
            on_submit.run(typed);
        }
    };
    view! {
        <form class="actions" data-test=test on:submit=submit>
            <input
                type="text"
                name="name"
                placeholder=placeholder
                prop:value=move || name.get()
                on:input=move |ev| name.set(event_target_value(&ev))
            />
            {children.map(|c| c())}
            <button type="submit" class="primary" disabled=move || name.with(|n| n.trim().is_empty())>
                {button}
            </button>
        </form>
    }
}

/// A secret shown once (a new API token): the server keeps only its hash,
/// so this is the only chance to copy it.
#[component]
pub fn ShownOnce(label: String, secret: String) -> impl IntoView {
    view! {
        <div class="shown-once" data-test="shown-once">
            <p>
                <strong>{label}</strong>" — copy it now: it is shown only this once."
            </p>
            <p><code class="token" data-test="secret">{secret.clone()}</code>" "<CopyButton text=secret/></p>
        </div>
    }
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

/// Collects views as `AnyView`s. Every list in the console is then one type,
/// `Vec<AnyView>`, whose rendering code exists once; a `collect_view()` per
/// row type repeats it for each (the bundle has a size budget).
pub trait CollectAny: Iterator + Sized
where
    Self::Item: IntoAny,
{
    fn collect_any(self) -> Vec<AnyView> {
        self.map(IntoAny::into_any).collect()
    }
}

impl<I> CollectAny for I
where
    I: Iterator,
    I::Item: IntoAny,
{
}

/// How often lists and transient services are refreshed.
pub const REFRESH: Duration = Duration::from_secs(3);
