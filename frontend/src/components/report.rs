//! The optimization report: a summary, the candidate table, and two inline
//! SVG charts: p50 latency per candidate and input-shape group against the
//! baseline (for ONNX, ONNX Runtime's default session), and each
//! candidate's accuracy against the original.

use leptos::prelude::*;
use shared::api::{CandidateReport, CandidateStatus, OptimizationReport};

use crate::components::CollectAny;
use crate::format;

/// The report, with downloads of itself (JSON, CSV) and, for a service,
/// of the artifact it serves (`artifact`: the API path, fetched with the
/// session's token).
#[component]
pub fn ReportView(
    report: OptimizationReport,
    #[prop(optional)] artifact: Option<(String, String)>,
) -> impl IntoView {
    let ctx = &report.context;
    let diag = &report.diagnosis;
    // One set of numbers: the selected row's, as the table and chart show.
    let h = report.headline();
    let summary = format!(
        "Selected {} — {} → {} ({} faster than {} on the first shape group), search took {:.1} s.",
        report.selected,
        format::ms(h.baseline_ms),
        format::ms(h.optimized_ms),
        format::speedup(Some(h.speedup)),
        report.baseline,
        report.total_seconds
    );
    let precision = format!("Serves {}.", report.served_precision());
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
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    let csv = report.to_csv();
    let stem = format!("report-{}", report.selected.replace(['@', '/'], "-"));
    let failure = RwSignal::new(None::<crate::api::Failure>);
    let auth = crate::auth::use_auth();
    view! {
        <p class="report-summary" data-test="report-summary">{summary}</p>
        <p data-test="report-precision">{precision}</p>
        <p class="downloads" data-test="report-downloads">
            "Download: "
            <button class="small" data-test="download-json" on:click={
                let (json, stem) = (json.clone(), stem.clone());
                move |_| { let _ = crate::api::save_file(&format!("{stem}.json"), "application/json", json.as_bytes()); }
            }>"report (JSON)"</button>" "
            <button class="small" data-test="download-csv" on:click={
                let (csv, stem) = (csv.clone(), stem.clone());
                move |_| { let _ = crate::api::save_file(&format!("{stem}.csv"), "text/csv", csv.as_bytes()); }
            }>"report (CSV)"</button>" "
            {artifact.map(|(path, file)| view! {
                <button class="small" data-test="download-artifact" on:click=move |_| {
                    let Some(token) = auth.current() else { return };
                    let (path, file) = (path.clone(), file.clone());
                    failure.set(None);
                    leptos::task::spawn_local(async move {
                        if let Err(f) = crate::api::download(&path, &token, &file).await {
                            failure.try_set(Some(f));
                        }
                    });
                }>"artifact (.tar)"</button>
            })}
        </p>
        <crate::components::ActionError failure=failure/>
        <p class="muted">{context}</p>
        {(!notes.is_empty()).then(|| view! {
            <ul class="notes">{notes.into_iter().map(|n| view! { <li>{n}</li> }).collect_any()}</ul>
        })}
        <LatencyChart candidates=report.candidates.clone() groups=groups.clone() baseline=report.baseline.clone()/>
        <AccuracyChart candidates=report.candidates.clone()/>
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

/// The agreement metrics a candidate was judged by, e.g. "top-1 100% ·
/// regions 98.5%"; "—" when it had none.
fn agreement(c: &CandidateReport) -> String {
    let parts = c.agreements();
    if parts.is_empty() {
        "—".into()
    } else {
        parts.join(" · ")
    }
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
                        .collect_any()}
                    <th class="num">"Max rel. error"</th>
                    <th class="num">"Min cosine"</th>
                    <th title="top-1, top-k, map regions and sequence readings that agree with the original's">"Agreement"</th>
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
                            .collect_any();
                        view! {
                            <tr class=format!("cand-{status}")>
                                <td title=c.description.clone()>{c.name.clone()}</td>
                                <td>{status}</td>
                                {cells}
                                <td class="num">{opt(c.max_rel_error, |x| format!("{x:.2e}"))}</td>
                                <td class="num">{opt(c.min_cosine, |x| format!("{x:.6}"))}</td>
                                <td>{agreement(&c)}</td>
                                <td class="num">{format::speedup(c.speedup)}</td>
                                <td class="num">{format::bytes(c.size_bytes)}</td>
                                <td class="num">{format!("{:.1} s", c.seconds)}</td>
                                <td class="note">{c.message.clone().unwrap_or_default()}</td>
                            </tr>
                        }
                    })
                    .collect_any()}
            </tbody>
        </table>
    }
}

