//! `target/bench/report.md` (one table, every figure beside its target) and `target/bench/report.json`
//! (the same rows plus every raw measurement).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: &'static str,
    pub figure: String,
    pub value: String,
    /// The bar the team aims for, in words; empty for figures without one.
    pub target: String,
    /// `None` for figures without a target.
    pub met: Option<bool>,
}

/// The rows, built scenario by scenario.
#[derive(Debug, Default, Serialize)]
pub struct Table {
    pub rows: Vec<Row>,
}

impl Table {
    /// A figure with no target.
    pub fn info(&mut self, scenario: &'static str, figure: &str, value: String) {
        self.rows.push(Row {
            scenario,
            figure: figure.to_owned(),
            value,
            target: String::new(),
            met: None,
        });
    }

    /// A figure checked against its target.
    pub fn check(
        &mut self,
        scenario: &'static str,
        figure: &str,
        value: String,
        target: &str,
        met: bool,
    ) {
        self.rows.push(Row {
            scenario,
            figure: figure.to_owned(),
            value,
            target: target.to_owned(),
            met: Some(met),
        });
    }

    pub fn missed(&self) -> usize {
        self.rows.iter().filter(|r| r.met == Some(false)).count()
    }
}

/// Writes both files into `dir`.
pub fn write(
    dir: &Path,
    title: &str,
    table: &Table,
    notes: &[String],
    raw: &serde_json::Value,
) -> anyhow::Result<()> {
    let md = markdown(title, table, notes);
    let md_path = dir.join("report.md");
    std::fs::write(&md_path, md).with_context(|| format!("cannot write {}", md_path.display()))?;
    let json = serde_json::json!({
        "title": title,
        "rows": table.rows,
        "notes": notes,
        "raw": raw,
    });
    let json_path = dir.join("report.json");
    let text = serde_json::to_string_pretty(&json).context("cannot serialise the report")?;
    std::fs::write(&json_path, text)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    Ok(())
}

/// The table as Markdown.
pub fn markdown(title: &str, table: &Table, notes: &[String]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {title}\n");
    let _ = writeln!(md, "| Scenario | Figure | Value | Target | Met |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    for row in &table.rows {
        let met = match row.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            row.scenario, row.figure, row.value, row.target, met
        );
    }
    if !notes.is_empty() {
        let _ = writeln!(md, "\nNotes:\n");
        for note in notes {
            let _ = writeln!(md, "- {note}");
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_marks_missed_targets() {
        let mut table = Table::default();
        table.check("status", "p99", "7.0 ms".into(), "≤ 5 ms", false);
        table.info("status", "requests", "100".into());
        let md = markdown("Bench", &table, &["a note".to_owned()]);
        assert!(md.contains("| status | p99 | 7.0 ms | ≤ 5 ms | **missed** |"));
        assert!(md.contains("| status | requests | 100 |  |  |"));
        assert!(md.contains("- a note"));
        assert_eq!(table.missed(), 1);
    }
}
