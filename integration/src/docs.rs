//! Reference tables in the README that are generated from the code, so they cannot drift:
//! the flag, environment variable and default columns of the configuration table (from
//! clap), the metric families table (from the registry) and the event reasons (from the
//! reconciler's enum). `make docs` rewrites them (`cyberdesk-docs`); the tests below fail
//! when the committed README is not what it would write. The prose columns stay
//! hand-written; a row the code gains starts with the code's own help text.

use std::collections::BTreeMap;

use clap::{Args, Command};
use cyberdesk_operator::config::RunConfig;

/// Why the README could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    #[error("README.md has no table headed {0:?}")]
    NoTable(&'static str),
    #[error("cannot read the metrics registry: {0}")]
    Metrics(String),
}

const FLAGS_HEADER: &str = "| flag | environment | default | meaning |";
const METRICS_HEADER: &str = "| metric | type | labels | meaning |";
const EVENTS_HEADER: &str = "| reason | type | when |";

/// Every generated table of `readme` brought up to date.
pub fn sync_readme(readme: &str) -> Result<String, DocsError> {
    let readme = sync_table(readme, FLAGS_HEADER, &flag_rows())?;
    let readme = sync_table(&readme, METRICS_HEADER, &metric_rows()?)?;
    sync_table(&readme, EVENTS_HEADER, &event_rows())
}

/// One generated row: the cells the code decides (`None`: the code cannot tell, keep the
/// README's), and the prose for a row that is new.
struct Row {
    key: String,
    cells: Vec<Option<String>>,
    new_prose: Vec<String>,
}

fn code(s: &str) -> String {
    format!("`{s}`")
}

/// A table row as the README writes it: an empty cell is `| |`.
fn render_row(cells: &[String]) -> String {
    let inner: Vec<String> = cells
        .iter()
        .map(|c| {
            if c.is_empty() {
                " ".to_string()
            } else {
                format!(" {c} ")
            }
        })
        .collect();
    format!("|{}|\n", inner.join("|"))
}

/// The cells of a table row, without the outer pipes.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    // A `|` inside backticks (e.g. `Delete` \| `Stop`) is escaped in the README.
    let mut out = Vec::new();
    let mut cell = String::new();
    let mut prev = ' ';
    for ch in inner.chars() {
        if ch == '|' && prev != '\\' {
            out.push(cell.trim().to_string());
            cell.clear();
        } else {
            cell.push(ch);
        }
        prev = ch;
    }
    out.push(cell.trim().to_string());
    out
}

/// Replaces the rows under `header`: the generated cells in the code's order, each row's
/// remaining (prose) cells kept from the README, rows the code no longer has dropped.
fn sync_table(readme: &str, header: &'static str, rows: &[Row]) -> Result<String, DocsError> {
    let start = readme.find(header).ok_or(DocsError::NoTable(header))?;
    let body_start = readme[start..]
        .match_indices('\n')
        .nth(1)
        .map(|(i, _)| start + i + 1)
        .ok_or(DocsError::NoTable(header))?;
    let body_end = readme[body_start..]
        .find("\n\n")
        .map_or(readme.len(), |i| body_start + i + 1);
    let generated_cells = rows.first().map_or(0, |r| r.cells.len());
    let existing: BTreeMap<String, Vec<String>> = readme[body_start..body_end]
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            let c = cells(l);
            (c[0].clone(), c)
        })
        .collect();
    let existing_order: Vec<String> = readme[body_start..body_end]
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| cells(l)[0].clone())
        .collect();
    // The README's order stands (it groups related flags); rows the code gained follow in
    // the code's order. A row whose key is a pattern (`process_*`) is not the code's to judge.
    let mut ordered: Vec<&Row> = rows.iter().collect();
    ordered.sort_by_key(|r| {
        existing_order
            .iter()
            .position(|k| *k == r.key)
            .unwrap_or(usize::MAX)
    });
    let mut lines: Vec<(usize, String)> = Vec::new();
    for row in ordered {
        let old = existing.get(&row.key);
        let mut all: Vec<String> = row
            .cells
            .iter()
            .enumerate()
            .map(|(i, cell)| match cell {
                Some(c) => c.clone(),
                None => old.and_then(|o| o.get(i).cloned()).unwrap_or_default(),
            })
            .collect();
        match old {
            Some(o) => all.extend(o.iter().skip(generated_cells).cloned()),
            None => all.extend(row.new_prose.iter().cloned()),
        }
        let at = existing_order
            .iter()
            .position(|k| *k == row.key)
            .unwrap_or(usize::MAX);
        lines.push((at, render_row(&all)));
    }
    for (at, key) in existing_order.iter().enumerate() {
        if key.contains('*') {
            lines.push((at, render_row(&existing[key.as_str()])));
        }
    }
    lines.sort_by_key(|(at, _)| *at);
    let table: String = lines.into_iter().map(|(_, l)| l).collect();
    Ok(format!(
        "{}{}{}",
        &readme[..body_start],
        table,
        &readme[body_end..]
    ))
}

