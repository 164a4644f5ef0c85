//! The deploy log, streamed over the WebSocket. The server replays the
//! stored lines first, so a reload shows the whole log, then streams new
//! lines until the deploy ends. The same view serves a signed-in user (the
//! service's log) and a share link's holder (the shared log, no token).

use std::sync::{Arc, Mutex};

use futures::future::{AbortHandle, Abortable};
use futures::StreamExt;
use gloo_net::websocket::{futures::WebSocket, Message};
use leptos::html;
use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::api::{LogEvent, LogLine, LogPage, ServiceStatus};

use crate::api;
use crate::auth::use_auth;
use crate::format;

#[derive(Debug, Clone, PartialEq)]
enum StreamState {
    Connecting,
    Live,
    Ended {
        status: ServiceStatus,
        message: Option<String>,
    },
    /// No stream: the stored log was fetched instead (why in the text).
    Stored(String),
    Failed(String),
}

/// Whose log, and so which URLs and credentials.
#[derive(Debug, Clone, PartialEq)]
pub enum LogSource {
    /// A service, with the signed-in user's token.
    Service(String),
    /// A share link's token: public, no sign-in.
    Shared(String),
}

impl LogSource {
    fn stream_url(&self, token: Option<&str>) -> Option<String> {
        match (self, token) {
            (LogSource::Service(name), Some(_)) => api::log_stream_url(name),
            (LogSource::Service(_), None) => None,
            (LogSource::Shared(link), _) => api::ws_url(&format!(
                "/api/v2/shared/{}/logs/stream",
                api::segment(link)
            )),
        }
    }

    async fn page(&self, token: Option<&str>, after: i64) -> Result<LogPage, api::Failure> {
        let query = format!("logs?after={after}&limit=5000");
        match (self, token) {
            (LogSource::Service(name), Some(token)) => {
                let path = format!("/api/v2/services/{}/{query}", api::segment(name));
                api::get(&path, token).await
            }
            (LogSource::Service(_), None) => Err(api::Failure::local("signed out")),
            (LogSource::Shared(link), _) => {
                api::get_public(&format!("/api/v2/shared/{}/{query}", api::segment(link))).await
            }
        }
    }
}

/// `generation`: each change reconnects (an action queued a new deploy job).
/// `on_end`: called when the server says the deploy ended.
#[component]
pub fn DeployLog(
    source: LogSource,
    generation: RwSignal<u32>,
    on_end: Callback<()>,
) -> impl IntoView {
    let auth = use_auth();
    let lines = RwSignal::new(Vec::<LogLine>::new());
    let state = RwSignal::new(StreamState::Connecting);
    let running: Arc<Mutex<Option<AbortHandle>>> = Arc::default();
    {
        let running = running.clone();
        Effect::new(move |_| {
            generation.track();
            let token = auth.current();
            if matches!(source, LogSource::Service(_)) && token.is_none() {
                return;
            }
            let (handle, registration) = AbortHandle::new_pair();
            if let Ok(mut r) = running.lock() {
                if let Some(old) = r.replace(handle) {
                    old.abort();
                }
            }
            lines.set(vec![]);
            state.set(StreamState::Connecting);
            let follow = follow(source.clone(), token, lines, state, on_end);
            spawn_local(async move {
                // Aborting drops the socket, which closes it.
                let _ = Abortable::new(follow, registration).await;
            });
        });
    }
    on_cleanup(move || {
        if let Ok(mut r) = running.lock() {
            if let Some(h) = r.take() {
                h.abort();
            }
        }
    });

    // Auto-scroll, unless the reader scrolled up to read.
    let pane = NodeRef::<html::Div>::new();
    let stick_to_bottom = RwSignal::new(true);
    Effect::new(move |_| {
        lines.track();
        if stick_to_bottom.get_untracked() {
            // After the next paint: the new rows are in the DOM by then.
            request_animation_frame(move || {
                if let Some(el) = pane.get_untracked() {
                    el.set_scroll_top(el.scroll_height());
                }
            });
        }
    });
    let on_scroll = move |_| {
        if let Some(el) = pane.get_untracked() {
            let gap = el.scroll_height() - el.scroll_top() - el.client_height();
            stick_to_bottom.set(gap < 30);
        }
    };

    view! {
        <p class="log-state" data-test="log-state">{move || state_text(&state.get())}</p>
        <div class="log" data-test="deploy-log" node_ref=pane on:scroll=on_scroll>
            <For each=move || lines.get() key=|l| l.id let:l>
                // data-id/data-ts: the browser tests match rows to the
                // server's lines and time their arrival.
                <div class=format::log_class(&l.line) data-id=l.id.to_string() data-ts=l.ts.clone()>
                    <span class="ts">{format::short_time(&l.ts)}</span>" "{l.line.clone()}
                </div>
            </For>
            {move || lines.with(Vec::is_empty).then(|| view! { <div class="muted">"(no log lines yet)"</div> })}
        </div>
    }
}

