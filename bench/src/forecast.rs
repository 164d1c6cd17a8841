//! Backtest of the occupancy forecast: simulated weeks (the simulator's arrivals vary by hour of
//! the week, and a mass-casualty afternoon is added to the last week), the 8-hour forecast of
//! every department at every hour of event time against the occupancy 8 hours later, and the
//! same for persistence (the occupancy now), the forecast any bed manager makes without a model.
//!
//! It drives the rules stage's own state ([`ContextState`]) with the Silver records in event
//! time order, as the rules threads do; the first week is learning and is not scored.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use cds_engine::gold::micros;
use cds_engine::model::{parse_time, Event, Network, Pseudonymiser};
use cds_engine::rules::ContextState;
use cds_engine::silver::{Outcome, Silver};
use cds_engine::source::simulator::{Simulator, SimulatorConfig, Surge};
use chrono::Duration;

use crate::report::Report;

const HOUR: i64 = 3600 * 1_000_000;
/// The horizon scored.
const AHEAD: usize = 8;

/// One department at one hour: the 8-hour forecast made then, and the patients there then.
#[derive(Debug, Clone, Copy)]
struct Hourly {
    expected: f64,
    p10: f64,
    p90: f64,
    present: f64,
}

/// The scores of the backtest.
#[derive(Debug, Default)]
pub struct Scores {
    pub forecasts: usize,
    pub mae_model: f64,
    pub mae_persistence: f64,
    pub coverage: f64,
    /// The same over the 24 hours from the surge's start.
    pub surge_mae_model: f64,
    pub surge_mae_persistence: f64,
}

/// Runs `weeks` simulated weeks (at least 2) and reports the scores.
pub fn measure(
    report: &mut Report,
    network: &Network,
    weeks: i64,
    plots: Option<&Path>,
) -> anyhow::Result<Scores> {
    let weeks = weeks.max(2);
    let start = parse_time("2026-03-02T00:00:00Z").context("start")?; // a Monday
    let end = start + Duration::weeks(weeks);
    // Wednesday of the last week, 14:00-18:00: five times the arrivals.
    let surge_start = start + Duration::weeks(weeks - 1) + Duration::days(2) + Duration::hours(14);
    let config = SimulatorConfig {
        seed: 21,
        max_events: None,
        rate: None,
        dirty_rate: 0.0,
        start,
        surge: Some(Surge {
            start: surge_start,
            hours: 4.0,
            factor: 5.0,
        }),
        daytime_discharges: true,
    };
    let t = std::time::Instant::now();
    let mut sim = Simulator::new(config, network);
    let mut silver = Silver::new(network.clone());
    let mut state = ContextState::new(network.clone());
    let pseudonyms = Pseudonymiser::new(b"bench");
    let (first_hour, last_hour) = (micros(&start) / HOUR, micros(&end) / HOUR);
    let mut hour = first_hour;
    let mut by_ward: BTreeMap<(i64, String), BTreeMap<i64, Hourly>> = BTreeMap::new();
    let mut events = 0u64;
    while let Some(line) = sim.next_line() {
        events += 1;
        let Ok(event) = Event::from_json(&line) else {
            continue;
        };
        let Outcome::Record(r) = silver.clean(event) else {
            continue;
        };
        if r.quarantined() || r.kind.is_none_or(|k| k.is_cancel()) {
            continue;
        }
        let Some(patient) = r.event.patient_id.as_deref().map(|p| pseudonyms.key(p)) else {
            continue;
        };
        let at = micros(&r.event.event_timestamp);
        // Every hour boundary this record passes: each department's forecast and census then.
        while (hour + 1) * HOUR <= at && hour < last_hour {
            hour += 1;
            for ward in state.forecast_wards() {
                if let Some((horizons, _, present)) = state.forecast(&ward, hour * HOUR) {
                    if let Some(h) = horizons.iter().find(|h| h.hours as usize == AHEAD) {
                        by_ward.entry(ward).or_default().insert(
                            hour,
                            Hourly {
                                expected: h.expected,
                                p10: h.p10,
                                p90: h.p90,
                                present: present as f64,
                            },
                        );
                    }
                }
            }
        }
        if hour >= last_hour {
            break;
        }
        state.observe(patient, &r, false, false);
        // The stage drains these for its documents; the backtest reads the state directly.
        state.take_touched();
    }
    report.line(
        "forecast",
        &format!(
            "{weeks} simulated weeks (seed 21, a surge of 5x arrivals on the last Wednesday 14:00-18:00), {events} events, {} departments, simulated and replayed in {:.1} s",
            by_ward.len(),
            t.elapsed().as_secs_f64()
        ),
        "",
    );

    let scored_from = first_hour + 7 * 24;
    let surge_hour = micros(&surge_start) / HOUR;
    let (mut n, mut model, mut persistence, mut covered) = (0usize, 0.0, 0.0, 0usize);
    let (mut sn, mut smodel, mut spersistence) = (0usize, 0.0, 0.0);
    for hours in by_ward.values() {
        for (&h, f) in hours.range(scored_from..) {
            let Some(later) = hours.get(&(h + AHEAD as i64)) else {
                continue;
            };
            let actual = later.present;
            n += 1;
            model += (f.expected - actual).abs();
            persistence += (f.present - actual).abs();
            covered += usize::from(f.p10 <= actual && actual <= f.p90);
            if (surge_hour..surge_hour + 24).contains(&h) {
                sn += 1;
                smodel += (f.expected - actual).abs();
                spersistence += (f.present - actual).abs();
            }
        }
    }
    anyhow::ensure!(n > 0, "no forecast was scored");
    let scores = Scores {
        forecasts: n,
        mae_model: model / n as f64,
        mae_persistence: persistence / n as f64,
        coverage: covered as f64 / n as f64,
        surge_mae_model: smodel / sn.max(1) as f64,
        surge_mae_persistence: spersistence / sn.max(1) as f64,
    };
    let what =
        format!("8-hour forecasts scored ({n}, every department, every hour after the first week)");
    report.figure(
        "forecast",
        &format!("{what}: mean absolute error, model"),
        scores.mae_model,
        "beds",
    );
    report.figure(
        "forecast",
        &format!("{what}: mean absolute error, persistence (occupancy now)"),
        scores.mae_persistence,
        "beds",
    );
    report.figure(
        "forecast",
        "model error / persistence error",
        scores.mae_model / scores.mae_persistence,
        "",
    );
    report.figure(
        "forecast",
        "outcomes inside the p10-p90 band",
        100.0 * scores.coverage,
        "%",
    );
    report.figure(
        "forecast",
        &format!("the 24 hours from the surge ({sn} forecasts): mean absolute error, model"),
        scores.surge_mae_model,
        "beds",
    );
    report.figure(
        "forecast",
        "the 24 hours from the surge: mean absolute error, persistence",
        scores.surge_mae_persistence,
        "beds",
    );
    if let Some(dir) = plots {
        // The busiest department: the most patients on average.
        let busiest = by_ward
            .iter()
            .max_by(|a, b| {
                let mean = |h: &BTreeMap<i64, Hourly>| {
                    h.values().map(|x| x.present).sum::<f64>() / h.len().max(1) as f64
                };
                mean(a.1).total_cmp(&mean(b.1))
            })
            .map(|(w, h)| (w.clone(), h.clone()));
        if let Some(((hospital, department), hours)) = busiest {
            std::fs::create_dir_all(dir)?;
            let path = dir.join("forecast-8h.svg");
            let from = (surge_hour - 3 * 24).max(scored_from);
            let window: Vec<(i64, Hourly)> = hours
                .range(from..from + 7 * 24)
                .map(|(h, x)| (*h, *x))
                .collect();
            let title = format!(
                "hospital {hospital} {department}: occupancy and its forecast made 8 hours earlier (surge on day 3)"
            );
            std::fs::write(&path, svg(&window, &title))?;
            report.line("forecast", "plot written", &path.display().to_string());
        }
    }
    Ok(scores)
}