// Chart geometry, in SVG user units (the SVG scales to the page width).
const WIDTH: f64 = 860.0;
/// Room right of the longest bar for its value and speedup ("15.54 ms · 0.66×").
const VALUE_W: f64 = 150.0;
/// Height of the latency chart's axis (line, ticks, their labels).
const AXIS_H: f64 = 26.0;

/// Room for the candidate names left of the bars, from the longest (at
/// about 7 units a character of the 12-unit font), so none is cut off.
fn label_width(candidates: &[CandidateReport]) -> f64 {
    let longest = candidates
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(8);
    (longest as f64 * 7.0 + 16.0).clamp(110.0, 340.0)
}

/// Round steps for an axis from 0 to `max`: 1, 2 or 5 × a power of ten,
/// about five of them.
fn ticks(max: f64) -> Vec<f64> {
    if max <= 0.0 || !max.is_finite() {
        return vec![0.0];
    }
    let raw = max / 5.0;
    let decade = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * decade);
    (0..)
        .map(|i| i as f64 * step)
        .take_while(|t| *t <= max * 1.0001)
        .collect()
}
const BAR_H: f64 = 18.0;
const ROW_H: f64 = 24.0;
const GROUP_H: f64 = 26.0;

/// One bar: a candidate's p50 on one shape group, and its p90.
struct Bar {
    y: f64,
    label: String,
    status: &'static str,
    p50: f64,
    p90: f64,
    /// Where the group's baseline line is drawn (its p50), if timed there.
    baseline_at: Option<f64>,
    /// The baseline's p50 / this p50 on the same shape group.
    vs_baseline: Option<f64>,
}

/// A group's heading and, when the baseline was timed there, where its
/// p50 falls (a dashed line across the group's bars).
struct GroupHead {
    y: f64,
    text: String,
    original: Option<f64>,
    bars_height: f64,
}