fn flag_rows() -> Vec<Row> {
    let command = RunConfig::augment_args(Command::new("run"));
    command
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|arg| {
            let long = arg.get_long()?;
            let env = arg
                .get_env()
                .map(|e| code(&e.to_string_lossy()))
                .unwrap_or_else(|| "none".into());
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .filter(|v| !v.is_empty())
                .collect();
            let default = if defaults.is_empty() {
                "none".to_string()
            } else {
                code(&defaults.join(","))
            };
            let help = arg
                .get_help()
                .map(|h| h.to_string().replace('\n', " "))
                .unwrap_or_default();
            let key = code(&format!("--{long}"));
            Some(Row {
                key: key.clone(),
                cells: vec![Some(key), Some(env), Some(default)],
                new_prose: vec![help],
            })
        })
        .collect()
}

/// Every family the operator exports (`metrics::FAMILIES`), with its type where the registry
/// has it from the start (families with one series per pool appear with their first pool).
fn metric_rows() -> Result<Vec<Row>, DocsError> {
    use cyberdesk_operator::metrics::{FAMILIES, Metrics};
    let metrics = Metrics::new("docs", &[]).map_err(|e| DocsError::Metrics(e.to_string()))?;
    let text = metrics
        .render()
        .map_err(|e| DocsError::Metrics(e.to_string()))?;
    let types: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    Ok(FAMILIES
        .iter()
        .map(|name| {
            let key = code(name);
            Row {
                key: key.clone(),
                cells: vec![Some(key), types.get(name).map(|t| t.to_string())],
                new_prose: vec![String::new(), String::new()],
            }
        })
        .collect())
}

/// Families the registry exports that `FAMILIES` (and so the README) leaves out.
pub fn unlisted_families() -> Result<Vec<String>, DocsError> {
    use cyberdesk_operator::metrics::{FAMILIES, Metrics};
    let metrics = Metrics::new("docs", &[]).map_err(|e| DocsError::Metrics(e.to_string()))?;
    let text = metrics
        .render()
        .map_err(|e| DocsError::Metrics(e.to_string()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' ').map(|(name, _)| name.to_string()))
        // The process collector's families: the README's `process_*` row.
        .filter(|name| !name.starts_with("process_") && !FAMILIES.contains(&name.as_str()))
        .collect())
}

fn event_rows() -> Vec<Row> {
    use cyberdesk_operator::controller::announcement::Reason;
    Reason::ALL
        .iter()
        .map(|reason| {
            let key = code(reason.as_str());
            let kind = if reason.is_warning() {
                "Warning"
            } else {
                "Normal"
            };
            Row {
                key: key.clone(),
                cells: vec![Some(key), Some(kind.into())],
                new_prose: vec![String::new()],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readme() -> String {
        std::fs::read_to_string(crate::workspace::repo_path("README.md")).expect("README.md")
    }

    #[test]
    fn the_readme_reference_tables_are_current() {
        let committed = readme();
        let synced = sync_readme(&committed).expect("tables");
        if synced != committed {
            let diff: Vec<String> = committed
                .lines()
                .zip(synced.lines())
                .filter(|(a, b)| a != b)
                .take(5)
                .map(|(a, b)| format!("README: {a}\ncode:   {b}"))
                .collect();
            panic!(
                "README's generated tables are stale: run `make docs`\n{}",
                diff.join("\n")
            );
        }
    }

    #[test]
    fn every_exported_family_is_listed() {
        assert_eq!(unlisted_families().expect("registry"), Vec::<String>::new());
    }

    #[test]
    fn syncing_twice_changes_nothing() {
        let once = sync_readme(&readme()).expect("tables");
        assert_eq!(sync_readme(&once).expect("tables"), once);
    }

    #[test]
    fn a_changed_default_is_a_stale_row() {
        let table = format!(
            "intro\n\n{FLAGS_HEADER}\n|---|---|---|---|\n| `--namespace` | `CYBERDESK_NAMESPACE` | `elsewhere` | kept prose |\n\nafter\n"
        );
        let synced = sync_table(&table, FLAGS_HEADER, &flag_rows()).expect("table");
        assert!(
            synced.contains(
                "| `--namespace` | `CYBERDESK_NAMESPACE` | `cyberdesk-system` | kept prose |"
            ),
            "{synced}"
        );
        assert!(synced.ends_with("\nafter\n"), "{synced}");
        // A flag missing from the table comes back with clap's help text.
        assert!(synced.contains("| `--pod-name` |"), "{synced}");
    }
}
