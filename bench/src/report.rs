//! Every figure is printed as one line when it is measured, and collected for the Markdown
//! table printed at the end of the run (the table that goes into RESULTS.md).

/// The figures of one run.
#[derive(Debug, Default)]
pub struct Report {
    rows: Vec<(String, String, String)>,
}

/// A figure with thousands separators when large, three significant digits when small.
pub fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v.abs() >= 1000.0 {
        let digits = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 {
            out.insert(0, '-');
        }
        out
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

impl Report {
    /// Prints and keeps one measured figure.
    pub fn figure(&mut self, section: &str, what: &str, value: f64, unit: &str) {
        let v = format!("{} {unit}", format_value(value));
        println!("{section}: {what}: {v}");
        self.rows
            .push((section.into(), what.into(), v.trim().into()));
    }

    /// Prints and keeps one line that is not a number (a check that passed, a skip).
    pub fn line(&mut self, section: &str, what: &str, note: &str) {
        println!(
            "{section}: {what}{}{note}",
            if note.is_empty() { "" } else { ": " }
        );
        self.rows.push((section.into(), what.into(), note.into()));
    }

    /// The figures as a Markdown table.
    pub fn markdown(&self) -> String {
        let mut out = String::from("| section | what | figure |\n|---|---|---|\n");
        for (s, w, v) in &self.rows {
            out.push_str(&format!("| {s} | {w} | {v} |\n"));
        }
        out
    }
}