/// Horizontal bars, one block per shape group, one bar per timed candidate,
/// all on one scale so groups compare too. Colour = status; the dashed line
/// in each block is the baseline on those shapes, and each bar says
/// how much faster than it that candidate is there.
#[component]
fn LatencyChart(
    candidates: Vec<CandidateReport>,
    groups: Vec<String>,
    baseline: String,
) -> impl IntoView {
    let mut y = 0.0;
    let baseline_label = baseline.clone();
    let mut heads = Vec::new();
    let mut bars = Vec::new();
    for g in &groups {
        let timed: Vec<_> = candidates
            .iter()
            .filter_map(|c| p50_of(c, g).map(|p| (c, p)))
            .collect();
        if timed.is_empty() {
            continue;
        }
        let original = candidates
            .iter()
            .find(|c| c.name == baseline)
            .and_then(|c| p50_of(c, g));
        let head_y = y;
        y += GROUP_H;
        for (c, p50) in &timed {
            let p90 = c
                .latency
                .iter()
                .find(|l| l.shapes == *g)
                .map_or(*p50, |l| l.p90_ms.max(*p50));
            bars.push(Bar {
                y,
                label: c.name.clone(),
                status: status_text(&c.status),
                p50: *p50,
                p90,
                baseline_at: original,
                vs_baseline: original
                    .filter(|_| c.name != baseline && *p50 > 0.0)
                    .map(|o| o / p50),
            });
            y += ROW_H;
        }
        heads.push(GroupHead {
            y: head_y,
            text: format!("input shapes {g}"),
            original,
            bars_height: timed.len() as f64 * ROW_H,
        });
    }
    if bars.is_empty() {
        return view! { <p class="muted">"No candidate was timed."</p> }.into_any();
    }
    let label_w = label_width(&candidates);
    let axis_y = y + 6.0;
    let height = axis_y + AXIS_H;
    let max = bars.iter().map(|b| b.p90).fold(0.0, f64::max);
    let ticks = ticks(max);
    let top = ticks.last().copied().unwrap_or(max).max(max);
    let span = WIDTH - label_w - VALUE_W;
    let scale = if top > 0.0 { span / top } else { 0.0 };
    let axis = view! {
        <g class="chart-axis">
            <line x1=label_w.to_string() x2=(label_w + top * scale).to_string()
                y1=axis_y.to_string() y2=axis_y.to_string()></line>
            {ticks
                .iter()
                .map(|t| {
                    let x = label_w + t * scale;
                    view! {
                        <line x1=x.to_string() x2=x.to_string()
                            y1=axis_y.to_string() y2=(axis_y + 4.0).to_string()></line>
                        <text x=x.to_string() y=(axis_y + 16.0).to_string() text-anchor="middle">
                            {if *t == 0.0 { "0".to_string() } else { format::ms(*t) }}
                        </text>
                    }
                })
                .collect_any()}
        </g>
    };
    view! {
        <figure class="chart" data-test="latency-chart">
            <svg
                viewBox=format!("0 0 {WIDTH} {height}")
                width="100%"
                role="img"
                aria-label="p50 latency per candidate and input shape group, against the baseline"
            >
                {heads
                    .into_iter()
                    .map(|h| {
                        let marker = h.original.map(|o| {
                            let x = label_w + o * scale;
                            let (top, bottom) = (h.y + GROUP_H - 4.0, h.y + GROUP_H + h.bars_height);
                            view! {
                                <line
                                    class="chart-original"
                                    x1=x.to_string() x2=x.to_string()
                                    y1=top.to_string() y2=bottom.to_string()
                                ></line>
                            }
                        });
                        view! {
                            <text x="0" y=(h.y + 17.0).to_string() class="chart-group">{h.text}</text>
                            {marker}
                        }
                    })
                    .collect_any()}
                {bars
                    .into_iter()
                    .map(|b| {
                        let w = (b.p50 * scale).max(1.0);
                        let whisker = label_w + b.p90 * scale;
                        let value = match b.vs_baseline {
                            Some(r) => format!("{} · {}", format::ms(b.p50), format::speedup(Some(r))),
                            None => format::ms(b.p50),
                        };
                        // Right of the bar, its p90 and the baseline's line,
                        // so the text never crosses either.
                        let text_x = [label_w + w, whisker, b.baseline_at.map_or(0.0, |o| label_w + o * scale)]
                            .into_iter()
                            .fold(0.0, f64::max)
                            + 6.0;
                        let mid = b.y + BAR_H / 2.0;
                        view! {
                            <g class=format!("bar bar-{}", b.status)>
                                <text x=(label_w - 8.0).to_string() y=(b.y + 13.0).to_string() text-anchor="end">
                                    {b.label.clone()}
                                </text>
                                <rect x=label_w.to_string() y=b.y.to_string() width=w.to_string() height=BAR_H.to_string() rx="2"></rect>
                                <line class="chart-p90" x1=(label_w + w).to_string() x2=whisker.to_string()
                                    y1=mid.to_string() y2=mid.to_string()></line>
                                <line class="chart-p90" x1=whisker.to_string() x2=whisker.to_string()
                                    y1=(mid - 4.0).to_string() y2=(mid + 4.0).to_string()></line>
                                <text x=text_x.to_string() y=(b.y + 13.0).to_string() class="chart-value">
                                    {value}
                                </text>
                            </g>
                        }
                    })
                    .collect_any()}
                {axis}
            </svg>
            <figcaption>
                {format!("p50 latency per candidate and input shapes (the whisker reaches the p90); the dashed line is the baseline ({baseline_label}), ")}
                "× is the speedup over it on those shapes. "
                <span class="key key-selected">"selected"</span>" "
                <span class="key key-passed">"passed"</span>" "
                <span class="key key-rejected">"rejected"</span>
            </figcaption>
        </figure>
    }
    .into_any()
}

