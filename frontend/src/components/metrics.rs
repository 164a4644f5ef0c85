//! A service's last hour, minute by minute, on small charts: requests and
//! errors per minute, p50 and p99 latency, the longest queue. Refreshed
//! while the page is open.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::api::MinuteStats;

use crate::api::{self, Failure};
use crate::auth::use_auth;
use crate::components::{poll_every, CollectAny, ErrorBox};
use crate::format;

const W: f64 = 860.0;
const LABEL_W: f64 = 150.0;
const VALUE_W: f64 = 150.0;
const ROW_H: f64 = 46.0;
const PLOT_H: f64 = 34.0;

#[component]
pub fn ServiceMetrics(name: String) -> impl IntoView {
    let auth = use_auth();
    let minutes = RwSignal::new(None::<Result<Vec<MinuteStats>, Failure>>);
    let path = format!("/api/v2/services/{}/metrics", api::segment(&name));
    let load = move || {
        let Some(token) = auth.current() else { return };
        let path = path.clone();
        spawn_local(async move {
            minutes.try_set(Some(api::get::<Vec<MinuteStats>>(&path, &token).await));
        });
    };
    load();
    poll_every(std::time::Duration::from_secs(10), load);
    view! {
        <div data-test="service-metrics">
            {move || match minutes.get() {
                None => view! { <p class="muted">"Loading metrics…"</p> }.into_any(),
                Some(Err(f)) => view! { <ErrorBox failure=f/> }.into_any(),
                Some(Ok(m)) => charts(&m).into_any(),
            }}
        </div>
    }
}

/// One row: a label, a plot of one or two series over the hour, and the
/// last minute's value.
struct Row {
    label: &'static str,
    class: &'static str,
    bars: bool,
    series: Vec<Vec<Option<f64>>>,
    last: String,
}

fn charts(m: &[MinuteStats]) -> impl IntoView {
    let total: u64 = m.iter().map(|x| x.requests).sum();
    let last = m.last();
    let count = |v: u64| Some(v as f64);
    let rows = vec![
        Row {
            label: "requests / min",
            class: "series-requests",
            bars: true,
            series: vec![m.iter().map(|x| count(x.requests)).collect()],
            last: last.map_or("—".into(), |x| x.requests.to_string()),
        },
        Row {
            label: "errors / min",
            class: "series-errors",
            bars: true,
            series: vec![m.iter().map(|x| count(x.errors)).collect()],
            last: last.map_or("—".into(), |x| x.errors.to_string()),
        },
        Row {
            label: "p50 · p99",
            class: "series-latency",
            bars: false,
            series: vec![
                m.iter().map(|x| x.p50_ms).collect(),
                m.iter().map(|x| x.p99_ms).collect(),
            ],
            last: last
                .and_then(|x| {
                    Some(format!(
                        "{} · {}",
                        format::ms(x.p50_ms?),
                        format::ms(x.p99_ms?)
                    ))
                })
                .unwrap_or_else(|| "—".into()),
        },
        Row {
            label: "longest queue",
            class: "series-queue",
            bars: true,
            series: vec![m.iter().map(|x| count(x.max_queue)).collect()],
            last: last.map_or("—".into(), |x| x.max_queue.to_string()),
        },
    ];
    let height = rows.len() as f64 * ROW_H + 18.0;
    let n = m.len().max(1) as f64;
    let step = (W - LABEL_W - VALUE_W) / n;
    view! {
        <figure class="chart">
            <svg viewBox=format!("0 0 {W} {height}") width="100%" role="img"
                aria-label="the last hour minute by minute: requests, errors, latency, queue">
                {rows
                    .into_iter()
                    .enumerate()
                    .map(|(i, row)| {
                        let top = i as f64 * ROW_H;
                        let base = top + PLOT_H;
                        let max = row
                            .series
                            .iter()
                            .flatten()
                            .flatten()
                            .fold(0.0, |a: f64, &b| a.max(b));
                        let scale = if max > 0.0 { PLOT_H / max } else { 0.0 };
                        let marks = row
                            .series
                            .iter()
                            .enumerate()
                            .map(|(k, s)| {
                                if row.bars {
                                    s.iter()
                                        .enumerate()
                                        .filter_map(|(j, v)| {
                                            let v = (*v)?;
                                            let h = (v * scale).max(if v > 0.0 { 1.0 } else { 0.0 });
                                            Some(view! {
                                                <rect x=(LABEL_W + j as f64 * step).to_string() y=(base - h).to_string()
                                                    width=(step * 0.8).to_string() height=h.to_string()></rect>
                                            })
                                        })
                                        .collect_any()
                                        .into_any()
                                } else {
                                    let points = s
                                        .iter()
                                        .enumerate()
                                        .filter_map(|(j, v)| {
                                            Some(format!("{:.1},{:.1}", LABEL_W + (j as f64 + 0.4) * step, base - (*v)? * scale))
                                        })
                                        .collect::<Vec<_>>()
                                        .join(" ");
                                    view! {
                                        <polyline class=format!("line-{k}") points=points></polyline>
                                    }
                                    .into_any()
                                }
                            })
                            .collect_any();
                        let max_text = if row.class == "series-latency" {
                            if max > 0.0 { format::ms(max) } else { "—".into() }
                        } else {
                            format!("{max:.0}")
                        };
                        view! {
                            <g class=format!("series {}", row.class)>
                                <text x=(LABEL_W - 8.0).to_string() y=(top + 20.0).to_string() text-anchor="end">{row.label}</text>
                                <line class="baseline" x1=LABEL_W.to_string() x2=(W - VALUE_W).to_string()
                                    y1=base.to_string() y2=base.to_string()></line>
                                {marks}
                                <text x=(W - VALUE_W + 8.0).to_string() y=(top + 14.0).to_string() class="chart-value">
                                    {format!("now {}", row.last)}
                                </text>
                                <text x=(W - VALUE_W + 8.0).to_string() y=(top + 30.0).to_string() class="chart-value">
                                    {format!("max {max_text}")}
                                </text>
                            </g>
                        }
                    })
                    .collect_any()}
                <text x=LABEL_W.to_string() y=(height - 4.0).to_string() class="chart-value">"60 min ago"</text>
                <text x=(W - VALUE_W).to_string() y=(height - 4.0).to_string() class="chart-value" text-anchor="end">"now"</text>
            </svg>
            <figcaption>
                {format!("The last hour on this server, minute by minute: {total} requests. ")}
                "Latency is of the requests answered well; the queue is the longest a request found."
            </figcaption>
        </figure>
    }
}
