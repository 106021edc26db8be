//! Tool inputs. Field docs become the JSON Schema descriptions agents read.

use schemars::JsonSchema;
use serde::Deserialize;

use super::sessions::ResourceRequest;

/// What every session start may say besides its notebook.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct StartOptions {
    /// A resource profile defined by the gateway's admin (see the server instructions).
    #[serde(default)]
    pub profile: Option<String>,
    /// Resources for a new allocation (override the profile).
    #[serde(default)]
    pub resources: Option<ResourceRequest>,
    /// Kubernetes namespace; defaults to the gateway's default namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// How long to wait for the session to be Ready (default: the gateway's start timeout;
    /// at most 24 hours).
    #[serde(default)]
    pub wait_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StartNewSession {
    /// A name for the experiment; it names the session and its notebook.
    pub experiment_name: String,
    #[serde(flatten)]
    pub options: StartOptions,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StartFromNotebook {
    /// A name for the experiment.
    pub experiment_name: String,
    /// The notebook to start from, relative to the notebook root (e.g. `fit.ipynb`).
    pub notebook_path: String,
    #[serde(flatten)]
    pub options: StartOptions,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecuteCode {
    /// The session (`namespace/name`, as start_new_session returned it).
    pub session_id: String,
    /// Python code to run in the session's kernel.
    pub code: String,
    /// Interrupt the run after this many seconds (default and maximum: the gateway's
    /// execution timeout).
    #[serde(default)]
    pub timeout: Option<u64>,
    /// Return `{status: "pending", execution_id}` if the run takes longer than this many
    /// seconds (default 30); poll it with get_execution_status/get_execution_result.
    #[serde(default)]
    pub sync_timeout: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecutionRef {
    /// An execution id returned by execute_code.
    pub execution_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListExecutions {
    /// Only runs of this session.
    #[serde(default)]
    pub session_id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SessionRef {
    /// The session (`namespace/name`).
    pub session_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadNotebook {
    /// The session (`namespace/name`).
    pub session_id: String,
    /// First cell of the page (default 0).
    #[serde(default)]
    pub offset: usize,
    /// Cells in the page (default 50, at most 500); `next_offset` in the answer starts the
    /// next page.
    pub limit: Option<usize>,
    /// Each cell's first source line and its number of outputs only: a survey of a big
    /// notebook (then read_cell for the cells that matter).
    #[serde(default)]
    pub brief: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct EditCell {
    /// The session (`namespace/name`, as start_new_session returned it).
    pub session_id: String,
    /// The cell to replace; negative counts from the end (-1 is the last cell).
    pub cell_index: i64,
    /// The new code; it is executed and its outputs replace the cell's.
    pub code: String,
    /// Interrupt the run after this many seconds (default and maximum: the gateway's
    /// execution timeout).
    #[serde(default)]
    pub timeout: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct AddMarkdown {
    /// The session (`namespace/name`, as start_new_session returned it).
    pub session_id: String,
    /// Markdown text for a new cell at the end of the notebook.
    pub markdown: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListFiles {
    /// The session (`namespace/name`, as start_new_session returned it).
    pub session_id: String,
    /// A directory relative to the notebook root (default: the root).
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadFile {
    /// The session (`namespace/name`, as start_new_session returned it).
    pub session_id: String,
    /// A file relative to the notebook root.
    pub path: String,
    /// Start at this byte of a text file (to page through long ones).
    #[serde(default)]
    pub offset: Option<usize>,
    /// Return at most this many bytes of text (default: the output limit).
    #[serde(default)]
    pub length: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct UploadFile {
    /// The session (`namespace/name`, as start_new_session returned it).
    pub session_id: String,
    /// Where to write, relative to the notebook root (parent directories are created).
    pub path: String,
    /// The file's content: text, or base64 when `encoding` is `base64`.
    pub content: String,
    /// `text` (default) or `base64`.
    #[serde(default)]
    pub encoding: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct NamespaceRef {
    /// Kubernetes namespace; defaults to the gateway's default namespace.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// The kind of a new cell.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NewCellType {
    #[default]
    Code,
    Markdown,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct InsertCell {
    /// The session (`namespace/name`, as start_new_session returned it).
    pub session_id: String,
    /// Where the new cell goes: 0 is first, the number of cells (or -1) is after the last.
    pub index: i64,
    /// `code` (default) or `markdown`.
    #[serde(default)]
    pub cell_type: NewCellType,
    /// The cell's source; a code cell is not executed (run_cell runs it).
    pub source: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CellRef {
    /// The session (`namespace/name`, as start_new_session returned it).
    pub session_id: String,
    /// The cell; negative counts from the end (-1 is the last cell).
    pub cell_index: i64,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunCell {
    /// The session (`namespace/name`, as start_new_session returned it).
    pub session_id: String,
    /// The code cell to run again as it is; negative counts from the end.
    pub cell_index: i64,
    /// Interrupt the run after this many seconds (default and maximum: the gateway's
    /// execution timeout).
    #[serde(default)]
    pub timeout: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct MoveCell {
    /// The session (`namespace/name`, as start_new_session returned it).
    pub session_id: String,
    /// The cell to move; negative counts from the end.
    pub from_index: i64,
    /// The index it ends up at; negative counts from the end.
    pub to_index: i64,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ClearOutputs {
    /// The session (`namespace/name`, as start_new_session returned it).
    pub session_id: String,
    /// Only this cell (negative counts from the end); default: every cell.
    #[serde(default)]
    pub cell_index: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ClusterRef {
    /// A SlurmCluster (default: the gateway's, else every one).
    #[serde(default)]
    pub cluster: Option<String>,
}
