//! Kubernetes clients: the gateway's own (TokenReview, token Secrets, cluster discovery)
//! and one per caller that impersonates them, so RBAC decides what each caller may do.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::{Client, Config};

use super::GatewayError;
use super::identity::Caller;

/// Bound on cached impersonating clients; beyond it the cache starts over.
const MAX_CLIENTS: usize = 1_000;

/// Builds and caches per-caller clients.
pub struct KubeAccess {
    own: Client,
    config: Config,
    clients: Mutex<HashMap<Caller, Client>>,
}

impl KubeAccess {
    pub fn new(config: Config) -> Result<Self, GatewayError> {
        let own = Client::try_from(config.clone())
            .map_err(|e| GatewayError::Kube(format!("cannot build a client: {e}")))?;
        Ok(Self {
            own,
            config,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The gateway's own identity (service account or local kubeconfig).
    pub fn own(&self) -> Client {
        self.own.clone()
    }

    /// A client acting as `caller`.
    pub fn client_for(&self, caller: &Caller) -> Result<Client, GatewayError> {
        let Caller::User { name, groups } = caller else {
            return Ok(self.own.clone());
        };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(caller) {
            return Ok(c.clone());
        }
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(name.clone());
        config.auth_info.impersonate_groups = (!groups.is_empty()).then(|| groups.clone());
        let client = Client::try_from(config)
            .map_err(|e| GatewayError::Kube(format!("cannot build a client for {name}: {e}")))?;
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(caller.clone(), client.clone());
        Ok(client)
    }
}