/// One accuracy figure drawn on a log scale: the smaller, the closer to the
/// original's outputs.
struct LogScale {
    /// Decades shown, as powers of ten: `lo` at the bar's start, `hi` at its end.
    lo: f64,
    hi: f64,
}

/// Differences below this are floating-point rounding in the comparison
/// itself (a cosine of identical f32 outputs computes as 1 − 2e-16), not a
/// change the candidate made: they get no bar.
const ROUNDING: f64 = 1e-12;

impl LogScale {
    /// A scale from 1e-8 (or the smallest value above rounding, if smaller)
    /// to 1: a relative error or cosine distance of 1 is total disagreement,
    /// so a bar's length says how far from it a candidate is, not only how
    /// it compares to the others. Anything above 1 is drawn full length.
    fn covering(values: impl Iterator<Item = f64>) -> LogScale {
        let smallest = values
            .filter(|v| *v > ROUNDING)
            .map(f64::log10)
            .fold(-8.0, f64::min)
            .floor();
        LogScale {
            lo: smallest,
            hi: 0.0,
        }
    }

    /// Where `v` falls along the scale (0 to 1).
    fn at(&self, v: f64) -> f64 {
        if v <= 0.0 {
            return 0.0;
        }
        ((v.log10() - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)
    }

    fn cell(&self, value: Option<f64>, label: String) -> AccuracyCell {
        match value {
            None => AccuracyCell::Missing,
            Some(v) if v <= 0.0 => AccuracyCell::Exact("exact"),
            Some(v) if v <= ROUNDING => AccuracyCell::Exact("< 1e-12 (rounding)"),
            Some(v) => AccuracyCell::Bar {
                fraction: ((v.log10() - self.lo) / (self.hi - self.lo)).clamp(0.01, 1.0),
                label,
            },
        }
    }
}

/// What one accuracy panel shows for one candidate.
enum AccuracyCell {
    /// Not measured (the candidate could not run).
    Missing,
    /// Identical to the original (the original itself), or different by
    /// rounding only; the text says which.
    Exact(&'static str),
    /// `fraction` of the panel's length, with the value's text.
    Bar { fraction: f64, label: String },
}

// Accuracy chart geometry: the candidate labels, then two panels.
const ACC_VALUE_W: f64 = 70.0;
const ACC_HEAD_H: f64 = 22.0;

/// Each candidate's accuracy against the original on the test data: the
/// largest relative error and the distance from a perfect cosine (1 − the
/// smallest cosine), both on log scales. The original itself is exact.
#[component]
fn AccuracyChart(candidates: Vec<CandidateReport>) -> impl IntoView {
    let measured: Vec<_> = candidates
        .iter()
        .filter(|c| c.max_rel_error.is_some() || c.min_cosine.is_some())
        .collect();
    if measured.is_empty() {
        return view! { <p class="muted">"No candidate was verified."</p> }.into_any();
    }
    let distance = |c: &CandidateReport| c.min_cosine.map(|x| (1.0 - x).max(0.0));
    let gate_distance = |c: &CandidateReport| c.gate_min_cosine.map(|x| (1.0 - x).max(0.0));
    let rel_scale = LogScale::covering(
        measured
            .iter()
            .flat_map(|c| [c.max_rel_error, c.gate_max_rel_error])
            .flatten(),
    );
    let cos_scale = LogScale::covering(
        measured
            .iter()
            .flat_map(|c| [distance(c), gate_distance(c)])
            .flatten(),
    );
    let label_w = label_width(&candidates);
    let panel_w = (WIDTH - label_w) / 2.0;
    let height = ACC_HEAD_H + measured.len() as f64 * ROW_H + 4.0;
    let span = panel_w - ACC_VALUE_W - 8.0;
    let any_gate = measured
        .iter()
        .any(|c| c.gate_max_rel_error.is_some() || c.gate_min_cosine.is_some());
    let rows = measured
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let y = ACC_HEAD_H + i as f64 * ROW_H;
            let status = status_text(&c.status);
            let rel = rel_scale.cell(
                c.max_rel_error,
                format!("{:.1e}", c.max_rel_error.unwrap_or_default()),
            );
            let cos = cos_scale.cell(
                distance(c),
                format!("cos {:.6}", c.min_cosine.unwrap_or_default()),
            );
            let rel_gate = c.gate_max_rel_error.map(|g| rel_scale.at(g));
            let cos_gate = gate_distance(c).map(|g| cos_scale.at(g));
            view! {
                <g class=format!("acc acc-{status}") data-candidate=c.name.clone()>
                    <text x=(label_w - 8.0).to_string() y=(y + 13.0).to_string() text-anchor="end">
                        {c.name.clone()}
                    </text>
                    {accuracy_bar(label_w, y, span, rel)}
                    {gate_mark(label_w, y, span, rel_gate)}
                    {accuracy_bar(label_w + panel_w, y, span, cos)}
                    {gate_mark(label_w + panel_w, y, span, cos_gate)}
                </g>
            }
        })
        .collect_any();
    view! {
        <figure class="chart" data-test="accuracy-chart">
            <svg
                viewBox=format!("0 0 {WIDTH} {height}")
                width="100%"
                role="img"
                aria-label="accuracy per candidate against the original model: max relative error and 1 - min cosine"
            >
                <text x=label_w.to_string() y="14" class="chart-group">
                    {format!("max relative error (1e{} … 1e{})", rel_scale.lo, rel_scale.hi)}
                </text>
                <text x=(label_w + panel_w).to_string() y="14" class="chart-group">
                    {format!("1 − min cosine (1e{} … 1e{})", cos_scale.lo, cos_scale.hi)}
                </text>
                {rows}
            </svg>
            <figcaption>
                "Accuracy against the original model on the test data, log scales: "
                "a shorter bar is closer to the original; rejected candidates failed the gate"
                {any_gate.then_some(" (the red mark on each row is its gate: a bar past it fails)")}
                "."
            </figcaption>
        </figure>
    }
    .into_any()
}

