//! An evaluation as text: the summary and tables printed after a replay (Markdown, so they can
//! be pasted as they are), and the CSV of every model's metrics overall and per slice.

use std::fmt::Write as _;
use std::path::Path;

use super::quality::Summary;
use super::{EvalError, Report};

fn ms(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.1} ms"))
}

/// The report as printed by `recflow eval`: what was replayed, the metrics of every model, and
/// HR@k per slice.
pub fn table(report: &Report) -> String {
    let e = &report.evaluation;
    let c = &e.counts;
    let k = report.k;
    let mut out = String::new();
    let _ = writeln!(out, "pipeline {}, input {}, k = {k}", report.pipeline, report.input);
    let _ = writeln!(
        out,
        "events: {} records read, {} rejected; {} replayed in event-time order: {} warm-up, {} skipped (item already excluded for the user), {} scored; catalogue {} items",
        report.records, report.rejected, c.accepted, c.warmup, c.skipped, c.evaluated, e.catalogue
    );
    let _ = writeln!(
        out,
        "replay: {:.1} s, {:.0} events/s for all models together; update latency (input as fast as possible): p50 {}, p90 {}, p99 {}\n",
        report.elapsed_secs,
        c.accepted as f64 / report.elapsed_secs.max(1e-9),
        ms(report.latency.p50_ms),
        ms(report.latency.p90_ms),
        ms(report.latency.p99_ms)
    );
    let _ = writeln!(out, "| model | HR@{k} | NDCG@{k} | MRR@{k} | coverage | no list | fallback | fallback hits |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &e.results {
        let s = &r.overall;
        let (fallback, fallback_hits) = if r.dataflow {
            (format!("{:.3}", s.fallback), format!("{:.3}", s.fallback_hits))
        } else {
            ("-".into(), "-".into())
        };
        let _ = writeln!(
            out,
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.3} | {fallback} | {fallback_hits} |",
            r.name, s.hr, s.ndcg, s.mrr, s.coverage, s.no_list
        );
    }
    out.push('\n');
    for r in &e.results {
        let _ = writeln!(out, "- {}: {}", r.name, r.description);
    }
    beyond_accuracy(&mut out, report);
    if e.results.first().is_some_and(|r| r.slices.len() > 1) {
        let _ = writeln!(out, "\nHR@{k} per slice of the scored stream (equal numbers of accepted events):\n");
        let _ = write!(out, "| slice | events |");
        for r in &e.results {
            let _ = write!(out, " {} |", r.name);
        }
        let _ = write!(out, " latency p50 | p99 |\n|---:|---:|");
        for _ in &e.results {
            let _ = write!(out, "---:|");
        }
        out.push_str("---:|---:|\n");
        for slice in 0..e.results[0].slices.len() {
            let _ = write!(out, "| {} | {} |", slice + 1, e.results[0].slices[slice].events);
            for r in &e.results {
                let _ = write!(out, " {:.4} |", r.slices[slice].hr);
            }
            let latency = report.slice_latency.get(slice).copied().unwrap_or_default();
            let _ = writeln!(out, " {} | {} |", ms(latency.p50_ms), ms(latency.p99_ms));
        }
    }
    out
}

/// What the lists are like beside their hits: coverage, intra-list diversity, novelty and the
/// exposure Gini of every model, with HR@k beside them for the trade-off.
fn beyond_accuracy(out: &mut String, report: &Report) {
    let k = report.k;
    let _ = writeln!(out, "\nBeyond accuracy (diversity: 1 - mean co-occurrence cosine within a list; novelty: mean -log2 popularity share, in bits; Gini of item exposures):\n");
    let _ = writeln!(out, "| model | HR@{k} | coverage | diversity | novelty | exposure Gini |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let cell = |x: Option<f64>, digits: usize| x.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"));
    for r in &report.evaluation.results {
        let s = &r.overall;
        let _ = writeln!(
            out,
            "| {} | {:.4} | {:.4} | {} | {} | {:.4} |",
            r.name,
            s.hr,
            s.coverage,
            cell(s.diversity, 4),
            cell(s.novelty, 2),
            s.gini
        );
    }
}

/// The header of the CSV.
pub const CSV_HEADER: &str =
    "model,slice,from_time,to_time,events,hits,hr,ndcg,mrr,coverage,no_list,fallback,fallback_hits,diversity,novelty,gini";

fn csv_row(out: &mut String, name: &str, slice: &str, s: &Summary, dataflow: bool, unit: u64) {
    let time = |t: Option<u64>| t.map_or_else(String::new, |t| (t / unit).to_string());
    let fallback = if dataflow { format!("{:.6},{:.6}", s.fallback, s.fallback_hits) } else { String::from(",") };
    let cell = |x: Option<f64>| x.map_or_else(String::new, |v| format!("{v:.6}"));
    let _ = writeln!(
        out,
        "{name},{slice},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{fallback},{},{},{:.6}",
        time(s.from_time),
        time(s.to_time),
        s.events,
        s.hits,
        s.hr,
        s.ndcg,
        s.mrr,
        s.coverage,
        s.no_list,
        cell(s.diversity),
        cell(s.novelty),
        s.gini
    );
}

/// The CSV text: per model one `all` row, then one row per slice (numbered from 1). Times are
/// dataflow times in the input's timestamp unit; the fallback columns are empty for the
/// baselines, diversity and novelty where no list had two items or one.
pub fn csv(report: &Report) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for r in &report.evaluation.results {
        let name = r.name.replace(',', ";");
        csv_row(&mut out, &name, "all", &r.overall, r.dataflow, report.unit);
        for (i, s) in r.slices.iter().enumerate() {
            csv_row(&mut out, &name, &(i + 1).to_string(), s, r.dataflow, report.unit);
        }
    }
    out
}

/// Update latency overall (`slice` = `all`) and per slice, in milliseconds, as CSV. Unlike
/// [`csv`] this depends on the machine and the run.
pub fn latency_csv(report: &Report) -> String {
    let mut out = String::from("slice,p50_ms,p90_ms,p99_ms\n");
    let cell = |x: Option<f64>| x.map_or_else(String::new, |v| format!("{v:.3}"));
    let rows = std::iter::once(("all".to_string(), report.latency))
        .chain(report.slice_latency.iter().enumerate().map(|(i, l)| ((i + 1).to_string(), *l)));
    for (slice, l) in rows {
        let _ = writeln!(out, "{slice},{},{},{}", cell(l.p50_ms), cell(l.p90_ms), cell(l.p99_ms));
    }
    out
}

/// Writes [`csv`] to `path`.
pub fn write_csv(report: &Report, path: &Path) -> Result<(), EvalError> {
    write(path, csv(report))
}

/// Writes [`latency_csv`] to `path`.
pub fn write_latency_csv(report: &Report, path: &Path) -> Result<(), EvalError> {
    write(path, latency_csv(report))
}

fn write(path: &Path, text: String) -> Result<(), EvalError> {
    std::fs::write(path, text)
        .map_err(|e| EvalError::Output { path: path.display().to_string(), message: e.to_string() })
}
