//! Notebooks (nbformat v4.5, with cell ids) built and edited through the `nbformat`
//! crate: a session's notebook is the durable record of what was executed.

use nbformat::v4::{Cell, CellId, CellMetadata, Metadata, Notebook, Output as NbOutput};
use serde_json::Value;

use super::{JupyterError, Output};

/// A new, empty notebook for the given kernel spec.
pub fn new_notebook(kernel_name: &str, display_name: &str, language: &str) -> Notebook {
    let metadata: Metadata = serde_json::from_value(serde_json::json!({
        "kernelspec": {"name": kernel_name, "display_name": display_name, "language": language},
        "language_info": {"name": language},
    }))
    .expect("a literal kernelspec is valid metadata");
    Notebook {
        metadata,
        nbformat: 4,
        nbformat_minor: 5,
        cells: vec![],
    }
}

/// Reads a notebook from the contents API's JSON, upgrading older formats and repairing
/// missing cell ids.
pub fn from_json(value: &Value) -> Result<Notebook, JupyterError> {
    let text = value.to_string();
    match nbformat::parse_notebook(&text).map_err(|e| JupyterError::Notebook(e.to_string()))? {
        nbformat::Notebook::V4(nb) => Ok(nb),
        nbformat::Notebook::V4QuirksMode(q) => Ok(q.repair()),
        nbformat::Notebook::Legacy(nb) => {
            nbformat::upgrade_legacy_notebook(nb).map_err(|e| JupyterError::Notebook(e.to_string()))
        }
        nbformat::Notebook::V3(nb) => {
            nbformat::upgrade_v3_notebook(nb).map_err(|e| JupyterError::Notebook(e.to_string()))
        }
        _ => Err(JupyterError::Notebook("unsupported notebook format".into())),
    }
}

