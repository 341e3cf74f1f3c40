//! PNG plots for the report (plotters, bitmap backend, fonts from Debian's fonts-dejavu-core).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context as _};
use plotters::prelude::*;
use plotters::style::FontStyle;

const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const SIZE: (u32, u32) = (1000, 560);

/// Registers DejaVu Sans as plotters' "sans-serif" once per process.
fn fonts() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT_PATH).map_err(|e| {
                format!("reading {FONT_PATH} ({e}): install Debian's fonts-dejavu-core (`cargo xtask setup` does)")
            })?;
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{FONT_PATH} is not a usable TrueType font"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Distinct colours for series, in order.
pub fn colour(index: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    PALETTE[index % PALETTE.len()]
}

/// One line of a line chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Axis scales of a line chart.
#[derive(Clone, Copy, Debug, Default)]
pub struct Axes {
    pub log_x: bool,
    pub log_y: bool,
}

fn bounds(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (if log { 1.0 } else { 0.0 }, 1.0);
    }
    if log {
        (lo / 1.5, hi * 1.5)
    } else {
        let lo = lo.min(0.0);
        (lo, if hi > lo { hi * 1.08 } else { lo + 1.0 })
    }
}

/// Draws a line chart with a marker on every point.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    axes: Axes,
) -> anyhow::Result<()> {
    fonts()?;
    let (x0, x1) = bounds(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.0)),
        axes.log_x,
    );
    let (y0, y1) = bounds(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
        axes.log_y,
    );
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    // The four scale combinations are four chart types in plotters.
    macro_rules! draw {
        ($x:expr, $y:expr) => {{
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 24))
                .margin(16)
                .x_label_area_size(48)
                .y_label_area_size(80)
                .build_cartesian_2d($x, $y)?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .label_style(("sans-serif", 15))
                .draw()?;
            for (i, s) in series.iter().enumerate() {
                let c = colour(i);
                chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))?
                    .label(s.name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
                chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 15))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()?;
        }};
    }
    match (axes.log_x, axes.log_y) {
        (false, false) => draw!(x0..x1, y0..y1),
        (true, false) => draw!((x0..x1).log_scale(), y0..y1),
        (false, true) => draw!(x0..x1, (y0..y1).log_scale()),
        (true, true) => draw!((x0..x1).log_scale(), (y0..y1).log_scale()),
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// One group of bars (one bar per series) under a label on the x axis.
#[derive(Clone, Debug)]
pub struct BarGroup {
    pub label: String,
    /// One value per series name; `None` leaves a gap.
    pub values: Vec<Option<f64>>,
}

/// Draws a grouped bar chart: groups along x, one coloured bar per series in each group,
/// with the value printed above each bar.
pub fn bar_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    series_names: &[&str],
    groups: &[BarGroup],
) -> anyhow::Result<()> {
    fonts()?;
    let n = groups.len().max(1);
    let per = series_names.len().max(1);
    let y_max = groups
        .iter()
        .flat_map(|g| g.values.iter().flatten().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    // Headroom above the tallest bar for its value label and the legend.
    let y_top = if y_max > 0.0 { y_max * 1.35 } else { 1.0 };
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0.0..y_top)?;
    let labels: Vec<String> = groups.iter().map(|g| g.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_label)
        .label_style(("sans-serif", 15))
        .draw()?;
    let width = 0.8 / per as f64;
    for (s, name) in series_names.iter().enumerate() {
        let c = colour(s);
        let bars = groups.iter().enumerate().filter_map(|(g, group)| {
            let v = (*group.values.get(s)?)?;
            let left = g as f64 - 0.4 + s as f64 * width;
            Some(Rectangle::new(
                [(left, 0.0), (left + width * 0.92, v)],
                c.filled(),
            ))
        });
        chart
            .draw_series(bars)?
            .label(name.to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        let texts = groups.iter().enumerate().filter_map(|(g, group)| {
            let v = (*group.values.get(s)?)?;
            let centre = g as f64 - 0.4 + (s as f64 + 0.5) * width;
            Some(Text::new(
                short_number(v),
                (centre - width * 0.3, v + y_top * 0.03),
                ("sans-serif", 13),
            ))
        });
        chart.draw_series(texts)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A number in at most four significant characters: 12.3, 456, 7.8k, 1.2M.
pub fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_numbers() {
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(4.256), "4.26");
        assert_eq!(short_number(41.26), "41.3");
        assert_eq!(short_number(456.2), "456");
        assert_eq!(short_number(7_850.0), "7.8k");
        assert_eq!(short_number(123_456.0), "123k");
        assert_eq!(short_number(2_340_000.0), "2.3M");
    }

    /// Both chart kinds render a PNG that decodes to the expected size.
    #[test]
    fn charts_render_png() {
        let dir = std::env::temp_dir().join(format!("ricochet-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let line = dir.join("line.png");
        line_chart(
            &line,
            "t",
            "x",
            "y",
            &[Series {
                name: "a".into(),
                points: vec![(10.0, 1.0), (100.0, 3.0), (1000.0, 2.0)],
            }],
            Axes {
                log_x: true,
                log_y: false,
            },
        )
        .unwrap();
        let bars = dir.join("bars.png");
        bar_chart(
            &bars,
            "t",
            "ns",
            &["floor", "ricochet"],
            &[
                BarGroup {
                    label: "new".into(),
                    values: vec![Some(40.0), Some(300.0)],
                },
                BarGroup {
                    label: "miss".into(),
                    values: vec![Some(40.0), None],
                },
            ],
        )
        .unwrap();
        for path in [line, bars] {
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
            // IHDR width and height.
            assert_eq!(
                u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
                SIZE.0
            );
            assert_eq!(
                u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
                SIZE.1
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
