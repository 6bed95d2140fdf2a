//! `pareto.svg`: every real evaluation (grey), the non-dominated ones (red) and the base model (blue
//! triangle), accuracy against the first cost objective (latency if searched, else size); plotters, SVG backend.

use std::path::Path;

use anyhow::{Result, anyhow};
use device_runtime::arch::SubnetConfig;
use plotters::prelude::*;

use super::linas::{Evaluation, Objective};

fn axes(e: &Evaluation, objectives: &[Objective]) -> (f64, f64) {
    let cost = if objectives.contains(&Objective::Latency) {
        e.latency_ms.unwrap_or(0.0)
    } else {
        e.size_bytes.unwrap_or(0) as f64 / 1048576.0
    };
    let y = if objectives.contains(&Objective::Accuracy) {
        e.accuracy.unwrap_or(0.0) * 100.0
    } else {
        e.size_bytes.unwrap_or(0) as f64 / 1048576.0
    };
    (cost, y)
}

/// Write the plot to `path` (temporary file + rename).
pub fn pareto_svg(path: &Path, evals: &[Evaluation], front: &[usize], objectives: &[Objective], base: &SubnetConfig) -> Result<()> {
    let x_label = if objectives.contains(&Objective::Latency) { "decode latency (ms/token)" } else { "GGUF size (MiB)" };
    let y_label = if objectives.contains(&Objective::Accuracy) { "accuracy (%)" } else { "GGUF size (MiB)" };
    let pts: Vec<(f64, f64)> = evals.iter().map(|e| axes(e, objectives)).collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in &pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if pts.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let (dx, dy) = (((x1 - x0) * 0.05).max(1e-3), ((y1 - y0) * 0.05).max(1e-3));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 560)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Search: all evaluations and the Pareto front", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((x0 - dx)..(x1 + dx), (y0 - dy)..(y1 + dy))
            .map_err(|e| err(&e))?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw().map_err(|e| err(&e))?;
        let grey = RGBColor(150, 150, 150);
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, grey.filled())))
            .map_err(|e| err(&e))?
            .label("evaluated")
            .legend(move |(x, y)| Circle::new((x, y), 3, grey.filled()));
        let mut fp: Vec<(f64, f64)> = front.iter().map(|&i| pts[i]).collect();
        fp.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(fp.iter().map(|&p| Circle::new(p, 5, RED.filled())))
            .map_err(|e| err(&e))?
            .label("Pareto front")
            .legend(|(x, y)| Circle::new((x, y), 5, RED.filled()));
        if let Some(i) = evals.iter().position(|e| e.config == *base) {
            chart
                .draw_series(std::iter::once(TriangleMarker::new(pts[i], 9, BLUE.filled())))
                .map_err(|e| err(&e))?
                .label("base model")
                .legend(|(x, y)| TriangleMarker::new((x, y), 7, BLUE.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    super::run::write_atomic(path, svg.as_bytes())
}
