//! A service's request log: the predictions the server kept (a sample, and
//! every failed one), newest first; a row opens to show the request and
//! the answer.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::api::RequestSample;

use crate::api::{self, Failure};
use crate::auth::use_auth;
use crate::components::{CollectAny, ErrorBox};
use crate::format;

#[component]
pub fn RequestLog(name: String) -> impl IntoView {
    let auth = use_auth();
    let samples = RwSignal::new(None::<Result<Vec<RequestSample>, Failure>>);
    let open = RwSignal::new(None::<usize>);
    let path = format!("/api/v2/services/{}/requests", api::segment(&name));
    let load = move || {
        let Some(token) = auth.current() else { return };
        let path = path.clone();
        spawn_local(async move {
            samples.try_set(Some(api::get::<Vec<RequestSample>>(&path, &token).await));
        });
    };
    load();
    let reload = load.clone();
    view! {
        <div data-test="request-log">
            <p class="muted">
                "Predictions this server kept: a sample (" <code>"--request-log-rate"</code>
                ") and every failed one, the last 100, bodies cut to 4 KiB. "
                <button class="small" data-test="requests-refresh" on:click=move |_| reload()>"Refresh"</button>
            </p>
            {move || match samples.get() {
                None => view! { <p class="muted">"Loading requests…"</p> }.into_any(),
                Some(Err(f)) => view! { <ErrorBox failure=f/> }.into_any(),
                Some(Ok(list)) if list.is_empty() => {
                    view! { <p class="muted" data-test="no-requests">"No requests kept yet."</p> }.into_any()
                }
                Some(Ok(list)) => view! {
                    <table class="grid">
                        <thead>
                            <tr>
                                <th>"Time"</th><th>"Protocol"</th><th>"Version"</th>
                                <th>"Status"</th><th>"Latency"</th><th>"Trace"</th>
                            </tr>
                        </thead>
                        <tbody>
                            {list
                                .into_iter()
                                .enumerate()
                                .map(|(i, s)| {
                                    let failed = s.status >= 400;
                                    let (request, response) = (s.request.clone(), s.response.clone());
                                    view! {
                                        <tr
                                            data-test="request"
                                            class="clickable"
                                            class:failed=failed
                                            on:click=move |_| open.update(|o| *o = if *o == Some(i) { None } else { Some(i) })
                                        >
                                            <td>{format::short_time(&s.at)}</td>
                                            <td>{s.protocol}</td>
                                            <td>{s.version.map_or("—".into(), |v| format!("v{v}"))}</td>
                                            <td>{s.status}</td>
                                            <td>{format::ms(s.latency_ms)}</td>
                                            <td><code>{s.trace_id.unwrap_or_else(|| "—".into())}</code></td>
                                        </tr>
                                        {move || (open.get() == Some(i)).then(|| view! {
                                            <tr data-test="request-detail">
                                                <td colspan="6">
                                                    <strong>"Request"</strong>
                                                    <pre class="body">{request.clone()}</pre>
                                                    <strong>{if failed { "Error" } else { "Answer" }}</strong>
                                                    <pre class="body">{response.clone()}</pre>
                                                </td>
                                            </tr>
                                        })}
                                    }
                                })
                                .collect_any()}
                        </tbody>
                    </table>
                }.into_any(),
            }}
        </div>
    }
}
