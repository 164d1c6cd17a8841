//! Occupancy forecasts per department: how many beds will be taken in 4, 8 and 24 hours.
//!
//! Why here: the rules stage already follows every placement in event-time order (the same in
//! every rules thread and every process of a cluster), so it can learn, online and by event
//! time, how long patients stay in each department and when new ones arrive, and answer for
//! any department at any moment without reading history again.
//!
//! The model, per department:
//! - **who stays**: each patient there now is still there after `h` more hours with the
//!   probability that a stay lasts past `stayed + h` given it lasted past `stayed`, from the
//!   durations of the department's completed stays (a stay ends with a transfer out or a
//!   discharge), at the resolution of an hour: `S(stayed + h) / S(stayed)` where `S(x)` is the
//!   share of completed stays longer than `x`; a patient who has stayed longer than any
//!   completed stay is counted as staying. Stays end
//!   more at some hours than others (discharges on day rounds): the departures the durations
//!   predict over the horizon are scaled by how many departures the department has had in
//!   those hours of the week against an average stretch of as many hours.
//! - **who comes**: arrivals (admissions and transfers in) per hour of the week, counted since
//!   the first event and divided by the number of times that hour of the week has passed (an
//!   hour not seen yet takes the department's mean hourly rate); an arrival in the `j`-th hour
//!   of the horizon is still there at its end with probability `S(h - j - 1)`.
//! - the count at the horizon is then a sum of independent Bernoulli stays plus a Poisson number
//!   of remaining arrivals: `expected = Σ p + A`, variance `Σ p (1 - p) + A`; `p10`, `p90` and
//!   the probability of more patients than beds come from the normal approximation (with a
//!   half-bed continuity correction).
//!
//! A department has no forecast while it learns: until it has [`MIN_STAYS`] completed stays of
//! its own and [`MIN_HOURS`] hours of event time have been seen (a model of another department's
//! stays, or of a few hours, raised false alarms in a test stream; no forecast is better than a
//! wrong one).
//!
//! Everything is a function of the records in event-time order, so a restart from a checkpoint
//! gives the forecasts of an uninterrupted run.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// The horizons forecast, in hours.
pub const HORIZONS: [u32; 3] = [4, 8, 24];

/// Completed stays a department needs before it is forecast.
pub const MIN_STAYS: u32 = 30;

/// Hours of event time seen before any department is forecast.
pub const MIN_HOURS: i64 = 8;

/// Stays longer than this many hours are counted as this long.
const MAX_HOURS: usize = 60 * 24;

const HOUR: i64 = 3600 * 1_000_000;
const WEEK_HOURS: i64 = 7 * 24;

/// Durations of completed stays, by whole hours.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stays {
    /// `counts[k]`: stays that lasted at least `k` and less than `k + 1` hours (the last bucket
    /// holds every longer stay).
    counts: Vec<u32>,
    total: u32,
}

impl Stays {
    /// Counts a completed stay of `micros`.
    pub fn add(&mut self, micros: i64) {
        let hours = usize::try_from(micros.max(0) / HOUR)
            .unwrap_or(MAX_HOURS)
            .min(MAX_HOURS);
        if self.counts.len() <= hours {
            self.counts.resize(hours + 1, 0);
        }
        self.counts[hours] += 1;
        self.total += 1;
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    /// Completed stays longer than `hours`, at an hour's resolution: those of a later bucket
    /// (at least `⌊hours⌋ + 1` hours long).
    fn longer_than(&self, hours: f64) -> u32 {
        let bucket = hours.max(0.0).floor() as usize;
        self.counts.iter().skip(bucket + 1).sum()
    }

    /// `S(hours)`: the share of completed stays longer than `hours`.
    pub fn survival(&self, hours: f64) -> f64 {
        if self.total == 0 {
            return 1.0;
        }
        f64::from(self.longer_than(hours)) / f64::from(self.total)
    }

    /// The probability that a stay that has lasted `stayed` hours lasts `more` hours more;
    /// 1 when no completed stay was that long (nothing is known about it).
    pub fn still_there(&self, stayed: f64, more: f64) -> f64 {
        let now = self.longer_than(stayed);
        if now == 0 {
            return 1.0;
        }
        f64::from(self.longer_than(stayed + more)) / f64::from(now)
    }
}

/// What is learned and known of one department.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Ward {
    stays: Stays,
    /// Arrivals by hour of the week (168 entries; 0 = Monday 00:00-01:00 UTC).
    arrivals: Vec<u32>,
    /// Departures (transfers out, discharges) by hour of the week.
    departures: Vec<u32>,
    /// Patients there now: patient key -> when their stay here began (event time, µs).
    present: BTreeMap<u64, i64>,
}

