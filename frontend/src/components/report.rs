//! The optimization report: a summary, the candidate table, and a bar chart
//! of p50 latency per candidate and input-shape group (inline SVG).

use leptos::prelude::*;
use shared::api::{CandidateReport, CandidateStatus, OptimizationReport};

use crate::format;

#[component]
pub fn ReportView(report: OptimizationReport) -> impl IntoView {
    let ctx = &report.context;
    let diag = &report.diagnosis;
    let summary = format!(
        "Selected {} — {} → {} ({} on the first shape group), search took {:.1} s.",
        report.selected,
        format::ms(report.baseline_ms),
        format::ms(report.optimized_ms),
        format::speedup(Some(report.speedup)),
        report.total_seconds
    );
    let context = format!(
        "{} on {} ({} cores, {} threads), level {}, optimizer {}. Verification data: {}.",
        ctx.engine,
        ctx.cpu,
        ctx.cores,
        ctx.threads,
        ctx.level,
        report.optimizer_version,
        diag.test_data_source
    );
    let notes = diag.notes.clone();
    let groups = shape_groups(&report);
    view! {
        <p class="report-summary">{summary}</p>
        <p class="muted">{context}</p>
        {(!notes.is_empty()).then(|| view! {
            <ul class="notes">{notes.into_iter().map(|n| view! { <li>{n}</li> }).collect_view()}</ul>
        })}
        <LatencyChart candidates=report.candidates.clone() groups=groups.clone()/>
        <CandidateTable candidates=report.candidates.clone() groups=groups/>
    }
}

/// The shape groups that were timed, in the report's order.
fn shape_groups(report: &OptimizationReport) -> Vec<String> {
    let mut groups = report.diagnosis.shape_groups.clone();
    for c in &report.candidates {
        for l in &c.latency {
            if !groups.contains(&l.shapes) {
                groups.push(l.shapes.clone());
            }
        }
    }
    groups
}

fn status_text(s: &CandidateStatus) -> &'static str {
    match s {
        CandidateStatus::Selected => "selected",
        CandidateStatus::Passed => "passed",
        CandidateStatus::Rejected => "rejected",
    }
}

fn p50_of(c: &CandidateReport, group: &str) -> Option<f64> {
    c.latency
        .iter()
        .find(|l| l.shapes == group)
        .map(|l| l.p50_ms)
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map(f).unwrap_or_else(|| "—".into())
}

#[component]
fn CandidateTable(candidates: Vec<CandidateReport>, groups: Vec<String>) -> impl IntoView {
    let heads = groups.clone();
    view! {
        <table class="grid report">
            <thead>
                <tr>
                    <th>"Candidate"</th>
                    <th>"Status"</th>
                    {heads
                        .into_iter()
                        .map(|g| {
                            let label = format!("p50 {g}");
                            view! { <th class="num" title=g>{label}</th> }
                        })
                        .collect_view()}
                    <th class="num">"Max rel. error"</th>
                    <th class="num">"Min cosine"</th>
                    <th class="num">"Speedup"</th>
                    <th class="num">"Size"</th>
                    <th class="num">"Time"</th>
                    <th>"Note"</th>
                </tr>
            </thead>
            <tbody>
                {candidates
                    .into_iter()
                    .map(|c| {
                        let status = status_text(&c.status);
                        let cells = groups
                            .iter()
                            .map(|g| view! { <td class="num">{opt(p50_of(&c, g), format::ms)}</td> })
                            .collect_view();
                        view! {
                            <tr class=format!("cand-{status}")>
                                <td title=c.description.clone()>{c.name.clone()}</td>
                                <td>{status}</td>
                                {cells}
                                <td class="num">{opt(c.max_rel_error, |x| format!("{x:.2e}"))}</td>
                                <td class="num">{opt(c.min_cosine, |x| format!("{x:.6}"))}</td>
                                <td class="num">{format::speedup(c.speedup)}</td>
                                <td class="num">{format::bytes(c.size_bytes)}</td>
                                <td class="num">{format!("{:.1} s", c.seconds)}</td>
                                <td class="note">{c.message.clone().unwrap_or_default()}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
}

// Chart geometry, in SVG user units (the SVG scales to the page width).
const WIDTH: f64 = 760.0;
const LABEL_W: f64 = 210.0;
const VALUE_W: f64 = 90.0;
const BAR_H: f64 = 18.0;
const ROW_H: f64 = 24.0;
const GROUP_H: f64 = 26.0;

/// One bar: a candidate's p50 on one shape group.
struct Bar {
    y: f64,
    label: String,
    status: &'static str,
    p50: f64,
}

/// Horizontal bars, one block per shape group, one bar per timed candidate,
/// all on one scale so groups compare too. Colour = status.
#[component]
fn LatencyChart(candidates: Vec<CandidateReport>, groups: Vec<String>) -> impl IntoView {
    let mut y = 0.0;
    let mut headers = Vec::new();
    let mut bars = Vec::new();
    for g in &groups {
        let timed: Vec<_> = candidates
            .iter()
            .filter_map(|c| p50_of(c, g).map(|p| (c, p)))
            .collect();
        if timed.is_empty() {
            continue;
        }
        headers.push((y + 17.0, format!("input shapes {g}")));
        y += GROUP_H;
        for (c, p50) in timed {
            bars.push(Bar {
                y,
                label: c.name.clone(),
                status: status_text(&c.status),
                p50,
            });
            y += ROW_H;
        }
    }
    if bars.is_empty() {
        return view! { <p class="muted">"No candidate was timed."</p> }.into_any();
    }
    let height = y + 4.0;
    let max = bars.iter().map(|b| b.p50).fold(0.0, f64::max);
    let span = WIDTH - LABEL_W - VALUE_W;
    let scale = if max > 0.0 { span / max } else { 0.0 };
    view! {
        <figure class="chart">
            <svg
                viewBox=format!("0 0 {WIDTH} {height}")
                width="100%"
                role="img"
                aria-label="p50 latency per candidate and input shape group"
            >
                {headers
                    .into_iter()
                    .map(|(ty, text)| view! { <text x="0" y=ty.to_string() class="chart-group">{text}</text> })
                    .collect_view()}
                {bars
                    .into_iter()
                    .map(|b| {
                        let w = (b.p50 * scale).max(1.0);
                        view! {
                            <g class=format!("bar bar-{}", b.status)>
                                <text x=(LABEL_W - 8.0).to_string() y=(b.y + 13.0).to_string() text-anchor="end">
                                    {b.label.clone()}
                                </text>
                                <rect x=LABEL_W.to_string() y=b.y.to_string() width=w.to_string() height=BAR_H.to_string() rx="2"></rect>
                                <text x=(LABEL_W + w + 6.0).to_string() y=(b.y + 13.0).to_string() class="chart-value">
                                    {format::ms(b.p50)}
                                </text>
                            </g>
                        }
                    })
                    .collect_view()}
            </svg>
            <figcaption>
                "p50 latency per candidate; "
                <span class="key key-selected">"selected"</span>" "
                <span class="key key-passed">"passed"</span>" "
                <span class="key key-rejected">"rejected"</span>
            </figcaption>
        </figure>
    }
    .into_any()
}
