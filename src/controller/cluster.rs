//! The SlurmCluster reconciler: reads the auth Secret, keeps one slurmrestd client and
//! poller per cluster, pings slurmrestd and reports reachability, API and SLURM
//! versions. A changed Secret is picked up at the next reconcile (every 30 s at most).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

use crate::api::conditions::{self, FALSE, TRUE};
use crate::api::fields::SecretKeyRef;
use crate::api::{
    CONDITION_JOBS_VISIBLE, CONDITION_REACHABLE, SlurmCluster, SlurmClusterSpec, SlurmClusterStatus,
};
use crate::slurm::poller::{Poller, PollerConfig};
use crate::slurm::{
    ClientConfig, DEFAULT_TOKEN_LIFETIME, RestClient, SlurmApi, TokenSource, VersionChoice,
};

use super::context::{ClusterHandle, Context};
use super::error::ReconcileError;

/// Partitions kept in a SlurmCluster's status (the CRD's bound).
const MAX_PARTITIONS: usize = 256;

fn partition_status(p: crate::slurm::PartitionInfo) -> crate::api::PartitionStatus {
    crate::api::PartitionStatus {
        name: p.name,
        state: p.state,
        nodes: p.nodes,
        cpus: p.cpus,
        idle_nodes: p.idle_nodes,
        idle_cpus: p.idle_cpus,
        max_time_minutes: p.max_time_minutes,
        gres: p.gres,
    }
}

/// Re-ping this often while not reachable (at most; see Settings::cluster_recheck).
const RETRY: Duration = Duration::from_secs(10);

pub async fn reconcile(
    guarded: Arc<DeserializeGuard<SlurmCluster>>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    // A cluster that cannot be decoded keeps what was known of it (its connection, if
    // any) and is reported; it has no finalizer to release.
    let cluster = match &guarded.0 {
        Ok(cluster) => cluster,
        Err(invalid) => return super::invalid::handle::<SlurmCluster>(&ctx, "", invalid).await,
    };
    let started = Instant::now();
    let result = reconcile_inner(cluster, &ctx).await;
    ctx.metrics
        .reconciled("SlurmCluster", result.is_ok(), started.elapsed());
    let uid = cluster.uid().unwrap_or_default();
    ctx.invalid.forget(&uid);
    if result.is_ok() {
        ctx.retries.succeeded(&uid);
    }
    result
}

async fn reconcile_inner(
    cluster: &SlurmCluster,
    ctx: &Arc<Context>,
) -> Result<Action, ReconcileError> {
    let name = cluster.name_any();
    if cluster.meta().deletion_timestamp.is_some() {
        ctx.clusters.remove(&name);
        return Ok(Action::await_change());
    }
    let previous = cluster.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    status.observed_generation = cluster.metadata.generation;
    let generation = cluster.metadata.generation;
    let url = cluster.spec.rest_api.url.clone();

    let outcome = match connect(cluster, ctx).await {
        Err(message) => Err(("ConfigurationError".to_owned(), message)),
        Ok(handle) => match handle.client.ping().await {
            Ok(ping) if ping.responding => {
                let version = handle.client.api_version().await.ok();
                status.api_version = version.map(|v| v.to_string());
                status.served_versions = handle.client.served_versions().await.unwrap_or_default();
                status.slurm_version = Some(ping.release.clone());
                status.last_ping = Some(Time(Timestamp::now()));
                // What agents survey before they ask for resources, at most every 30 s
                // whatever the ping interval; the last known figures stay in between and
                // when a read fails.
                if handle.partitions_due() {
                    match handle.client.partitions().await {
                        Ok(parts) => {
                            status.partitions = parts
                                .into_iter()
                                .take(MAX_PARTITIONS)
                                .map(partition_status)
                                .collect()
                        }
                        Err(e) => {
                            tracing::debug!(cluster = %name, error = %e, "cannot read partitions")
                        }
                    }
                }
                check_visibility(&handle, &mut status, generation).await;
                Ok(format!(
                    "slurmrestd at {url} answers: Slurm {}, REST API {}",
                    ping.release,
                    status.api_version.as_deref().unwrap_or("?")
                ))
            }
            Ok(ping) => Err((
                "SlurmctldNotResponding".to_owned(),
                format!(
                    "slurmrestd at {url} answers but slurmctld does not{}",
                    ping.status.map(|s| format!(" ({s})")).unwrap_or_default()
                ),
            )),
            Err(e) => {
                // A server that was upgraded may serve other versions now.
                handle.client.renegotiate().await;
                Err((camel(e.kind()), e.to_string()))
            }
        },
    };
    let reachable = outcome.is_ok();
    let (cond_status, reason, message) = match outcome {
        Ok(m) => (TRUE, "Pinged".to_owned(), m),
        Err((reason, m)) => (FALSE, reason, m),
    };
    let was = conditions::find(&previous.conditions, CONDITION_REACHABLE).map(|c| c.status.clone());
    conditions::set_condition(
        &mut status.conditions,
        conditions::condition(
            CONDITION_REACHABLE,
            cond_status,
            &reason,
            &message,
            generation,
        ),
    );
    status.message = Some(message.clone());

    let obj = cluster.object_ref(&());
    if was.as_deref() != Some(cond_status) {
        if reachable {
            info!(cluster = %name, "{message}");
            ctx.events.normal(&obj, "Reachable", &message).await;
        } else {
            warn!(cluster = %name, reason = %reason, "{message}");
            ctx.events.warning(&obj, &reason, &message).await;
        }
    }
    if status != previous {
        patch_status(ctx, &name, &status).await?;
    }
    let recheck = ctx.settings.cluster_recheck;
    Ok(Action::requeue(if reachable {
        recheck
    } else {
        recheck.min(RETRY)
    }))
}

