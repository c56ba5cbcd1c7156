//! SVG plots: a bench's accuracy per method with error bars and its learning curves, and
//! `eval`'s confusion-matrix heatmap.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::experiment::sanitize;
use crate::report::{Record, summarize};

const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Writes `accuracy-DATASET.svg` and `curves-DATASET.svg` for every dataset of the records.
pub fn write_plots(out: &Path, records: &[Record]) -> Result<()> {
    for (dataset, rows) in summarize(records) {
        let file = out.join(format!("accuracy-{}.svg", sanitize(&dataset)));
        atomically(&file, |tmp| accuracy_plot(tmp, &dataset, &rows)).with_context(|| format!("drawing {}", file.display()))?;
        let file = out.join(format!("curves-{}.svg", sanitize(&dataset)));
        let of_dataset: Vec<&Record> = records.iter().filter(|r| r.dataset == dataset).collect();
        atomically(&file, |tmp| curves_plot(tmp, &dataset, &of_dataset)).with_context(|| format!("drawing {}", file.display()))?;
    }
    Ok(())
}

/// Draws `file` through its temporary file (plotters writes the SVG where it is told), then
/// renames it into place: a plot is replaced whole or not at all.
fn atomically(file: &Path, draw: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    kd::core::atomic::remove_stale_temps(file);
    let tmp = kd::core::atomic::temp_path(file);
    let drawn = draw(&tmp).and_then(|()| {
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, file)?;
        Ok(())
    });
    if drawn.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    drawn
}

/// Each method's test accuracy at the epoch the validation split selected (the tables' first
/// column), mean ± std over seeds, with CE's mean drawn as a dashed reference line (one per
/// student architecture), so that the methods that beat the student alone stand out.
fn accuracy_plot(file: &Path, dataset: &str, rows: &[crate::report::Row]) -> Result<()> {
    let root = SVGBackend::new(file, (900, 120 + 28 * rows.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let spread = |r: &crate::report::Row| [r.selected.0 - r.selected.1, r.selected.0 + r.selected.1];
    let lo = rows.iter().flat_map(spread).filter(|v| v.is_finite()).fold(f64::INFINITY, f64::min);
    let hi = rows.iter().flat_map(spread).filter(|v| v.is_finite()).fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 100.0) };
    let pad = ((hi - lo) * 0.1).max(0.5);
    let n = rows.len() as i32;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{dataset}: test accuracy at the validation-selected epoch (mean ± std over seeds)"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(170)
        .build_cartesian_2d((lo - pad)..(hi + pad), 0..n)?;
    let labels: Vec<String> = rows.iter().map(|r| format!("{} ({})", r.method, r.model)).collect();
    chart
        .configure_mesh()
        .y_labels(rows.len())
        .y_label_formatter(&|i| labels.get(*i as usize).cloned().unwrap_or_default())
        .x_desc("accuracy (%); dashed: CE's mean, the student alone")
        .draw()?;
    for ce in rows.iter().filter(|r| r.method == kd::baselines::ce::NAME && r.selected.0.is_finite()) {
        chart.draw_series(std::iter::once(DashedPathElement::new(
            vec![(ce.selected.0, 0), (ce.selected.0, n)],
            6,
            4,
            BLACK.stroke_width(1),
        )))?;
    }
    for (i, r) in rows.iter().enumerate().filter(|(_, r)| r.selected.0.is_finite()) {
        let y = i as i32;
        let colour = if r.method == "teacher" { BLACK } else { PALETTE[i % PALETTE.len()] };
        let (mean, std) = r.selected;
        chart.draw_series(std::iter::once(Circle::new((mean, y), 5, colour.filled())))?;
        chart.draw_series(std::iter::once(PathElement::new(vec![(mean - std, y), (mean + std, y)], colour.stroke_width(2))))?;
    }
    root.present()?;
    Ok(())
}

/// The line of the `i`-th curve: ten colours, then the same colours dashed, then finely dashed,
/// so that curves stay distinct past ten methods.
fn line_style(i: usize) -> (RGBColor, Option<(u32, u32)>) {
    let dash = match (i / PALETTE.len()) % 3 {
        0 => None,
        1 => Some((10, 6)),
        _ => Some((3, 4)),
    };
    (PALETTE[i % PALETTE.len()], dash)
}

