//! Read-only links to one deployment: create (the link is shown once: the
//! server keeps only its hash), list, revoke. Each link opens `/s/{token}`
//! (status, log, report) without signing in.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::api::ShareLink;

use crate::api::{self, Failure};
use crate::auth::use_auth;
use crate::components::{ActionError, CollectAny, CopyButton, ErrorBox};
use crate::format;

#[component]
pub fn ShareLinks(name: String) -> impl IntoView {
    let auth = use_auth();
    let links = RwSignal::new(None::<Result<Vec<ShareLink>, Failure>>);
    let failure = RwSignal::new(None::<Failure>);
    let busy = RwSignal::new(false);
    // The link just created: its URL is in this answer only.
    let created = RwSignal::new(None::<ShareLink>);
    let base = format!("/api/v2/services/{}/shares", api::segment(&name));
    let load = {
        let base = base.clone();
        move || {
            let Some(token) = auth.current() else { return };
            let base = base.clone();
            spawn_local(async move {
                let result = api::get::<Vec<ShareLink>>(&base, &token).await;
                links.try_set(Some(result));
            });
        }
    };
    load();
    let create = {
        let (base, load) = (base.clone(), load.clone());
        move |_| {
            let Some(token) = auth.current() else { return };
            let (base, load) = (base.clone(), load.clone());
            busy.set(true);
            failure.set(None);
            spawn_local(async move {
                match api::post::<ShareLink>(&base, &token, "{}").await {
                    Ok(link) => {
                        created.try_set(Some(link));
                        load();
                    }
                    Err(f) => {
                        failure.try_set(Some(f));
                    }
                }
                busy.try_set(false);
            });
        }
    };
    let revoke = Callback::new({
        let (base, load) = (base.clone(), load.clone());
        move |link: String| {
            let Some(token) = auth.current() else { return };
            let path = format!("{base}/{}", api::segment(&link));
            let load = load.clone();
            failure.set(None);
            spawn_local(async move {
                match api::delete(&path, &token).await {
                    Ok(()) => {
                        created.try_set(None);
                        load();
                    }
                    Err(f) => {
                        failure.try_set(Some(f));
                    }
                }
            });
        }
    });
    view! {
        <div class="shares" data-test="shares">
            <p>
                <button data-test="share-create" on:click=create disabled=move || busy.get()>
                    "Create a read-only link"
                </button>
                <span class="muted">
                    " Anyone with the link sees this service's status, log and report, without signing in."
                </span>
            </p>
            <ActionError failure=failure/>
            {move || created.get().and_then(|l| l.url).map(|path| {
                let url = format!("{}{path}", api::origin());
                view! {
                    <div class="shown-once" data-test="share-created">
                        <p>"The new link — copy it now: it is shown this once (only its hash is kept)."</p>
                        <p>
                            <a href=path target="_blank" data-test="share-url">{url.clone()}</a>" "
                            <CopyButton text=url/>
                        </p>
                    </div>
                }
            })}
            {move || match links.get() {
                None => view! { <p class="muted">"Loading links…"</p> }.into_any(),
                Some(Err(f)) => view! { <ErrorBox failure=f/> }.into_any(),
                Some(Ok(list)) if list.is_empty() => {
                    view! { <p class="muted">"No links yet."</p> }.into_any()
                }
                Some(Ok(list)) => share_table(list, revoke).into_any(),
            }}
        </div>
    }
}

fn share_table(links: Vec<ShareLink>, revoke: Callback<String>) -> impl IntoView {
    view! {
        <table class="grid">
            <thead>
                <tr><th>"Link"</th><th>"Created"</th><th>"By"</th><th></th></tr>
            </thead>
            <tbody>
                {links
                    .into_iter()
                    .map(|l| {
                        let id = l.id.clone();
                        view! {
                            <tr data-test="share-link">
                                <td><code>{format!("{}…", l.id)}</code></td>
                                <td>{format::short_time(&l.created_at)}</td>
                                <td>{l.created_by}</td>
                                <td>
                                    <button
                                        class="small danger"
                                        data-test="share-revoke"
                                        on:click=move |_| revoke.run(id.clone())
                                    >
                                        "Revoke"
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