/// Probes whether the service user sees other users' jobs when due, and reports the
/// latest verdict as the JobsVisible condition.
async fn check_visibility(
    handle: &ClusterHandle,
    status: &mut SlurmClusterStatus,
    generation: Option<i64>,
) {
    use super::visibility::{self, Visibility};
    let due = handle
        .visibility
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .due(Instant::now());
    if due {
        let verdict = match visibility::probe_user(
            &handle.spec,
            &handle.service_user,
            handle.token_user.as_deref(),
        ) {
            None => Visibility::Visible(format!(
                "every job runs as the service user {}",
                handle.service_user
            )),
            Some(tenant) => {
                visibility::probe(
                    handle.client.as_ref(),
                    &handle.spec,
                    &handle.service_user,
                    &tenant,
                )
                .await
            }
        };
        match &verdict {
            Visibility::Hidden(m) | Visibility::ProbeFailed(m) => {
                warn!(cluster = %handle.name, "{m}")
            }
            _ => {}
        }
        let mut state = handle.visibility.lock().unwrap_or_else(|p| p.into_inner());
        state.verdict = verdict;
        state.probed = Some(Instant::now());
    }
    let (cond, reason, message) = handle
        .visibility
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .verdict
        .condition();
    conditions::set_condition(
        &mut status.conditions,
        conditions::condition(CONDITION_JOBS_VISIBLE, cond, reason, &message, generation),
    );
}

async fn patch_status(
    ctx: &Context,
    name: &str,
    status: &SlurmClusterStatus,
) -> Result<(), kube::Error> {
    let api: Api<SlurmCluster> = Api::all(ctx.client.clone());
    super::writes::apply_status(&api, name, "SlurmCluster", status)
        .await
        .map(|_| ())
}

/// "auth_refused" → "AuthRefused".
fn camel(kind: &str) -> String {
    kind.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// Reads one key of a Secret.
pub async fn read_secret_key(client: &kube::Client, r: &SecretKeyRef) -> Result<Vec<u8>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &r.namespace);
    let secret = api
        .get_opt(&r.name)
        .await
        .map_err(|e| format!("cannot read Secret {}/{}: {e}", r.namespace, r.name))?
        .ok_or_else(|| {
            format!(
                "Secret {}/{} does not exist: create it or fix the reference",
                r.namespace, r.name
            )
        })?;
    secret
        .data
        .and_then(|d| d.get(&r.key).map(|b| b.0.clone()))
        .filter(|b| !b.is_empty())
        .ok_or_else(|| {
            format!(
                "Secret {}/{} has no (or an empty) key {:?}",
                r.namespace, r.name, r.key
            )
        })
}

/// The SLURM user a static token acts as, from its `sun` claim (no signature check: the
/// token is only forwarded, slurmctld checks it).
pub fn token_user(token: &str) -> Option<String> {
    let payload = token.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("sun")?.as_str().map(str::to_owned)
}

