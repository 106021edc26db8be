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
}
