//! `latest.svg`: echo throughput (msg/s), churn (conn/s), and latency p50
//! and p99 per scenario, each as bars of pier next to the baseline. Churn
//! (and the TLS handshakes) get their own panel because their rate is an order of magnitude below
//! echo's; latency is on a log scale because churn's tail and echo's median
//! are orders of magnitude apart. Drawn with plotters' SVG backend only: no
//! fonts or image libraries to install.

use crate::report::{Kind, Measured, ScenarioResult};
use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const PIER: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const PIER_LIGHT: RGBColor = RGBColor(0x9e, 0xc9, 0xe9);
const BASE: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const BASE_LIGHT: RGBColor = RGBColor(0xff, 0xc8, 0x96);

/// One coloured series of bars (e.g. "pier p50").
struct Series {
    name: &'static str,
    color: RGBColor,
}

/// One group of bars on the x axis: a scenario, one value per series.
struct Group {
    name: String,
    values: Vec<Option<f64>>,
}

/// How a panel's y axis and bar labels read.
#[derive(Clone, Copy)]
enum Scale {
    /// Linear, labels in thousands.
    Thousands,
    /// Log10, labels as plain numbers.
    Log,
}

/// The SVG document for `results`.
pub fn svg(results: &[ScenarioResult], title: &str) -> Result<String> {
    let ok = |o: &Result<Measured, String>| o.as_ref().ok().cloned();
    let rate = |m: Option<Measured>| match m {
        Some(Measured::Echo(s)) => Some(s.msgs_per_sec),
        Some(Measured::Churn(s)) => Some(s.conns_per_sec),
        _ => None,
    };
    let lat = |m: Option<Measured>| match m {
        Some(Measured::Echo(s)) => Some(s.latency),
        Some(Measured::Churn(s)) => Some(s.latency),
        _ => None,
    };
    let rate_groups = |kinds: &[Kind]| -> Vec<Group> {
        results
            .iter()
            .filter(|r| kinds.contains(&r.kind))
            .map(|r| Group { name: r.short.clone(), values: vec![rate(ok(&r.pier)), rate(ok(&r.native))] })
            .collect()
    };
    let latency_groups: Vec<Group> = results
        .iter()
        .filter(|r| r.kind != Kind::Idle)
        .map(|r| {
            let (p, n) = (lat(ok(&r.pier)), lat(ok(&r.native)));
            Group {
                name: r.short.clone(),
                values: vec![p.map(|l| l.p50_us), n.map(|l| l.p50_us), p.map(|l| l.p99_us), n.map(|l| l.p99_us)],
            }
        })
        .collect();
    let two = [Series { name: "pier + echo guest", color: PIER }, Series { name: "native tokio", color: BASE }];
    let four = [
        Series { name: "pier p50", color: PIER },
        Series { name: "native p50", color: BASE },
        Series { name: "pier p99", color: PIER_LIGHT },
        Series { name: "native p99", color: BASE_LIGHT },
    ];

    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1800, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
        let (left, rest) = root.split_horizontally(620);
        let (middle, right) = rest.split_horizontally(420);
        panel(
            &left,
            "echo throughput, higher is better",
            "messages/s",
            &two,
            &rate_groups(&[Kind::Echo]),
            Scale::Thousands,
        )?;
        panel(
            &middle,
            "churn and TLS handshakes, higher is better",
            "connections/s",
            &two,
            &rate_groups(&[Kind::Churn, Kind::Handshake]),
            Scale::Thousands,
        )?;
        panel(
            &right,
            "latency, lower is better",
            "µs, log scale (echo: round trip; churn, handshake: connect to close)",
            &four,
            &latency_groups,
            Scale::Log,
        )?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

/// Grouped bars: one group per scenario, one bar per series, value on top.
/// A log panel plots log10 of the values on a linear axis, which keeps one
/// coordinate type for both kinds of panel.
fn panel(
    area: &DrawingArea<SVGBackend, Shift>,
    caption: &str,
    y_desc: &str,
    series: &[Series],
    groups: &[Group],
    scale: Scale,
) -> Result<()> {
    let y = |v: f64| match scale {
        Scale::Thousands => v,
        Scale::Log => v.max(1.0).log10(),
    };
    let values = || groups.iter().flat_map(|g| g.values.iter().flatten().copied());
    let (y0, y1) = match scale {
        Scale::Thousands => (0.0, values().fold(1.0, f64::max) * 1.15),
        Scale::Log => {
            let lo = values().map(y).fold(f64::MAX, f64::min);
            let hi = values().map(y).fold(0.0, f64::max);
            if lo > hi { (0.0, 1.0) } else { ((lo - 0.5).floor().max(0.0), hi + 0.4) }
        }
    };
    let n = groups.len().max(1);
    let names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(62)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), y0..y1)
        .map_err(err)?;
    let y_label = move |v: &f64| match scale {
        Scale::Thousands => format!("{:.0}k", v / 1e3),
        // Only the powers of ten: 10, 100, 1000 ...
        Scale::Log if (v - v.round()).abs() < 1e-9 => format!("{:.0}", 10f64.powf(*v)),
        Scale::Log => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_labels(12)
        .y_label_formatter(&y_label)
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    let width = 0.8 / series.len() as f64;
    let label_font = ("sans-serif", if series.len() > 2 { 11 } else { 13 });
    for (k, s) in series.iter().enumerate() {
        let bars: Vec<(f64, f64)> = groups
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.values.get(k).copied().flatten().map(|v| (i as f64 - 0.4 + k as f64 * width, v)))
            .collect();
        let color = s.color;
        chart
            .draw_series(bars.iter().map(|&(x, v)| Rectangle::new([(x, y0), (x + width, y(v))], color.filled())))
            .map_err(err)?
            .label(s.name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled()));
        chart
            .draw_series(bars.iter().map(|&(x, v)| {
                let text = match scale {
                    Scale::Thousands => format!("{:.1}k", v / 1e3),
                    Scale::Log => format!("{v:.0}"),
                };
                Text::new(
                    text,
                    (x + width / 2.0, y(v)),
                    label_font.into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the plot: {e}")
}
