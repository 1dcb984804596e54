//! Score against keep ratio, one line per strategy, as SVG (`plotters` with its SVG backend).

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// One line of the plot: a strategy's (keep ratio, score) points.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// The legend entry.
    pub(crate) name: String,
    /// (keep ratio in (0, 1], score) points, in any order.
    pub(crate) points: Vec<(f64, f64)>,
}

const WIDTH: u32 = 720;
const HEIGHT: u32 = 420;

/// The y range: from 0 (or the lowest score, if negative) to a little above the highest.
fn y_range(series: &[Series]) -> (f64, f64) {
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|y| y.is_finite());
    let (lo, hi) = ys.fold((0.0f64, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let hi = if hi > lo { hi } else { lo + 1.0 };
    (lo, hi + 0.05 * (hi - lo))
}

/// An SVG line plot of `series` (x: keep ratio from 0 to 1, y: `y_label`).
pub(crate) fn line_plot(title: &str, y_label: &str, series: &[Series]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the plot: {e}");
        root.fill(&WHITE).map_err(e)?;
        let (lo, hi) = y_range(series);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1.02f64, lo..hi)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("keep ratio")
            .y_desc(y_label)
            .draw()
            .map_err(e)?;
        for (i, s) in series.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            let mut points = s.points.clone();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(e)?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
                });
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_and_marker_set_per_series() {
        let series = vec![
            Series {
                name: "segmentwise".into(),
                points: vec![(1.0, 0.6), (0.5, 0.55), (0.1, 0.4)],
            },
            Series {
                name: "topk".into(),
                points: vec![(0.1, 0.3), (1.0, 0.6), (0.5, 0.5)],
            },
        ];
        let svg = line_plot("accuracy vs keep ratio", "accuracy", &series).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 6, "{svg}");
        assert!(
            svg.contains("\nsegmentwise\n") && svg.contains("\ntopk\n"),
            "{svg}"
        );
        assert!(svg.contains("\nkeep ratio\n"), "{svg}");
    }

    #[test]
    fn y_range_starts_at_zero_and_survives_flat_data() {
        let flat = [Series {
            name: "x".into(),
            points: vec![(1.0, 0.0)],
        }];
        let (lo, hi) = y_range(&flat);
        assert_eq!(lo, 0.0);
        assert!(hi > lo);
    }
}
