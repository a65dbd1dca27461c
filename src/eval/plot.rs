//! HR@k over the stream as an SVG line chart, one line per model and one point per slice; and
//! accuracy against diversity as a scatter, one labelled point per model.

use std::path::Path;

use plotters::prelude::*;

use super::{EvalError, Report};

/// Line colours, one per model in order (blend, short-term, long-term, the two popularity
/// baselines, compared pipelines), chosen to stay apart in print.
const COLOURS: [RGBColor; 8] = [
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(127, 127, 127),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

/// The chart as SVG text.
pub fn svg(report: &Report) -> Result<String, String> {
    let results = &report.evaluation.results;
    let slices = results.first().map_or(0, |r| r.slices.len()).max(1);
    let top = results.iter().flat_map(|r| r.slices.iter().map(|s| s.hr)).fold(0.0f64, f64::max);
    // Head room above the highest line for the legend.
    let top = if top > 0.0 { (top * 1.5).min(1.0) } else { 1.0 };
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (960, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("HR@{} over the stream: {}", report.k, report.pipeline), ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(0.5f64..(slices as f64 + 0.5), 0f64..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("slice of the scored stream (equal numbers of events)")
            .y_desc(format!("HR@{}", report.k))
            .x_labels(slices.min(20))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.2}"))
            .draw()
            .map_err(|e| e.to_string())?;
        for (index, result) in results.iter().enumerate() {
            let colour = COLOURS[index % COLOURS.len()];
            let points = result.slices.iter().enumerate().map(|(i, s)| ((i + 1) as f64, s.hr));
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(result.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(text)
}

/// HR@k against intra-list diversity, one labelled point per model (models without a list of
/// two items are left out), as SVG text.
pub fn tradeoff_svg(report: &Report) -> Result<String, String> {
    let points: Vec<(usize, &str, f64, f64)> = (report.evaluation.results.iter().enumerate())
        .filter_map(|(index, r)| Some((index, r.name.as_str(), r.overall.diversity?, r.overall.hr)))
        .collect();
    let top = points.iter().map(|p| p.3).fold(0.0f64, f64::max);
    let top = if top > 0.0 { (top * 1.2).min(1.0) } else { 1.0 };
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (960, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("HR@{} against diversity: {}", report.k, report.pipeline), ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1f64, 0f64..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("intra-list diversity (1 - mean co-occurrence cosine within a list)")
            .y_desc(format!("HR@{}", report.k))
            .x_label_formatter(&|x| format!("{x:.1}"))
            .y_label_formatter(&|y| format!("{y:.2}"))
            .draw()
            .map_err(|e| e.to_string())?;
        for (index, name, diversity, hr) in points {
            let colour = COLOURS[index % COLOURS.len()];
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((diversity, hr))
                        + Circle::new((0, 0), 5, colour.filled())
                        + Text::new(name.to_string(), (8, -6), ("sans-serif", 14)),
                ))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(text)
}

/// Writes [`svg`] to `path`.
pub fn write_svg(report: &Report, path: &Path) -> Result<(), EvalError> {
    write_chart(svg(report), path)
}

/// Writes [`tradeoff_svg`] to `path`.
pub fn write_tradeoff_svg(report: &Report, path: &Path) -> Result<(), EvalError> {
    write_chart(tradeoff_svg(report), path)
}

fn write_chart(chart: Result<String, String>, path: &Path) -> Result<(), EvalError> {
    let shown = path.display().to_string();
    let text = chart.map_err(|message| EvalError::Output { path: shown.clone(), message })?;
    std::fs::write(path, text).map_err(|e| EvalError::Output { path: shown, message: e.to_string() })
}
