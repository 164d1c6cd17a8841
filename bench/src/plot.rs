//! The latency-versus-load plot, a small hand-written SVG (no plotting dependency): offered
//! load on a log x axis, latency on a log y axis, one line per percentile.

use crate::latency::LoadResult;

const W: f64 = 640.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 130.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

fn log_scale(v: f64, lo: f64, hi: f64, a: f64, b: f64) -> f64 {
    let t = (v.max(lo).ln() - lo.ln()) / (hi.ln() - lo.ln()).max(1e-9);
    a + t * (b - a)
}

/// One line of the plot: its name, colour and the percentile it draws.
type Series = (&'static str, &'static str, fn(&LoadResult) -> u64);

/// The SVG of the latency percentiles (microseconds) against offered load; `span` names what
/// the latency runs from and to (the y axis).
pub fn latency_svg(results: &[LoadResult], title: &str, span: &str) -> String {
    let xs: Vec<f64> = results.iter().map(|r| r.rate as f64).collect();
    let (xlo, xhi) = (
        xs.iter().copied().fold(f64::MAX, f64::min) / 1.5,
        xs.iter().copied().fold(0.0, f64::max) * 1.5,
    );
    let all_ms: Vec<f64> = results
        .iter()
        .flat_map(|r| [r.p50, r.p99, r.p999, r.max])
        .map(|us| us as f64 / 1000.0)
        .collect();
    let ylo = 10f64.powf(
        all_ms
            .iter()
            .copied()
            .fold(f64::MAX, f64::min)
            .log10()
            .floor(),
    );
    let yhi = 10f64.powf(all_ms.iter().copied().fold(0.0, f64::max).log10().ceil());
    let x = |v: f64| log_scale(v, xlo, xhi, LEFT, W - RIGHT);
    let y = |v: f64| log_scale(v, ylo, yhi, H - BOTTOM, TOP);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="14">{title}</text>
<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">offered load (events/s, log scale)</text>
<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">latency {span} (ms, log scale)</text>
"##,
        (LEFT + W - RIGHT) / 2.0,
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM,
        (LEFT + W - RIGHT) / 2.0,
        H - 12.0,
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0,
    );
    let mut decade = ylo;
    while decade <= yhi * 1.0001 {
        let yy = y(decade);
        s.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            decade
        ));
        decade *= 10.0;
    }
    for &v in &xs {
        let xx = x(v);
        s.push_str(&format!(
            "<line x1=\"{xx:.1}\" y1=\"{}\" x2=\"{xx:.1}\" y2=\"{}\" stroke=\"black\"/><text x=\"{xx:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            H - BOTTOM,
            H - BOTTOM + 5.0,
            H - BOTTOM + 18.0,
            v
        ));
    }
    let series: [Series; 4] = [
        ("p50", "#1f77b4", |r| r.p50),
        ("p99", "#ff7f0e", |r| r.p99),
        ("p99.9", "#2ca02c", |r| r.p999),
        ("max", "#d62728", |r| r.max),
    ];
    for (i, (name, color, f)) in series.iter().enumerate() {
        let points: Vec<(f64, f64)> = results
            .iter()
            .map(|r| (x(r.rate as f64), y(f(r) as f64 / 1000.0)))
            .collect();
        let path = points
            .iter()
            .map(|(a, b)| format!("{a:.1},{b:.1}"))
            .collect::<Vec<_>>()
            .join(" ");
        s.push_str(&format!(
            "<polyline points=\"{path}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>\n"
        ));
        for (a, b) in &points {
            s.push_str(&format!(
                "<circle cx=\"{a:.1}\" cy=\"{b:.1}\" r=\"3\" fill=\"{color}\"/>\n"
            ));
        }
        let ly = TOP + 10.0 + 20.0 * i as f64;
        s.push_str(&format!(
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{name}</text>\n",
            W - RIGHT + 15.0,
            W - RIGHT + 40.0,
            W - RIGHT + 46.0,
            ly + 4.0
        ));
    }
    s.push_str("</svg>\n");
    s
}
