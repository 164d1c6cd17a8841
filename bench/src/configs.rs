//! The `configs` section: what a user gets from `cds run` with the rule pack and the lake on or
//! off, on one stream, in one run.
//!
//! Each configuration is the real binary (`cds run --source file:S --until-end --http off`
//! beside this one), in a fresh data directory, the configurations taking turns round after
//! round so that a busy moment of a shared machine falls on all of them alike. Each figure is
//! the median of its rounds, as `cds run` reports it (events over the run's wall time, start
//! and final flush included); the ratio is to the configuration with both off.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

use crate::report::Report;

/// One `cds run` configuration.
struct Configuration {
    name: &'static str,
    rules: bool,
    lake: bool,
    /// `--rules-threads`; `None`: the default (one per core).
    rules_threads: Option<&'static str>,
    /// `--reorder-window`; `None`: the default.
    reorder_window: Option<&'static str>,
}

impl Configuration {
    /// The flags of this configuration, with the rule pack of `rules`.
    fn flags(&self, rules: &Path) -> Vec<String> {
        let mut flags = vec!["--rules".to_string()];
        flags.push(if self.rules {
            rules.display().to_string()
        } else {
            "off".into()
        });
        if !self.lake {
            flags.extend(["--lake".into(), "off".into()]);
        }
        if let Some(n) = self.rules_threads {
            flags.extend(["--rules-threads".into(), n.into()]);
        }
        if let Some(w) = self.reorder_window {
            flags.extend(["--reorder-window".into(), w.into()]);
        }
        flags
    }
}

const CONFIGURATIONS: [Configuration; 6] = [
    Configuration {
        name: "rules off, lake off",
        rules: false,
        lake: false,
        rules_threads: None,
        reorder_window: None,
    },
    Configuration {
        name: "rules on (one rules thread), lake off",
        rules: true,
        lake: false,
        rules_threads: Some("1"),
        reorder_window: None,
    },
    Configuration {
        name: "rules on, lake off",
        rules: true,
        lake: false,
        rules_threads: None,
        reorder_window: None,
    },
    Configuration {
        name: "rules off, lake on",
        rules: false,
        lake: true,
        rules_threads: None,
        reorder_window: None,
    },
    Configuration {
        name: "default (rules and lake on)",
        rules: true,
        lake: true,
        rules_threads: None,
        reorder_window: None,
    },
    Configuration {
        name: "default without the reorder window (--reorder-window 0)",
        rules: true,
        lake: true,
        rules_threads: None,
        reorder_window: Some("0"),
    },
];

/// Runs every configuration `rounds` times over `file` with the rule pack of `rules`.
pub fn measure(
    report: &mut Report,
    file: &Path,
    rules: &Path,
    dir: &Path,
    rounds: usize,
) -> anyhow::Result<()> {
    let cds = std::env::current_exe()?.with_file_name("cds");
    if !cds.is_file() {
        bail!(
            "the configurations benchmark runs the engine binary {}: build the workspace first",
            cds.display()
        );
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); CONFIGURATIONS.len()];
    for round in 0..rounds {
        for (i, c) in CONFIGURATIONS.iter().enumerate() {
            let data = dir.join(format!("configs-{round}-{i}"));
            let _ = std::fs::remove_dir_all(&data);
            let out = Command::new(&cds)
                .env("CDS_LOG", "warn")
                .arg("run")
                .args(c.flags(rules))
                .args(["--until-end", "--http", "off", "--checkpoint-interval", "0"])
                .arg("--source")
                .arg(format!("file:{}", file.display()))
                .arg("--data-dir")
                .arg(&data)
                .output()
                .with_context(|| format!("running {}", cds.display()))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                bail!(
                    "cds run ({}) failed: {stdout}{}",
                    c.name,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            rates[i].push(events_per_second(&stdout).with_context(|| {
                format!(
                    "no events/s in the summary of cds run ({}): {stdout}",
                    c.name
                )
            })?);
            let _ = std::fs::remove_dir_all(&data);
        }
    }
    let medians: Vec<f64> = rates.iter().map(|r| median(r)).collect();
    let both_off = medians[0].max(1e-9);
    for (c, (rate, runs)) in CONFIGURATIONS.iter().zip(medians.iter().zip(&rates)) {
        report.figure(
            "configs",
            &format!(
                "cds run, {}: median of {rounds} (runs {})",
                c.name,
                runs.iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            ),
            *rate,
            "events/s",
        );
        report.line(
            "configs",
            &format!("{} / both off", c.name),
            &format!("{:.3}", rate / both_off),
        );
    }
    Ok(())
}

/// The rate in `cds run`'s summary line: "processed N events in T s (R events/s): ...".
fn events_per_second(summary: &str) -> Option<f64> {
    let line = summary.lines().find(|l| l.contains("events/s"))?;
    let before = line.split(" events/s").next()?;
    before.rsplit('(').next()?.trim().parse().ok()
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_rate_of_the_summary_line() {
        let s = "processed 200000 events in 8.99 s (22251 events/s): 198194 to Gold\n";
        assert_eq!(events_per_second(s), Some(22251.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
