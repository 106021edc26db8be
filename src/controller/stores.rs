//! The controller's caches of ComputeAllocations and JupyterSessions (those of the two
//! main controllers), read by both reconcilers instead of listing the API server on
//! every pass, so a namespace with thousands of sessions costs watches, not a LIST per
//! reconcile.
//!
//! Objects are held as [`DeserializeGuard`]s: one the controller cannot decode (a newer
//! or older schema, a hand-edited status) is kept as its metadata and the error, and
//! every other object is served as usual.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::warn;

use crate::api::{ComputeAllocation, JupyterSession};

/// How long a count waits for the cache to show a claim just written before the next
/// count falls back to the API server.
pub const CATCH_UP_BOUND: Duration = Duration::from_secs(5);
/// How often a wait for the cache to show a write looks again.
const CATCH_UP_POLL: Duration = Duration::from_millis(10);

pub type GuardedAllocation = DeserializeGuard<ComputeAllocation>;
pub type GuardedSession = DeserializeGuard<JupyterSession>;

/// Read handles of the two caches, and whether each holds a full first listing.
///
/// Readiness is tracked here, not through `Store::wait_until_ready`: that wakes only the
/// last of several concurrent waiters (it rests on one oneshot channel), and the
/// controllers' own runners wait on it already.
#[derive(Clone)]
pub struct Stores {
    pub allocations: Store<GuardedAllocation>,
    pub sessions: Store<GuardedSession>,
    allocations_ready: watch::Receiver<bool>,
    sessions_ready: watch::Receiver<bool>,
}

/// A stream of changed objects that fills a cache.
pub type Feed<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// The watch streams that fill the caches, to drive as the controllers' main triggers.
pub struct Feeds {
    pub allocations: Feed<GuardedAllocation>,
    pub sessions: Feed<GuardedSession>,
}

/// Builds both caches over `allocations` and `sessions`.
pub fn start(
    allocations: Api<GuardedAllocation>,
    sessions: Api<GuardedSession>,
) -> (Stores, Feeds) {
    let (alloc_store, alloc_ready, alloc_feed) = reflected(allocations);
    let (session_store, session_ready, session_feed) = reflected(sessions);
    let stores = Stores {
        allocations: alloc_store,
        sessions: session_store,
        allocations_ready: alloc_ready,
        sessions_ready: session_ready,
    };
    let feeds = Feeds {
        allocations: alloc_feed,
        sessions: session_feed,
    };
    (stores, feeds)
}

/// A cache of `api`'s objects, a flag set once it holds a full first listing, and the
/// stream of changed objects that fills it.
fn reflected<K>(api: Api<K>) -> (Store<K>, watch::Receiver<bool>, Feed<K>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let (reader, writer) = reflector::store();
    let (ready_tx, ready_rx) = watch::channel(false);
    let feed = reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    )
    .inspect(move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            ready_tx.send_replace(true);
        }
    })
    .applied_objects()
    .boxed();
    (reader, ready_rx, feed)
}

impl Stores {
    /// Waits until both caches hold a full first listing (a quota or a capacity counted
    /// from a half-filled cache would admit too much).
    pub async fn ready(&self) -> Result<(), watch::error::RecvError> {
        self.allocations_ready
            .clone()
            .wait_for(|ready| *ready)
            .await?;
        self.sessions_ready.clone().wait_for(|ready| *ready).await?;
        Ok(())
    }

    /// The decodable sessions of `namespace`.
    pub fn sessions_in(&self, namespace: &str) -> Vec<Arc<GuardedSession>> {
        self.sessions
            .state_filter(|s| s.meta().namespace.as_deref() == Some(namespace))
    }

    /// The allocation `namespace/name` as cached: `None` when absent, `Some(Err)` when
    /// it cannot be decoded.
    pub fn allocation(&self, namespace: &str, name: &str) -> Option<Arc<GuardedAllocation>> {
        self.allocations
            .get(&ObjectRef::new(name).within(namespace))
    }

    /// The allocations of `namespace`, decodable or not.
    pub fn allocations_in(&self, namespace: &str) -> Vec<Arc<GuardedAllocation>> {
        self.allocations
            .state_filter(|a| a.meta().namespace.as_deref() == Some(namespace))
    }
}

/// Waits (at most `bound`) until `store` shows `key` at `resource_version` or later (or
/// gone), so the next count read from it includes a write just made. Returns whether it
/// did; a watch that lags longer than `bound` is reported and the caller goes on.
/// "Later" compares resource versions as numbers, which is what the API server hands
/// out (etcd revisions); an unparsable one must match exactly.
pub async fn catch_up<K>(
    store: &Store<K>,
    key: &ObjectRef<K>,
    resource_version: Option<&str>,
    bound: Duration,
) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let Some(wanted) = resource_version else {
        return false;
    };
    let seen = |store: &Store<K>| {
        store.get(key).is_none_or(|o| {
            let have = o.resource_version();
            match (
                have.as_deref().map(str::parse::<u64>),
                wanted.parse::<u64>(),
            ) {
                (Some(Ok(have)), Ok(wanted)) => have >= wanted,
                _ => have.as_deref() == Some(wanted),
            }
        })
    };
    let deadline = tokio::time::Instant::now() + bound;
    while !seen(store) {
        if tokio::time::Instant::now() >= deadline {
            warn!(object = %key, "the watch has not shown our own write yet; going on");
            return false;
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
    true
}