/// The notebook as JSON for the contents API.
pub fn to_json(nb: &Notebook) -> Result<Value, JupyterError> {
    let text = nbformat::serialize_notebook(&nbformat::Notebook::V4(nb.clone()))
        .map_err(|e| JupyterError::Notebook(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| JupyterError::Notebook(e.to_string()))
}

fn new_id() -> CellId {
    let mut bytes = [0u8; 8];
    // An id only has to be unique within the notebook; the clock is a fine fallback.
    if getrandom::fill(&mut bytes).is_err() {
        bytes = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            .to_le_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    CellId::new(&hex).expect("hex is a valid cell id")
}

/// nbformat stores source as lines that keep their `\n`.
fn source_lines(source: &str) -> Vec<String> {
    source.split_inclusive('\n').map(str::to_owned).collect()
}

fn outputs(outputs: &[Output]) -> Result<Vec<NbOutput>, JupyterError> {
    outputs
        .iter()
        .map(|o| {
            serde_json::from_value(o.to_nbformat())
                .map_err(|e| JupyterError::Notebook(format!("output: {e}")))
        })
        .collect()
}

fn metadata(extra: Value) -> CellMetadata {
    serde_json::from_value(extra)
        .unwrap_or_else(|_| serde_json::from_value(serde_json::json!({})).expect("empty metadata"))
}

/// Appends a code cell with its outputs; returns its index.
pub fn append_code(
    nb: &mut Notebook,
    source: &str,
    cell_outputs: &[Output],
    execution_count: Option<u64>,
    extra_metadata: Value,
) -> Result<usize, JupyterError> {
    nb.cells.push(Cell::Code {
        id: new_id(),
        metadata: metadata(extra_metadata),
        execution_count: execution_count.map(|c| c as i32),
        source: source_lines(source),
        outputs: outputs(cell_outputs)?,
    });
    Ok(nb.cells.len() - 1)
}

/// Appends a markdown cell; returns its index.
pub fn append_markdown(nb: &mut Notebook, markdown: &str) -> usize {
    nb.cells.push(Cell::Markdown {
        id: new_id(),
        metadata: metadata(Value::Null),
        source: source_lines(markdown),
        attachments: None,
    });
    nb.cells.len() - 1
}

/// Resolves a cell index, counting from the end when negative.
pub fn resolve_index(nb: &Notebook, index: i64) -> Result<usize, JupyterError> {
    let len = nb.cells.len() as i64;
    let i = if index < 0 { len + index } else { index };
    if i < 0 || i >= len {
        return Err(JupyterError::Notebook(format!(
            "no cell {index}: the notebook has {len} cells"
        )));
    }
    Ok(i as usize)
}

/// Which kind of cell to insert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellKind {
    Code,
    Markdown,
}

/// Inserts an unexecuted cell so that it ends up at `index` (0 ..= number of cells; a
/// negative index counts from the end, -1 meaning after the last cell); returns its index.
pub fn insert_cell(
    nb: &mut Notebook,
    index: i64,
    kind: CellKind,
    source: &str,
) -> Result<usize, JupyterError> {
    let len = nb.cells.len() as i64;
    let i = if index < 0 { len + 1 + index } else { index };
    if i < 0 || i > len {
        return Err(JupyterError::Notebook(format!(
            "cannot insert at {index}: the notebook has {len} cells (use 0 to {len}, or -1 for the end)"
        )));
    }
    let cell = match kind {
        CellKind::Code => Cell::Code {
            id: new_id(),
            metadata: metadata(Value::Null),
            execution_count: None,
            source: source_lines(source),
            outputs: vec![],
        },
        CellKind::Markdown => Cell::Markdown {
            id: new_id(),
            metadata: metadata(Value::Null),
            source: source_lines(source),
            attachments: None,
        },
    };
    nb.cells.insert(i as usize, cell);
    Ok(i as usize)
}

/// Removes a cell; returns the index it had.
pub fn delete_cell(nb: &mut Notebook, index: i64) -> Result<usize, JupyterError> {
    let i = resolve_index(nb, index)?;
    nb.cells.remove(i);
    Ok(i)
}

/// Moves the cell at `from` so that it ends up at `to` (both existing indices, negative
/// from the end); returns its new index.
pub fn move_cell(nb: &mut Notebook, from: i64, to: i64) -> Result<usize, JupyterError> {
    let (i, j) = (resolve_index(nb, from)?, resolve_index(nb, to)?);
    let cell = nb.cells.remove(i);
    nb.cells.insert(j, cell);
    Ok(j)
}

/// Clears the outputs and execution counts of one code cell or (without an index) of all;
/// returns how many cells had outputs.
pub fn clear_outputs(nb: &mut Notebook, index: Option<i64>) -> Result<usize, JupyterError> {
    let range = match index {
        Some(ix) => {
            let i = resolve_index(nb, ix)?;
            i..i + 1
        }
        None => 0..nb.cells.len(),
    };
    let mut cleared = 0;
    for cell in &mut nb.cells[range] {
        if let Cell::Code {
            outputs,
            execution_count,
            ..
        } = cell
        {
            if !outputs.is_empty() {
                cleared += 1;
            }
            outputs.clear();
            *execution_count = None;
        }
    }
    Ok(cleared)
}

/// The source of the code cell at `index` (what run_cell runs again).
pub fn code_source(nb: &Notebook, index: i64) -> Result<String, JupyterError> {
    let i = resolve_index(nb, index)?;
    match &nb.cells[i] {
        Cell::Code { source, .. } => Ok(source.concat()),
        _ => Err(JupyterError::Notebook(format!(
            "cell {i} is not a code cell: only code cells run"
        ))),
    }
}

/// Replaces a cell's source and outputs (it becomes a code cell, keeping its id).
pub fn replace_code(
    nb: &mut Notebook,
    index: i64,
    source: &str,
    cell_outputs: &[Output],
    execution_count: Option<u64>,
) -> Result<usize, JupyterError> {
    let i = resolve_index(nb, index)?;
    let id = nb.cells[i].id().clone();
    let meta = nb.cells[i].metadata().clone();
    nb.cells[i] = Cell::Code {
        id,
        metadata: meta,
        execution_count: execution_count.map(|c| c as i32),
        source: source_lines(source),
        outputs: outputs(cell_outputs)?,
    };
    Ok(i)
}

/// Every code cell's index and source, in order.
pub fn code_cells(nb: &Notebook) -> Vec<(usize, String)> {
    nb.cells
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            Cell::Code { source, .. } => Some((i, source.concat())),
            _ => None,
        })
        .collect()
}

/// Whether slurmlab recorded the cell as cancelled (interrupted before it finished).
pub fn was_cancelled(cell: &Cell) -> bool {
    cell.metadata()
        .additional
        .get("slurmlab")
        .and_then(|m| m.get("status"))
        .and_then(Value::as_str)
        == Some("cancelled")
}

