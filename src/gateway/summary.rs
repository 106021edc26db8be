//! A notebook as `read_notebook` shows it: each cell's index, type, source, and its
//! outputs summarised (text cut short, images named, errors as `ename: evalue`).

use nbformat::v4::Notebook;
use serde_json::{Value, json};

/// Characters of an output's text shown in a summary.
const OUTPUT_CHARS: usize = 500;

/// Every cell, summarised.
pub fn cells(nb: &Notebook) -> Vec<Value> {
    let Ok(Value::Object(doc)) = serde_json::to_value(nb) else {
        return vec![];
    };
    let cells = doc
        .get("cells")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    cells
        .iter()
        .enumerate()
        .map(|(index, cell)| {
            let mut v = json!({
                "index": index,
                "type": cell["cell_type"],
                "source": joined(&cell["source"]),
            });
            if cell["cell_type"] == "code" {
                v["execution_count"] = cell["execution_count"].clone();
                let outputs: Vec<String> = cell["outputs"]
                    .as_array()
                    .map(|o| o.iter().map(output).collect())
                    .unwrap_or_default();
                v["outputs"] = json!(outputs);
            }
            v
        })
        .collect()
}

/// Cells a read_notebook page shows when the agent does not say.
pub const DEFAULT_PAGE_CELLS: usize = 50;
/// The most cells one page shows.
pub const MAX_PAGE_CELLS: usize = 500;
/// Characters of a cell's source a brief page shows.
const BRIEF_SOURCE_CHARS: usize = 120;

/// One page of the notebook: `limit` cells from `offset`, each whole or (`brief`) its
/// source's first line and the number of its outputs; with the total and where the next
/// page starts (pure).
pub fn page(nb: &Notebook, offset: usize, limit: Option<usize>, brief: bool) -> Value {
    let all = cells(nb);
    let total = all.len();
    let limit = limit.unwrap_or(DEFAULT_PAGE_CELLS).clamp(1, MAX_PAGE_CELLS);
    let shown: Vec<Value> = all
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|c| if brief { briefly(c) } else { c })
        .collect();
    let end = offset.saturating_add(shown.len());
    json!({
        "cells": shown,
        "total_cells": total,
        "next_offset": (end < total).then_some(end),
    })
}

fn briefly(mut cell: Value) -> Value {
    let source = cell["source"].as_str().unwrap_or_default().to_owned();
    let lines = source.lines().count();
    let first: String = source
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(BRIEF_SOURCE_CHARS)
        .collect();
    cell["source"] = json!(if lines > 1 {
        format!("{first} … ({lines} lines)")
    } else {
        first
    });
    if let Some(outputs) = cell.get("outputs").and_then(Value::as_array).map(Vec::len) {
        cell["outputs"] = json!(outputs);
    }
    cell
}

fn output(o: &Value) -> String {
    match o["output_type"].as_str().unwrap_or_default() {
        "stream" => short(&joined(&o["text"])),
        "error" => format!(
            "{}: {}",
            o["ename"].as_str().unwrap_or_default(),
            o["evalue"].as_str().unwrap_or_default()
        ),
        _ => {
            let data = &o["data"];
            match data.as_object() {
                Some(d) => {
                    if let Some(img) = d.keys().find(|k| k.starts_with("image/")) {
                        format!("[{img}]")
                    } else if let Some(t) = d.get("text/plain") {
                        short(&joined(t))
                    } else {
                        format!("[{}]", d.keys().cloned().collect::<Vec<_>>().join(", "))
                    }
                }
                None => String::new(),
            }
        }
    }
}

fn joined(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => String::new(),
    }
}

fn short(s: &str) -> String {
    if s.chars().count() <= OUTPUT_CHARS {
        s.to_owned()
    } else {
        let head: String = s.chars().take(OUTPUT_CHARS).collect();
        format!(
            "{head}… [{} more characters]",
            s.chars().count() - OUTPUT_CHARS
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jupyter::{Output, notebook};

    #[test]
    fn cells_are_summarised() {
        let mut nb = notebook::new_notebook("python3", "Python 3", "python");
        notebook::append_markdown(&mut nb, "# Title");
        let outputs = vec![
            Output::Stream {
                name: "stdout".into(),
                text: "x".repeat(600),
            },
            Output::Error {
                ename: "ValueError".into(),
                evalue: "bad".into(),
                traceback: vec![],
            },
        ];
        notebook::append_code(&mut nb, "print(1)\nraise", &outputs, Some(3), json!({})).unwrap();
        let cells = cells(&nb);
        assert_eq!(cells[0]["type"], "markdown");
        assert_eq!(cells[1]["source"], "print(1)\nraise");
        assert_eq!(cells[1]["execution_count"], 3);
        assert!(
            cells[1]["outputs"][0]
                .as_str()
                .unwrap()
                .ends_with("[100 more characters]")
        );
        assert_eq!(cells[1]["outputs"][1], "ValueError: bad");
    }

    #[test]
    fn notebooks_are_read_in_pages_fully_or_briefly() {
        let mut nb = notebook::new_notebook("python3", "Python 3", "python");
        for i in 0..7 {
            let out = [Output::Stream {
                name: "stdout".into(),
                text: format!("{i}\n"),
            }];
            let code = format!("x = {i}\nprint(x)");
            notebook::append_code(&mut nb, &code, &out, Some(i), json!({})).unwrap();
        }
        let p = page(&nb, 2, Some(3), false);
        assert_eq!(p["total_cells"], 7);
        assert_eq!(p["next_offset"], 5);
        assert_eq!(p["cells"][0]["index"], 2);
        assert_eq!(p["cells"][0]["outputs"][0], "2\n");
        let last = page(&nb, 5, Some(100), true);
        assert_eq!(last["next_offset"], Value::Null);
        assert_eq!(last["cells"][1]["source"], "x = 6 … (2 lines)");
        assert_eq!(last["cells"][1]["outputs"], 1);
        assert_eq!(page(&nb, 99, None, false)["cells"], json!([]));
    }
}