/// Returns the cluster's handle, creating or updating it when the spec or the Secret
/// changed. Errors are messages for the status.
async fn connect(cluster: &SlurmCluster, ctx: &Arc<Context>) -> Result<Arc<ClusterHandle>, String> {
    let name = cluster.name_any();
    let spec = &cluster.spec;
    let (secret_ref, is_jwt) = match (&spec.auth.jwt_key_secret_ref, &spec.auth.token_secret_ref) {
        (Some(r), None) => (r, true),
        (None, Some(r)) => (r, false),
        _ => return Err("set exactly one of auth.jwtKeySecretRef and auth.tokenSecretRef".into()),
    };
    let secret = read_secret_key(&ctx.client, secret_ref).await?;
    let ca = match &spec.rest_api.ca_secret_ref {
        Some(r) => Some(read_secret_key(&ctx.client, r).await?),
        None => None,
    };
    let fingerprint = hash_of(&(
        serde_json::to_string(spec).unwrap_or_default(),
        &ca,
        cluster.uid(),
    ));
    let secret_hash = hash_of(&secret);
    let existing = ctx.clusters.get(&name);
    if let Some(h) = &existing
        && h.fingerprint == fingerprint
    {
        if h.secret_hash.swap(secret_hash, Ordering::Relaxed) != secret_hash {
            // Same configuration, new credentials: swap them in place.
            info!(cluster = %name, "the auth Secret changed; using the new credentials");
            h.client.replace_secret(secret);
        }
        return Ok(h.clone());
    }

    if let Some(problem) = super::request::mapping_problem(spec) {
        return Err(problem);
    }
    let (auth, token_user) = if is_jwt {
        let lifetime = spec
            .auth
            .token_lifetime
            .as_ref()
            .map(|d| d.to_std())
            .transpose()
            .map_err(|e| e.to_string())?;
        (
            TokenSource::jwt_key(secret.clone(), lifetime.unwrap_or(DEFAULT_TOKEN_LIFETIME)),
            None,
        )
    } else {
        let token = String::from_utf8_lossy(&secret).trim().to_owned();
        let user = token_user(&token).or_else(|| spec.user_mapping.default_user.clone()).ok_or_else(|| {
            "cannot tell which SLURM user the token acts as (it is not a JWT with a `sun` claim): set userMapping.defaultUser".to_owned()
        })?;
        (TokenSource::fixed(user.clone(), token), Some(user))
    };
    let service_user = token_user
        .clone()
        .or_else(|| spec.user_mapping.default_user.clone())
        .or_else(|| spec.user_mapping.allowed_users.first().cloned())
        .ok_or_else(|| {
            "set userMapping.defaultUser: the controller reads job states as that SLURM user"
                .to_owned()
        })?;
    let version: VersionChoice = spec
        .rest_api
        .version
        .parse()
        .map_err(|e: crate::slurm::version::UnknownVersion| e.to_string())?;
    let mut cfg = ClientConfig::new(&name, &spec.rest_api.url, auth, service_user.clone());
    cfg.version = version;
    cfg.ca_pem = ca;
    cfg.requests_per_second = spec
        .polling
        .requests_per_second
        .map_or(5, |r| r.max(1) as u32);
    let client =
        Arc::new(RestClient::new(cfg, ctx.metrics.slurm.clone()).map_err(|e| e.to_string())?);
    let poller_cfg = poller_config(spec)?;
    let poller = Poller::with_metrics(client.clone(), poller_cfg, Some(ctx.metrics.slurm.clone()));
    if let Some(old) = &existing {
        for id in old.poller.tracked() {
            poller.track(id);
        }
    }
    let tasks = vec![
        tokio::spawn(poller.clone().run(std::future::pending())),
        tokio::spawn(forward_events(
            name.clone(),
            poller.clone(),
            Arc::downgrade(ctx),
        )),
        tokio::spawn(super::orphans::sweep_forever(
            name.clone(),
            cluster.uid().unwrap_or_default(),
            client.clone(),
            Arc::downgrade(ctx),
        )),
    ];
    info!(cluster = %name, url = %spec.rest_api.url, "connected a slurmrestd client");
    let handle = Arc::new(ClusterHandle {
        name,
        uid: cluster.uid().unwrap_or_default(),
        spec: spec.clone(),
        client,
        poller,
        token_user,
        fingerprint,
        secret_hash: AtomicU64::new(secret_hash),
        partitions_read: std::sync::Mutex::new(None),
        service_user,
        visibility: Default::default(),
        users: std::sync::Mutex::new(
            existing
                .as_ref()
                .map(|old| old.users.lock().unwrap_or_else(|p| p.into_inner()).clone())
                .unwrap_or_default(),
        ),
        tasks,
    });
    ctx.clusters.insert(handle.clone());
    Ok(handle)
}

fn poller_config(spec: &SlurmClusterSpec) -> Result<PollerConfig, String> {
    let mut cfg = PollerConfig {
        // A job that reported its endpoint has started: no more reads every round.
        started: |job| {
            job.comment
                .as_deref()
                .is_some_and(|c| super::identity::parse_comment(c).endpoint.is_some())
        },
        ..PollerConfig::default()
    };
    if let Some(d) = &spec.polling.interval {
        cfg.interval = d.to_std().map_err(|e| e.to_string())?;
    }
    if let Some(d) = &spec.polling.active_interval {
        cfg.active_interval = d.to_std().map_err(|e| e.to_string())?;
    }
    if let Some(d) = &spec.polling.running_refresh {
        cfg.running_refresh = d.to_std().map_err(|e| e.to_string())?;
    }
    Ok(cfg)
}

/// Turns poller events into reconciles of the allocations that own the jobs.
async fn forward_events(cluster: String, poller: Arc<Poller>, ctx: Weak<Context>) {
    let mut rx = poller.subscribe();
    loop {
        match rx.recv().await {
            Ok(event) => {
                let Some(ctx) = ctx.upgrade() else { return };
                if let Some(owner) = ctx.job_owner(&cluster, event.job_id()) {
                    let _ = ctx.allocation_trigger.unbounded_send(owner);
                }
            }
            // Missed events: the allocations' periodic requeue catches up.
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_user_of_a_slurm_token() {
        let token = crate::slurm::jwt::mint(b"k", "alice", 1, 60);
        assert_eq!(token_user(&token).as_deref(), Some("alice"));
        assert_eq!(token_user("not a jwt"), None);
        assert_eq!(camel("auth_refused"), "AuthRefused");
    }
}