fn curves_plot(file: &Path, dataset: &str, records: &[&Record]) -> Result<()> {
    // One curve per method and student: its run of the lowest seed.
    let on_validation = crate::report::curves_on_validation(records.iter().copied());
    let curve = |r: &Record| r.learning_curve(on_validation).to_vec();
    let mut shown: Vec<&Record> = Vec::new();
    for r in records.iter().filter(|r| !r.learning_curve(on_validation).is_empty()) {
        match shown.iter_mut().find(|s| s.method == r.method && s.student == r.student) {
            Some(s) if r.seed < s.seed => *s = r,
            Some(_) => {}
            None => shown.push(r),
        }
    }
    let mut seeds: Vec<u64> = shown.iter().map(|r| r.seed).collect();
    seeds.sort();
    seeds.dedup();
    let which = match seeds.as_slice() {
        [one] => format!("seed {one}"),
        _ => "the lowest seed of each method".to_string(),
    };
    let root = SVGBackend::new(file, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let epochs = shown.iter().map(|r| curve(r).len()).max().unwrap_or(1).max(2);
    let lo = shown.iter().flat_map(|r| curve(r)).fold(f64::INFINITY, f64::min);
    let hi = shown.iter().flat_map(|r| curve(r)).fold(f64::NEG_INFINITY, f64::max);
    let split = if on_validation { "validation" } else { "test" };
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 100.0) };
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{dataset}: {split} accuracy per epoch ({which})"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(1..epochs, (lo - 1.0)..(hi + 1.0))?;
    chart.configure_mesh().x_desc("epoch").y_desc("accuracy (%)").draw()?;
    for (i, r) in shown.iter().enumerate() {
        let key = format!("{} ({})", r.method, r.student);
        let (colour, dash) = if r.method == "teacher" { (BLACK, None) } else { line_style(i) };
        let style = colour.stroke_width(2);
        let points: Vec<(usize, f64)> = curve(r).into_iter().enumerate().map(|(e, a)| (e + 1, a)).collect();
        let series = match dash {
            None => chart.draw_series(LineSeries::new(points, style))?,
            Some((size, gap)) => chart.draw_series(DashedLineSeries::new(points, size, gap, style))?,
        };
        series.label(key).legend(move |(x, y)| match dash {
            None => PathElement::new(vec![(x, y), (x + 24, y)], style).into_dyn(),
            Some((size, gap)) => DashedPathElement::new(vec![(x, y), (x + 24, y)], size, gap, style).into_dyn(),
        });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// A confusion matrix (`confusion[true][predicted]`) as a heatmap, each row shaded by the
/// fraction of its class; the axes name the classes by `class_name`.
pub fn confusion_heatmap(path: &Path, title: &str, confusion: &[Vec<usize>], class_name: &dyn Fn(usize) -> String) -> Result<()> {
    atomically(path, |tmp| draw_confusion(tmp, title, confusion, class_name))
}

fn draw_confusion(path: &Path, title: &str, confusion: &[Vec<usize>], class_name: &dyn Fn(usize) -> String) -> Result<()> {
    let k = confusion.len();
    let cell = (600 / k.max(1)).clamp(4, 48) as u32;
    let side = cell * k as u32;
    let root = SVGBackend::new(path, (side + 120, side + 110)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0..k as i32, k as i32..0)?;
    let labels = k.min(20);
    let name = |v: &i32| class_name(*v as usize);
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(labels)
        .y_labels(labels)
        .x_label_formatter(&name)
        .y_label_formatter(&name)
        .x_desc("predicted")
        .y_desc("true")
        .draw()?;
    for (t, row) in confusion.iter().enumerate() {
        let total: usize = row.iter().sum();
        chart.draw_series(row.iter().enumerate().map(|(p, &count)| {
            let share = if total == 0 { 0.0 } else { count as f64 / total as f64 };
            let shade = |full: f64| (255.0 - share * (255.0 - full)).round() as u8;
            let colour = RGBColor(shade(8.0), shade(48.0), shade(107.0));
            Rectangle::new([(p as i32, t as i32), (p as i32 + 1, t as i32 + 1)], colour.filled())
        }))?;
    }
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
