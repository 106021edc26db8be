//! Objects of ours the controller cannot decode (written under another schema version,
//! a hand-edited status, a field beyond what the code can hold). Each is left alone —
//! nothing is submitted or cancelled for it — and reported once per version on the
//! object itself, naming the field, while every other object is reconciled as usual.
//!
//! Deleting one releases it: its finalizer is removed (the controller cannot read what
//! its finalizer would act on), and the orphan sweep cancels any job it had, as it does
//! for every job whose allocation is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::warn;

use super::context::Context;
use super::error::ReconcileError;
use super::metrics::Metrics;
use super::stores::Stores;
use crate::api::SlurmCluster;

/// The last version of each invalid object already reported (uid → resourceVersion), so
/// a re-trigger of the same version (a related object changed) does not repeat it.
#[derive(Default)]
pub struct Reported(Mutex<HashMap<String, String>>);

impl Reported {
    /// True the first time this uid is seen at this version.
    fn first(&self, uid: &str, version: &str) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(uid.to_owned(), version.to_owned()).as_deref() != Some(version)
    }

    /// Forgets a uid once its object decodes again or is gone.
    pub fn forget(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }
}

/// What to do with an object that did not decode: report it (once per version) and
/// wait for it to change; release it if it is being deleted.
pub async fn handle<K>(
    ctx: &Context,
    finalizer: &str,
    invalid: &InvalidObject,
) -> Result<Action, ReconcileError>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + std::fmt::Debug,
{
    let meta = &invalid.metadata;
    let kind = K::kind(&()).into_owned();
    let ns = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let api = dynamic_api::<K>(ctx, meta.namespace.as_deref());
    let uid = meta.uid.clone().unwrap_or_default();
    if meta.deletion_timestamp.is_some() {
        if let Some(index) = meta
            .finalizers
            .as_deref()
            .unwrap_or_default()
            .iter()
            .position(|f| f == finalizer)
        {
            warn!(kind, object = %format!("{ns}/{name}"), "releasing an object that cannot be decoded on deletion");
            // Test-then-remove: another controller's finalizer at that index stays.
            let path = format!("/metadata/finalizers/{index}");
            let patch: json_patch::Patch = serde_json::from_value(json!([
                {"op": "test", "path": path, "value": finalizer},
                {"op": "remove", "path": path},
            ]))
            .map_err(|e| ReconcileError::Other(e.to_string()))?;
            api.patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
                .await?;
            ctx.events
                .warning(
                    &reference(&invalid.metadata, &kind),
                    "InvalidObjectReleased",
                    format!("the controller cannot read this {kind} and released it on deletion; any SLURM job it had is cancelled by the orphan sweep"),
                )
                .await;
        }
        ctx.invalid.forget(&uid);
        return Ok(Action::await_change());
    }
    let version = meta.resource_version.clone().unwrap_or_default();
    if ctx.invalid.first(&uid, &version) {
        let what = locate::<K>(&api, &name)
            .await
            .unwrap_or_else(|| invalid.error.clone());
        warn!(kind, object = %format!("{ns}/{name}"), resource_version = %version, error = %what, "cannot decode; leaving it alone until it changes");
        ctx.events
            .warning(
                &reference(meta, &kind),
                "InvalidObject",
                format!("the controller cannot read this {kind}: {what}; nothing is done for it until it is fixed (kubectl edit) or deleted"),
            )
            .await;
    }
    Ok(Action::await_change())
}

/// The kind's objects as untyped JSON, in `namespace` or cluster-wide.
fn dynamic_api<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<K>(&());
    match namespace {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &resource),
        None => Api::all_with(ctx.client.clone(), &resource),
    }
}

fn reference(meta: &ObjectMeta, kind: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!("{}/{}", crate::api::GROUP, crate::api::VERSION)),
        kind: Some(kind.to_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    }
}

/// The path and error of the first field that does not decode, read from the object as
/// stored (the guard's own error names no field). `None` when it cannot be read again.
async fn locate<K: DeserializeOwned>(api: &Api<DynamicObject>, name: &str) -> Option<String> {
    let raw = serde_json::to_value(api.get(name).await.ok()?).ok()?;
    match serde_path_to_error::deserialize::<_, K>(raw) {
        Ok(_) => None,
        Err(e) => Some(format!("{}: {}", e.path(), e.inner())),
    }
}

/// Objects in a cache that do not decode.
fn undecodable<K>(objects: &[Arc<DeserializeGuard<K>>]) -> i64 {
    let n = objects.iter().filter(|o| o.0.is_err()).count();
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Keeps `slurmlab_invalid_objects{kind}` current from the caches (every 15 s; it never
/// ends).
pub async fn keep_gauges(
    stores: Stores,
    clusters: Store<DeserializeGuard<SlurmCluster>>,
    metrics: Arc<Metrics>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    loop {
        tick.tick().await;
        metrics.invalid_objects(
            "ComputeAllocation",
            undecodable(&stores.allocations.state()),
        );
        metrics.invalid_objects("JupyterSession", undecodable(&stores.sessions.state()));
        metrics.invalid_objects("SlurmCluster", undecodable(&clusters.state()));
    }
}