/// The gate's place on a row of a panel: a short red line at `fraction`
/// of its length.
fn gate_mark(x: f64, y: f64, span: f64, fraction: Option<f64>) -> Option<AnyView> {
    let gx = x + fraction? * span;
    Some(
        view! {
            <line class="chart-gate" x1=gx.to_string() x2=gx.to_string()
                y1=(y - 2.0).to_string() y2=(y + BAR_H + 2.0).to_string()></line>
        }
        .into_any(),
    )
}

/// One panel's bar, or the word for why there is none.
fn accuracy_bar(x: f64, y: f64, span: f64, cell: AccuracyCell) -> AnyView {
    let text_y = (y + 13.0).to_string();
    match cell {
        AccuracyCell::Missing => {
            view! { <text x=x.to_string() y=text_y class="chart-value">"not measured"</text> }
                .into_any()
        }
        AccuracyCell::Exact(text) => {
            view! { <text x=x.to_string() y=text_y class="chart-value">{text}</text> }.into_any()
        }
        AccuracyCell::Bar { fraction, label } => {
            let w = fraction * span;
            view! {
                <rect x=x.to_string() y=y.to_string() width=w.to_string() height=BAR_H.to_string() rx="2"></rect>
                <text x=(x + w + 6.0).to_string() y=text_y class="chart-value">{label}</text>
            }
            .into_any()
        }
    }
}