/// One horizon of a forecast.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Horizon {
    pub hours: u32,
    pub expected: f64,
    pub p10: f64,
    pub p90: f64,
    pub p_over_capacity: f64,
}

/// The forecasts of every department, learned from the placements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Forecaster {
    wards: HashMap<(i64, String), Ward>,
    /// The event-time span seen so far (µs), for arrival rates.
    first: Option<i64>,
    last: i64,
}

/// Hour of the week (0 = Monday 00:00 UTC) of an event time in µs.
fn hour_of_week(micros: i64) -> usize {
    // 1970-01-01 was a Thursday: 3 days after a Monday.
    ((micros.div_euclid(HOUR) + 3 * 24).rem_euclid(WEEK_HOURS)) as usize
}

impl Forecaster {
    /// Moves the clock of the arrival rates (every record's event time). The start is the
    /// first record's time and never moves back: one record dated years earlier must not make
    /// every hour of the week look as if it had passed a hundred times without arrivals.
    pub fn saw(&mut self, at: i64) {
        let first = *self.first.get_or_insert(at);
        self.last = self.last.max(at).max(first);
    }

    /// A patient was placed in a department, their stay there beginning at `at`. A stay that
    /// began before the first event seen (a patient admitted before the feed started) is not
    /// counted as an arrival: its hour was not watched.
    pub fn entered(&mut self, ward: (i64, String), patient: u64, at: i64) {
        let watched = self.first.is_some_and(|f| at >= f);
        let w = self.wards.entry(ward).or_default();
        if w.arrivals.len() != WEEK_HOURS as usize {
            w.arrivals.resize(WEEK_HOURS as usize, 0);
        }
        if watched {
            w.arrivals[hour_of_week(at)] += 1;
        }
        w.present.insert(patient, at);
    }

    /// A patient left a department at `at` (transfer out or discharge): their stay is complete.
    pub fn left(&mut self, ward: &(i64, String), patient: u64, at: i64) {
        let Some(w) = self.wards.get_mut(ward) else {
            return;
        };
        if let Some(since) = w.present.remove(&patient) {
            w.stays.add(at - since);
            if w.departures.len() != WEEK_HOURS as usize {
                w.departures.resize(WEEK_HOURS as usize, 0);
            }
            w.departures[hour_of_week(at)] += 1;
        }
    }

    /// Whole hours of event time seen: the hours from the first record's hour up to (not
    /// including) the newest record's, each passed in full.
    fn hours_seen(&self) -> i64 {
        self.first
            .map_or(0, |f| self.last.div_euclid(HOUR) - f.div_euclid(HOUR))
    }

    /// How many times hour of the week `k` has passed in the hours seen.
    fn passed(&self, k: usize) -> i64 {
        let Some(first) = self.first else {
            return 0;
        };
        let hours = self.hours_seen();
        let start = hour_of_week(first) as i64;
        let offset = (k as i64 - start).rem_euclid(WEEK_HOURS);
        hours / WEEK_HOURS + i64::from(offset < hours % WEEK_HOURS)
    }

    /// Arrivals expected in hour of the week `k`.
    fn rate(&self, w: &Ward, k: usize) -> f64 {
        self.per_hour(&w.arrivals, k)
    }

    /// Events of `counts` (by hour of the week) expected in hour of the week `k`: its count over
    /// the times it passed, or the mean hourly count when it has not passed yet.
    fn per_hour(&self, counts: &[u32], k: usize) -> f64 {
        let count = f64::from(counts.get(k).copied().unwrap_or(0));
        match self.passed(k) {
            0 => {
                let hours = self.hours_seen();
                if hours == 0 {
                    0.0
                } else {
                    f64::from(counts.iter().sum::<u32>()) / hours as f64
                }
            }
            n => count / n as f64,
        }
    }

    /// How much more (or less) than in an average stretch of `hours` hours patients leave the
    /// department in the `hours` from `now`, from its departures by hour of the week (1 until a
    /// week has been seen), and how many departures of those hours that is learned from.
    fn departure_timing(&self, w: &Ward, now: i64, hours: u32) -> (f64, u32) {
        if self.hours_seen() < WEEK_HOURS || w.departures.iter().all(|d| *d == 0) {
            return (1.0, 0);
        }
        let mean = (0..WEEK_HOURS as usize)
            .map(|k| self.per_hour(&w.departures, k))
            .sum::<f64>()
            / WEEK_HOURS as f64;
        if mean <= 0.0 {
            return (1.0, 0);
        }
        let hours_ahead = (0..i64::from(hours)).map(|j| hour_of_week(now + j * HOUR));
        let ahead = hours_ahead
            .clone()
            .map(|k| self.per_hour(&w.departures, k))
            .sum::<f64>()
            / f64::from(hours);
        let counted = hours_ahead
            .map(|k| w.departures.get(k).copied().unwrap_or(0))
            .sum();
        (ahead / mean, counted)
    }