fn state_text(s: &StreamState) -> String {
    match s {
        StreamState::Connecting => "Connecting to the log stream…".into(),
        StreamState::Live => "● Live".into(),
        StreamState::Ended { status, message } => match message {
            Some(m) => format!("Deploy finished; the service is {}: {m}", status.as_str()),
            None => format!("Deploy finished; the service is {}", status.as_str()),
        },
        StreamState::Stored(why) => format!("Stored log (not live: {why})"),
        StreamState::Failed(why) => format!("Log unavailable: {why}"),
    }
}

async fn follow(
    source: LogSource,
    token: Option<String>,
    lines: RwSignal<Vec<LogLine>>,
    state: RwSignal<StreamState>,
    on_end: Callback<()>,
) {
    let opened = source
        .stream_url(token.as_deref())
        .ok_or_else(|| "no page location".to_string())
        .and_then(|url| {
            match (&source, token.as_deref()) {
                (LogSource::Service(_), Some(t)) => {
                    WebSocket::open_with_protocols(&url, &api::ws_protocols(t))
                }
                _ => WebSocket::open(&url),
            }
            .map_err(|e| e.to_string())
        });
    let mut ws = match opened {
        Ok(ws) => ws,
        Err(e) => return stored_log(&source, token.as_deref(), lines, state, e).await,
    };
    state.try_set(StreamState::Live);
    let mut got_any = false;
    while let Some(msg) = ws.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Bytes(_)) => continue,
            Err(e) => {
                // Refused before any frame (bad token, service gone): the
                // paged API says why in JSON.
                if !got_any {
                    return stored_log(&source, token.as_deref(), lines, state, e.to_string())
                        .await;
                }
                state.try_set(StreamState::Failed(e.to_string()));
                return;
            }
        };
        got_any = true;
        match serde_json::from_str::<LogEvent>(&text) {
            Ok(LogEvent::Line(line)) => {
                lines.try_update(|v| {
                    // A reconnect replays from the start; keep ids unique.
                    if v.last().is_none_or(|last| last.id < line.id) {
                        v.push(line)
                    }
                });
            }
            Ok(LogEvent::End { status, message }) => {
                state.try_set(StreamState::Ended { status, message });
                on_end.run(());
                return;
            }
            Err(e) => {
                state.try_set(StreamState::Failed(format!("unexpected message: {e}")));
            }
        }
    }
    if matches!(state.try_get_untracked(), Some(StreamState::Live)) {
        state.try_set(StreamState::Failed("the server closed the stream".into()));
    }
}

/// Fallback when the WebSocket cannot be used: the paged log API.
async fn stored_log(
    source: &LogSource,
    token: Option<&str>,
    lines: RwSignal<Vec<LogLine>>,
    state: RwSignal<StreamState>,
    why: String,
) {
    let mut after = 0i64;
    let mut all = Vec::new();
    loop {
        match source.page(token, after).await {
            Ok(page) => {
                all.extend(page.lines);
                match page.next {
                    Some(n) => after = n,
                    None => break,
                }
            }
            Err(f) => {
                state.try_set(StreamState::Failed(f.message));
                return;
            }
        }
    }
    lines.try_set(all);
    state.try_set(StreamState::Stored(why));
}
