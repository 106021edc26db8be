//! `get_workspace`: the user's variables, listed by a snippet run in the kernel without
//! entering its history or the notebook.

use serde_json::Value;

use super::GatewayError;
use crate::jupyter::Output;

/// Prints one JSON line after a marker: name, type, shape/length and a short preview of
/// each user variable (modules, functions, classes and IPython's own names left out).
pub const SNIPPET: &str = r#"
def __slurmlab_workspace():
    import json, types
    skip = {"In", "Out", "exit", "quit", "get_ipython"}
    out = []
    for name, value in list(globals().items()):
        if name.startswith("_") or name in skip:
            continue
        if isinstance(value, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)):
            continue
        entry = {"name": name, "type": type(value).__module__ + "." + type(value).__qualname__}
        entry["type"] = entry["type"].removeprefix("builtins.")
        shape = getattr(value, "shape", None)
        if shape is not None:
            try:
                entry["shape"] = list(shape)
            except TypeError:
                pass
        elif hasattr(value, "__len__"):
            try:
                entry["length"] = len(value)
            except Exception:
                pass
        try:
            preview = repr(value)
        except Exception as e:
            preview = "<repr failed: %s>" % e
        entry["preview"] = preview if len(preview) <= 120 else preview[:117] + "..."
        out.append(entry)
    print("__SLURMLAB_WORKSPACE__" + json.dumps(out))
__slurmlab_workspace()
del __slurmlab_workspace
"#;

const MARKER: &str = "__SLURMLAB_WORKSPACE__";

/// The variables the snippet printed.
pub fn parse(outputs: &[Output]) -> Result<Value, GatewayError> {
    for o in outputs {
        match o {
            Output::Stream { text, .. } => {
                if let Some(line) = text.lines().find_map(|l| l.strip_prefix(MARKER)) {
                    return serde_json::from_str(line).map_err(|e| {
                        GatewayError::Failed(format!("the workspace listing was unreadable: {e}"))
                    });
                }
            }
            Output::Error { ename, evalue, .. } => {
                return Err(GatewayError::Failed(format!(
                    "listing the workspace failed in the kernel: {ename}: {evalue}"
                )));
            }
            _ => {}
        }
    }
    Err(GatewayError::Failed(
        "the kernel printed no workspace listing (is it a Python kernel?)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_is_read_from_stdout() {
        let outputs = vec![Output::Stream {
            name: "stdout".into(),
            text: format!("{MARKER}[{{\"name\": \"x\", \"type\": \"int\", \"preview\": \"1\"}}]\n"),
        }];
        let v = parse(&outputs).unwrap();
        assert_eq!(v[0]["name"], "x");
        assert!(parse(&[]).is_err());
    }
}