    /// The department's forecast at event time `now` for every horizon, with `capacity` beds;
    /// `None` while it learns (see the module's documentation).
    pub fn forecast(&self, ward: &(i64, String), now: i64, capacity: u32) -> Option<Vec<Horizon>> {
        let w = self.wards.get(ward)?;
        if w.stays.total() < MIN_STAYS || self.hours_seen() < MIN_HOURS {
            return None;
        }
        let stays = Some(&w.stays);
        let horizons = HORIZONS
            .iter()
            .map(|&hours| {
                let h = f64::from(hours);
                let (timing, counted) = self.departure_timing(w, now, hours);
                let (mut mean, mut variance, mut departing) = (0.0, 0.0, 0.0);
                for &since in w.present.values() {
                    let stayed = (now - since).max(0) as f64 / HOUR as f64;
                    let leaves = stays.map_or(0.0, |s| 1.0 - s.still_there(stayed, h));
                    let p = 1.0 - (leaves * timing).min(1.0);
                    mean += p;
                    variance += p * (1.0 - p);
                    departing += 1.0 - p;
                }
                // The timing is learned from `counted` departures in these hours of the week:
                // its relative error is about one over their square root.
                if counted > 0 {
                    variance += departing * departing / f64::from(counted);
                }
                if let Some(s) = stays {
                    for j in 0..i64::from(hours) {
                        let k = hour_of_week(now + j * HOUR);
                        let rate = self.rate(w, k);
                        let stay = s.survival(h - j as f64 - 1.0);
                        let remain = rate * stay;
                        mean += remain;
                        // Poisson arrivals, plus the uncertainty of a rate learned from the
                        // few times that hour of the week has passed.
                        let passes = self.passed(k).max(1) as f64;
                        variance += remain + rate / passes * stay * stay;
                    }
                }
                horizon(hours, mean, variance, capacity)
            })
            .collect();
        Some(horizons)
    }

    /// Patients in the department now.
    pub fn present(&self, ward: &(i64, String)) -> usize {
        self.wards.get(ward).map_or(0, |w| w.present.len())
    }

    /// Every department with patients or history, in a stable order.
    pub fn wards(&self) -> Vec<(i64, String)> {
        let mut all: Vec<(i64, String)> = self.wards.keys().cloned().collect();
        all.sort();
        all
    }
}

/// A horizon from the count's mean and variance (normal approximation).
fn horizon(hours: u32, mean: f64, variance: f64, capacity: u32) -> Horizon {
    const Z90: f64 = 1.281_551_565_545;
    let sd = variance.max(0.0).sqrt();
    let over = if sd > 0.0 {
        1.0 - normal_cdf((f64::from(capacity) + 0.5 - mean) / sd)
    } else if mean > f64::from(capacity) {
        1.0
    } else {
        0.0
    };
    let round = |x: f64| (x * 100.0).round() / 100.0;
    Horizon {
        hours,
        expected: round(mean),
        p10: round((mean - Z90 * sd).max(0.0)),
        p90: round(mean + Z90 * sd),
        p_over_capacity: (over * 1000.0).round() / 1000.0,
    }
}