/// The plot: the occupancy each hour (black), the forecast made 8 hours before for that hour
/// (blue) with its p10-p90 band, and persistence (the occupancy 8 hours before, grey).
fn svg(hours: &[(i64, Hourly)], title: &str) -> String {
    const W: f64 = 720.0;
    const H: f64 = 360.0;
    const L: f64 = 50.0;
    const R: f64 = 20.0;
    const T: f64 = 40.0;
    const B: f64 = 40.0;
    let by_hour: BTreeMap<i64, Hourly> = hours.iter().copied().collect();
    // Points for hour h: what was forecast for h (at h - 8) and what happened at h.
    let points: Vec<(i64, Hourly, f64)> = hours
        .iter()
        .filter_map(|(h, now)| {
            let before = by_hour.get(&(h - AHEAD as i64))?;
            Some((*h, *before, now.present))
        })
        .collect();
    if points.len() < 2 {
        return format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}"><text x="20" y="30">not enough hours</text></svg>"#
        );
    }
    let (h0, h1) = (points[0].0 as f64, points[points.len() - 1].0 as f64);
    let ymax = points
        .iter()
        .map(|(_, f, a)| f.p90.max(*a).max(f.present))
        .fold(1.0, f64::max)
        * 1.1;
    let x = |h: i64| L + (h as f64 - h0) / (h1 - h0).max(1.0) * (W - L - R);
    let y = |v: f64| H - B - v / ymax * (H - T - B);
    let line = |f: &dyn Fn(&(i64, Hourly, f64)) -> f64| {
        points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(f(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let band: String = points
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1.p90)))
        .chain(
            points
                .iter()
                .rev()
                .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1.p10))),
        )
        .collect::<Vec<_>>()
        .join(" ");
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="13">{title}</text>
<line x1="{L}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{L}" y1="{T}" x2="{L}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">hours (one week)</text>
<text x="14" y="{}" text-anchor="middle" transform="rotate(-90 14 {})">patients</text>
<polygon points="{band}" fill="#9ecae1" fill-opacity="0.5" stroke="none"/>
<polyline points="{}" fill="none" stroke="#999" stroke-dasharray="4 3"/>
<polyline points="{}" fill="none" stroke="#08519c" stroke-width="1.5"/>
<polyline points="{}" fill="none" stroke="black" stroke-width="1.5"/>
<text x="{}" y="{}" fill="black">occupancy</text>
<text x="{}" y="{}" fill="#08519c">forecast 8 h before (p10-p90 band)</text>
<text x="{}" y="{}" fill="#777">persistence</text>
"##,
        W / 2.0,
        H - B,
        W - R,
        H - B,
        H - B,
        (L + W - R) / 2.0,
        H - 10.0,
        H / 2.0,
        H / 2.0,
        line(&|p| p.1.present),
        line(&|p| p.1.expected),
        line(&|p| p.2),
        L + 10.0,
        T + 12.0,
        L + 100.0,
        T + 12.0,
        L + 330.0,
        T + 12.0,
    );
    for k in 0..=4 {
        let v = ymax / 4.0 * f64::from(k);
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}</text>\n",
            L - 6.0,
            y(v) + 4.0,
            v
        ));
    }
    s.push_str("</svg>\n");
    s
}
