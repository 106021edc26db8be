//! Taking over the runs a previous gateway process left going (written down by
//! `journal`): each goes on under its old id, as its owner, so `get_execution_result`,
//! `tasks/get` and the notebook see it end as if the gateway had never stopped.

use std::sync::Arc;

use super::GatewayError;
use super::journal::{JournalFile, Registry, RunRecord};
use super::live::Access;
use super::sessions::SessionId;
use super::state::GatewayState;
use crate::jupyter::notebook;

/// What a start-up take-over did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TakenOver {
    /// Runs followed on under their ids.
    pub resumed: usize,
    /// Runs whose cell the previous process had recorded before it stopped.
    pub already_recorded: usize,
    /// Runs that could not be taken over (session gone, owner's access revoked, …).
    pub lost: usize,
}

impl TakenOver {
    pub fn total(&self) -> usize {
        self.resumed + self.already_recorded + self.lost
    }
}

/// Takes over every recorded run; returns once each resumed run holds its kernel's
/// channel (so no new run can take the messages Jupyter kept for it).
pub async fn take_over(state: &Arc<GatewayState>) -> TakenOver {
    let mut taken = TakenOver::default();
    let Some(registry) = state.executions.registry().cloned() else {
        return taken;
    };
    let (records, unreadable) = match registry.list().await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the runs of the previous gateway process");
            return taken;
        }
    };
    for key in unreadable {
        tracing::warn!(key, "dropping an unreadable run record");
        let _ = registry.remove(&key).await;
    }
    for record in records {
        match take(state, &registry, &record).await {
            Ok(Taken::Resumed) => taken.resumed += 1,
            Ok(Taken::AlreadyRecorded) => taken.already_recorded += 1,
            Err(e) => {
                taken.lost += 1;
                tracing::warn!(execution = %record.id, session = %record.session, error = %e, "cannot take over a run of the previous gateway process");
                let _ = registry.remove(&record.id).await;
            }
        }
    }
    taken
}

enum Taken {
    Resumed,
    AlreadyRecorded,
}

async fn take(
    state: &Arc<GatewayState>,
    registry: &Registry,
    record: &RunRecord,
) -> Result<Taken, GatewayError> {
    let id = SessionId::parse(&record.session, &state.settings.default_namespace)?;
    // As the owner: a run is taken over only for someone who may still run code there.
    let client = state.access.client_for(&record.owner)?;
    let live = state
        .live
        .get(client, &record.owner, &id, Access::Exec)
        .await?;
    if live.kernel_id != record.kernel_id {
        return Err(GatewayError::Failed(format!(
            "the session's kernel was replaced ({} → {})",
            record.kernel_id, live.kernel_id
        )));
    }
    let nb = live.notebook.read().await?;
    let recorded = notebook::to_json(&nb)
        .ok()
        .and_then(|v| v["cells"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .any(|c| c["metadata"]["slurmlab"]["execution_id"] == record.id.as_str());
    if recorded {
        super::journal::forget(registry, &live.server, record).await;
        return Ok(Taken::AlreadyRecorded);
    }
    let model = live.server.get(&record.journal_path(), true).await?;
    let file: JournalFile = model
        .content
        .as_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .filter(|f: &JournalFile| f.id == record.id)
        .ok_or_else(|| {
            GatewayError::Failed(format!(
                "the journal {} is unreadable",
                record.journal_path()
            ))
        })?;
    state.executions.resume(live, record.clone(), file).await;
    Ok(Taken::Resumed)
}