/// Φ(x), the standard normal distribution function (Abramowitz and Stegun 7.1.26 for erf,
/// absolute error below 1.5e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    let erf = if z < 0.0 { -erf } else { erf };
    0.5 * (1.0 + erf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = HOUR;

    fn ward() -> (i64, String) {
        (1, "ICU".to_owned())
    }

    #[test]
    fn survival_is_the_share_of_longer_stays_at_an_hours_resolution() {
        let mut s = Stays::default();
        for hours in [2, 4, 6, 8] {
            s.add(hours * H);
        }
        assert_eq!(s.survival(0.0), 1.0);
        assert_eq!(s.survival(3.0), 0.75, "4, 6 and 8 are longer than 3");
        assert_eq!(
            s.survival(4.0),
            0.5,
            "a 4-hour stay is not longer than 4 hours"
        );
        assert_eq!(s.survival(8.0), 0.0);
        // Stayed 3 h: still there 4 h later if longer than 7 h: 1 of the 3 longer than 3 h.
        assert!((s.still_there(3.0, 4.0) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            s.still_there(9.0, 4.0),
            1.0,
            "longer than any stay: unknown, stays"
        );
    }

    #[test]
    fn the_normal_distribution_function_matches_its_table() {
        for (x, phi) in [
            (0.0, 0.5),
            (1.0, 0.841_344_7),
            (-1.281_551_6, 0.1),
            (2.0, 0.977_249_9),
        ] {
            assert!((normal_cdf(x) - phi).abs() < 2e-7, "Φ({x})");
        }
    }

    #[test]
    fn an_hour_of_the_week_not_seen_yet_takes_the_mean_rate() {
        let mut f = Forecaster::default();
        let monday = 1_772_409_600 * 1_000_000;
        f.saw(monday);
        f.saw(monday + 10 * H); // hours 0-9 of the week passed once
        for k in 0..10 {
            f.entered(ward(), k as u64, monday + k * H + 1);
        }
        f.entered(ward(), 99, monday + 2 * H + 2); // two arrivals in hour 2
        let w = &f.wards[&ward()];
        assert_eq!(f.passed(2), 1);
        assert_eq!(f.passed(10), 0);
        assert_eq!(f.rate(w, 2), 2.0);
        assert_eq!(f.rate(w, 3), 1.0);
        assert_eq!(
            f.rate(w, 40),
            11.0 / 10.0,
            "not seen: the mean of the 10 hours seen"
        );
        f.saw(monday + (WEEK_HOURS + 3) * H); // a week and 3 hours: hours 0-2 passed twice
        assert_eq!(f.passed(2), 2);
        assert_eq!(f.passed(3), 1);
    }

    /// Departures on day rounds: after a week, a patient likely to leave is less likely to
    /// leave over a night than over a day.
    #[test]
    fn departures_follow_the_hours_patients_leave_at() {
        let mut f = Forecaster::default();
        let monday = 1_772_409_600 * 1_000_000;
        f.saw(monday);
        // Two weeks of stays of 10 to 40 hours, each ending between 10:00 and 14:00.
        let mut patient = 0;
        for day in 0..14 {
            for k in 0..4 {
                patient += 1;
                let left = monday + day * 24 * H + (10 + k) * H;
                let since = left - (10 + 10 * k) * H;
                f.entered(ward(), patient, since);
                f.left(&ward(), patient, left);
            }
        }
        let now = monday + 14 * 24 * H; // Monday 00:00 of the third week
        f.saw(now);
        f.entered(ward(), 1000, now - 25 * H);
        let w = &f.wards[&ward()];
        let (night, _) = f.departure_timing(w, now, 8); // 00:00-08:00: nobody ever left
        let (day, counted) = f.departure_timing(w, now + 8 * H, 8); // 08:00-16:00
        assert_eq!(night, 0.0);
        // Half a departure an hour in these 8 hours, against 4 a day (1/6 an hour) on average.
        assert_eq!(day, 3.0);
        assert_eq!(counted, 8, "the 8 departures of the two Mondays");
        // After 25 hours, half the stays of 10-40 hours go on 8 more (30 and 40 of 30, 40): on
        // average the patient would leave with 0.5, but nobody leaves at night, so the patient
        // stays; and the two arrivals of each night (at 00:00 and 06:00) stay too.
        let overnight = f.forecast(&ward(), now, 10).expect("trained")[1]; // 8 hours
        assert_eq!(overnight.expected, 3.0, "{overnight:?}");
    }

    #[test]
    fn a_patient_admitted_before_the_feed_started_is_no_arrival() {
        let mut f = Forecaster::default();
        let monday = 1_772_409_600 * 1_000_000;
        f.saw(monday + 10 * H);
        f.entered(ward(), 1, monday + 2 * H); // admitted 8 hours before the first event
        f.entered(ward(), 2, monday + 10 * H);
        let w = &f.wards[&ward()];
        assert_eq!(w.arrivals.iter().sum::<u32>(), 1);
        assert_eq!(f.present(&ward()), 2);
    }

    #[test]
    fn hours_of_the_week_start_on_monday() {
        // 2026-03-02 was a Monday.
        let monday = 1_772_409_600 * 1_000_000; // 2026-03-02T00:00:00Z
        assert_eq!(hour_of_week(monday), 0);
        assert_eq!(hour_of_week(monday + 25 * H), 25);
        assert_eq!(hour_of_week(monday - H), 167);
    }

    /// A hand-computed forecast: 30 completed stays of 2, 4, 6, 8 hours (and two of 10), two
    /// patients there now for 3 and 9 hours, and the arrivals the 72 hours seen suggest.
    #[test]
    fn a_forecast_adds_up_who_stays_and_who_comes() {
        let mut f = Forecaster::default();
        let monday = 1_772_409_600 * 1_000_000;
        let mut patient = 0;
        let mut t = monday;
        for hours in [2, 4, 6, 8].repeat(7).into_iter().chain([10, 10]) {
            patient += 1;
            f.saw(t);
            f.entered(ward(), patient, t);
            f.left(&ward(), patient, t + hours * H);
            t += 5 * 60 * 1_000_000;
        }
        let now = monday + 3 * 24 * H;
        f.saw(now);
        f.entered(ward(), 100, now - 3 * H);
        f.entered(ward(), 101, now - 9 * H);
        let h4 = f.forecast(&ward(), now, 2).expect("trained")[0];
        // S(x) over 30 stays: longer than 3 h: 23 (4, 6, 8 x 7 and 10 x 2); than 7 h: 9
        // (8 x 7, 10 x 2); than 9 h: 2; than 13 h: 0. Patient 100 stays with 9/23, patient 101
        // with 0/2.
        let p: f64 = 9.0 / 23.0;
        // Hours 72-75 of the week have not passed yet: each takes the mean rate, 32 arrivals in
        // 72 hours; one in hour j of the 4 is still there with S(3 - j): S(3) = S(2) = 23/30,
        // S(1) = S(0) = 1.
        let rate = 32.0 / 72.0;
        let stays = [23.0 / 30.0, 23.0 / 30.0, 1.0, 1.0];
        let arrivals: f64 = stays.iter().map(|s| rate * s).sum();
        // Poisson arrivals, plus the uncertainty of a rate learned from one pass (none yet:
        // counted as one) of each hour: rate * S^2.
        let learning: f64 = stays.iter().map(|s| rate * s * s).sum();
        let (mean, variance) = (p + arrivals, p * (1.0 - p) + arrivals + learning);
        let round = |x: f64| (x * 100.0).round() / 100.0;
        assert_eq!(h4.hours, 4);
        assert_eq!(h4.expected, round(mean), "{h4:?}");
        assert_eq!(h4.p90, round(mean + 1.281_551_565_545 * variance.sqrt()));
        assert_eq!(
            h4.p10,
            round((mean - 1.281_551_565_545 * variance.sqrt()).max(0.0))
        );
        let over = 1.0 - normal_cdf((2.5 - mean) / variance.sqrt());
        assert_eq!(h4.p_over_capacity, (over * 1000.0).round() / 1000.0);
        assert!(
            h4.p_over_capacity > 0.1 && h4.p_over_capacity < 0.5,
            "{h4:?}"
        );
    }

    #[test]
    fn arrivals_of_the_same_hour_of_the_week_are_expected_again() {
        let mut f = Forecaster::default();
        let monday = 1_772_409_600 * 1_000_000;
        // Two weeks; each Monday 08:00-09:00 three arrivals, each staying 30 hours; enough
        // completed stays come from other hours.
        f.saw(monday);
        let mut patient = 0;
        for week in 0..2 {
            for k in 0..3 {
                patient += 1;
                let at = monday + week * WEEK_HOURS * H + 8 * H + k * 60 * 1_000_000;
                f.saw(at);
                f.entered(ward(), patient, at);
                f.left(&ward(), patient, at + 30 * H);
            }
        }
        for k in 0..30 {
            patient += 1;
            let at = monday + 2 * 24 * H + k * H;
            f.entered(ward(), patient, at);
            f.left(&ward(), patient, at + 30 * H);
        }
        let end = monday + 2 * WEEK_HOURS * H;
        f.saw(end);
        // Monday 06:00 of the third week, 4 hours ahead: hour 8 is the third hour of the horizon
        // (j = 2); 6 arrivals in 2 passes of that hour = 3; every stay lasts 30 h: S(1) = 1.
        let now = end + 6 * H;
        f.saw(now);
        let h4 = f.forecast(&ward(), now, 10).expect("trained")[0];
        assert!((h4.expected - 3.0).abs() < 1e-9, "{h4:?}");
        // Poisson 3, plus the rate's uncertainty after two passes: 3 / 2.
        let sd = 4.5_f64.sqrt();
        assert!((h4.p90 - ((3.0 + 1.281_551_565_545 * sd) * 100.0).round() / 100.0).abs() < 1e-9);
    }
}