/// The code cells Resume re-executes, and how many it skips: cells recorded as cancelled
/// never finished, so running them again would only repeat the interruption (or hang).
pub fn restorable_cells(nb: &Notebook) -> (Vec<(usize, String)>, usize) {
    let all = code_cells(nb);
    let total = all.len();
    let kept: Vec<(usize, String)> = all
        .into_iter()
        .filter(|(i, _)| !was_cancelled(&nb.cells[*i]))
        .collect();
    let skipped = total - kept.len();
    (kept, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_inserted_moved_cleared_and_deleted() {
        let mut nb = new_notebook("python3", "Python 3", "python");
        let out = Output::Stream {
            name: "stdout".into(),
            text: "1\n".into(),
        };
        append_code(&mut nb, "a", &[out], Some(1), Value::Null).unwrap();
        assert_eq!(
            insert_cell(&mut nb, 0, CellKind::Markdown, "# title").unwrap(),
            0
        );
        assert_eq!(insert_cell(&mut nb, -1, CellKind::Code, "b").unwrap(), 2);
        assert!(insert_cell(&mut nb, 4, CellKind::Code, "x").is_err());
        assert_eq!(
            code_cells(&nb),
            vec![(1, "a".to_owned()), (2, "b".to_owned())]
        );
        assert_eq!(code_source(&nb, -1).unwrap(), "b");
        assert!(
            code_source(&nb, 0)
                .unwrap_err()
                .to_string()
                .contains("not a code cell")
        );
        // [# title, a, b] -> [a, b, # title]
        assert_eq!(move_cell(&mut nb, 0, -1).unwrap(), 2);
        assert_eq!(
            code_cells(&nb),
            vec![(0, "a".to_owned()), (1, "b".to_owned())]
        );
        assert_eq!(clear_outputs(&mut nb, None).unwrap(), 1);
        assert!(
            matches!(&nb.cells[0], Cell::Code { outputs, execution_count: None, .. } if outputs.is_empty())
        );
        assert_eq!(delete_cell(&mut nb, 0).unwrap(), 0);
        assert_eq!(code_cells(&nb), vec![(0, "b".to_owned())]);
        assert!(delete_cell(&mut nb, 5).is_err());
    }

    #[test]
    fn cancelled_cells_are_not_restored() {
        let mut nb = new_notebook("python3", "Python 3", "python");
        append_code(&mut nb, "x = 1", &[], Some(1), serde_json::json!({})).unwrap();
        append_code(
            &mut nb,
            "while True: pass",
            &[],
            Some(2),
            serde_json::json!({"slurmlab": {"status": "cancelled"}}),
        )
        .unwrap();
        append_markdown(&mut nb, "note");
        let (cells, skipped) = restorable_cells(&nb);
        assert_eq!(cells, vec![(0, "x = 1".to_owned())]);
        assert_eq!(skipped, 1);
    }

    #[test]
    fn build_edit_and_round_trip_a_notebook() {
        let mut nb = new_notebook("python3", "Python 3", "python");
        let out = Output::Stream {
            name: "stdout".into(),
            text: "hi\n".into(),
        };
        assert_eq!(
            append_code(
                &mut nb,
                "print('hi')",
                &[out],
                Some(1),
                serde_json::json!({"slurmlab": {"execution_id": "e1"}})
            )
            .unwrap(),
            0
        );
        assert_eq!(append_markdown(&mut nb, "# Notes\nline two"), 1);
        append_code(&mut nb, "x = 1\ny = 2", &[], Some(2), Value::Null).unwrap();
        replace_code(&mut nb, -1, "x = 3", &[], Some(3)).unwrap();
        assert_eq!(
            code_cells(&nb),
            vec![(0, "print('hi')".to_owned()), (2, "x = 3".to_owned())]
        );
        assert!(resolve_index(&nb, 3).is_err() && resolve_index(&nb, -4).is_err());

        let json = to_json(&nb).unwrap();
        assert_eq!(
            (json["nbformat"].as_i64(), json["nbformat_minor"].as_i64()),
            (Some(4), Some(5))
        );
        assert!(
            json["cells"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["id"].as_str().is_some_and(|id| !id.is_empty()))
        );
        // nbformat writes multi-line strings as lists of lines.
        assert_eq!(
            json["cells"][0]["outputs"][0]["text"],
            serde_json::json!(["hi\n"])
        );
        assert_eq!(
            json["cells"][0]["metadata"]["slurmlab"]["execution_id"],
            "e1"
        );
        let back = from_json(&json).unwrap();
        assert_eq!(code_cells(&back), code_cells(&nb));
    }

    #[test]
    fn notebooks_without_cell_ids_are_repaired() {
        let v = serde_json::json!({
            "nbformat": 4, "nbformat_minor": 5, "metadata": {},
            "cells": [{"cell_type": "code", "metadata": {}, "execution_count": null, "source": ["a = 1\n", "a"], "outputs": []}]
        });
        let nb = from_json(&v).unwrap();
        assert_eq!(code_cells(&nb), vec![(0, "a = 1\na".to_owned())]);
        assert!(!nb.cells[0].id().as_str().is_empty());
    }
}
