//! SVG bar charts of the results (plotters, no system fonts needed).

use anyhow::Result;
use plotters::prelude::*;
use std::path::Path;

/// A horizontal bar chart: one bar per (label, value).
pub fn bars(path: &Path, title: &str, unit: &str, rows: &[(String, f64)]) -> Result<()> {
    let height = 90 + 34 * rows.len() as u32;
    let root = SVGBackend::new(path, (980, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = rows.iter().map(|r| r.1).fold(0.0f64, f64::max).max(1e-9) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(420)
        .build_cartesian_2d(0.0..max, (0..rows.len()).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(unit)
        .y_labels(rows.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => rows.get(*i).map(|r| r.0.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    chart.draw_series(rows.iter().enumerate().map(|(i, (label, v))| {
        let color = if label.starts_with("Converge Ledger") {
            RGBColor(33, 102, 172)
        } else {
            RGBColor(150, 150, 150)
        };
        Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (*v, SegmentValue::Exact(i + 1)),
            ],
            color.filled(),
        )
    }))?;
    chart.draw_series(rows.iter().enumerate().map(|(i, (_, v))| {
        Text::new(
            format!(" {v:.3}"),
            (*v, SegmentValue::CenterOf(i)),
            ("sans-serif", 14),
        )
    }))?;
    root.present()?;
    Ok(())
}
