//! Model upload from the new-service page: the chosen file (a model, or an
//! archive of a model folder) is streamed as the raw body of
//! `POST /api/v2/uploads?filename=NAME`, the way `whet create` uploads, and
//! the answer's `model_path` goes into the config.
//!
//! XMLHttpRequest, not fetch: only XHR reports upload progress.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::api::UploadResponse;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{File, HtmlInputElement, ProgressEvent, XmlHttpRequest};

use crate::api::{self, Failure};
use crate::auth::use_auth;
use crate::components::{CopyButton, ErrorBox};
use crate::format;

#[derive(Debug, Clone, PartialEq)]
enum UploadState {
    Idle,
    /// Bytes sent so far of the file's size.
    Sending {
        name: String,
        sent: f64,
        total: f64,
    },
    /// The server has every byte and is hashing / unpacking.
    Checking {
        name: String,
    },
    Done(UploadResponse),
    Failed(Failure),
}

/// `on_uploaded` receives the new `model_path` (the page puts it into the
/// config); the path stays shown with a button to use it again.
#[component]
pub fn ModelUpload(on_uploaded: Callback<String>) -> impl IntoView {
    let auth = use_auth();
    let state = RwSignal::new(UploadState::Idle);
    // The request in flight, for Cancel. Browser objects are not Send, hence
    // local storage.
    let in_flight = StoredValue::new_local(None::<XmlHttpRequest>);

    let on_change = move |ev: leptos::ev::Event| {
        let Some(file) = chosen_file(&ev) else { return };
        let Some(token) = auth.current() else { return };
        spawn_local(async move {
            let result = upload(file, &token, state, in_flight).await;
            in_flight.set_value(None);
            match result {
                Ok(done) => {
                    on_uploaded.run(done.model_path.clone());
                    state.try_set(UploadState::Done(done));
                }
                Err(f) => {
                    state.try_set(UploadState::Failed(f));
                }
            }
        });
    };
    let cancel = move |_| {
        in_flight.with_value(|x| {
            if let Some(xhr) = x {
                // Ends in `onabort`, which reports the cancellation.
                let _ = xhr.abort();
            }
        })
    };
    let busy = move || {
        matches!(
            state.get(),
            UploadState::Sending { .. } | UploadState::Checking { .. }
        )
    };

    view! {
        <div class="upload" data-test="upload">
            <label>
                "Upload a model: "
                <input
                    type="file"
                    data-test="upload-file"
                    accept=".onnx,.tar,.tar.gz,.tgz,.zip,.pb,.pt,.pth"
                    on:change=on_change
                    disabled=busy
                />
            </label>
            <span class="muted">" a model file, or a folder packed as .tar, .tar.gz or .zip"</span>
            {move || match state.get() {
                UploadState::Idle => ().into_any(),
                UploadState::Sending { name, sent, total } => {
                    let pct = if total > 0.0 { (sent / total * 100.0).min(100.0) } else { 0.0 };
                    view! {
                        <div class="upload-progress">
                            <progress
                                data-test="upload-progress"
                                max="100"
                                value=format!("{pct:.1}")
                            ></progress>
                            <span>
                                {format!(
                                    " {name}: {} of {} ({pct:.0}%) ",
                                    format::bytes(sent as u64),
                                    format::bytes(total as u64)
                                )}
                            </span>
                            <button class="small" on:click=cancel>"Cancel"</button>
                        </div>
                    }
                    .into_any()
                }
                UploadState::Checking { name } => view! {
                    <div class="upload-progress">
                        <progress data-test="upload-progress" max="100" value="100"></progress>
                        <span>{format!(" {name}: sent; the server is checking it…")}</span>
                    </div>
                }
                .into_any(),
                UploadState::Done(done) => view! {
                    {uploaded_path(done, on_uploaded)}
                }
                .into_any(),
                UploadState::Failed(f) => view! { <ErrorBox failure=f/> }.into_any(),
            }}
        </div>
    }
}

fn uploaded_path(done: UploadResponse, on_use: Callback<String>) -> impl IntoView {
    let path = done.model_path.clone();
    let use_path = {
        let path = path.clone();
        move |_| on_use.run(path.clone())
    };
    view! {
        <p class="upload-done" data-test="upload-done">
            "✓ Uploaded "{format::bytes(done.bytes)}": "
            <code data-test="uploaded-path">{path.clone()}</code>" "
            <button class="small" on:click=use_path>"Use in config"</button>" "
            <CopyButton text=path/>
        </p>
    }
}

fn chosen_file(ev: &leptos::ev::Event) -> Option<File> {
    let input: HtmlInputElement = ev.target()?.dyn_into().ok()?;
    input.files()?.get(0)
}

/// Sends `file` and waits for the answer, updating `state` as bytes go out.
async fn upload(
    file: File,
    token: &str,
    state: RwSignal<UploadState>,
    in_flight: StoredValue<Option<XmlHttpRequest>, LocalStorage>,
) -> Result<UploadResponse, Failure> {
    let name = file.name();
    let total = file.size();
    let refused = |_| Failure::local("The browser refused to start the upload.");
    let xhr = XmlHttpRequest::new().map_err(refused)?;
    let url = format!("/api/v2/uploads?filename={}", api::segment(&name));
    xhr.open_with_async("POST", &url, true).map_err(refused)?;
    xhr.set_request_header("Authorization", &format!("Bearer {token}"))
        .map_err(refused)?;
    xhr.set_request_header("Content-Type", "application/octet-stream")
        .map_err(refused)?;

    state.set(UploadState::Sending {
        name: name.clone(),
        sent: 0.0,
        total,
    });
    let progress = Closure::<dyn FnMut(ProgressEvent)>::new(move |e: ProgressEvent| {
        let total = if e.length_computable() {
            e.total()
        } else {
            total
        };
        let sent = e.loaded();
        let name = name.clone();
        // Every byte sent: what remains is the server hashing and, for an
        // archive, unpacking and checking it.
        state.try_set(if sent >= total {
            UploadState::Checking { name }
        } else {
            UploadState::Sending { name, sent, total }
        });
    });
    // load resolves, error and abort reject (with their event): the
    // request's end as a promise, so no channel is needed.
    let ended = js_sys::Promise::new(&mut |resolve, reject| {
        xhr.set_onload(Some(&resolve));
        xhr.set_onerror(Some(&reject));
        xhr.set_onabort(Some(&reject));
    });
    let upload = xhr.upload().map_err(refused)?;
    upload.set_onprogress(Some(progress.as_ref().unchecked_ref()));
    in_flight.set_value(Some(xhr.clone()));
    xhr.send_with_opt_blob(Some(&file)).map_err(refused)?;

    let ending = wasm_bindgen_futures::JsFuture::from(ended).await;
    // The progress closure dies with this function: detach it first so a
    // late event cannot call into freed memory.
    upload.set_onprogress(None);
    if let Err(event) = ending {
        let kind = event.unchecked_into::<web_sys::Event>().type_();
        return Err(Failure::local(if kind == "abort" {
            "Upload cancelled."
        } else {
            "The upload failed: the connection to the server was lost."
        }));
    }
    let status = xhr.status().unwrap_or(0);
    let text = xhr.response_text().ok().flatten().unwrap_or_default();
    if (200..300).contains(&status) {
        serde_json::from_str(&text)
            .map_err(|e| Failure::local(format!("unexpected answer from the server: {e}")))
    } else {
        Err(api::failure(status, &text))
    }
}
