//! Kubernetes clients: the gateway's own (TokenReview, token Secrets, cluster discovery)
//! and one per caller that impersonates them, so RBAC decides what each caller may do.
//!
//! Impersonation never reaches a privileged group: the gateway forwards only the caller's
//! groups an admin listed (`--impersonate-group`, which the chart's RBAC also names, so
//! the API server refuses any other), and never one under `system:`. The API server adds
//! `system:authenticated` to every impersonated user, and a service account's groups to
//! an impersonated service account, by itself.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::{Client, Config};

use super::GatewayError;
use super::identity::Caller;

/// Bound on cached impersonating clients; beyond it the cache starts over.
const MAX_CLIENTS: usize = 1_000;

/// A group the gateway may never act as, whatever the admin listed.
pub fn is_reserved_group(group: &str) -> bool {
    group.starts_with("system:")
}

/// The caller's groups the gateway impersonates: those in `allowed`, never a reserved one.
pub fn forwarded_groups(groups: &[String], allowed: &[String]) -> Vec<String> {
    groups
        .iter()
        .filter(|g| !is_reserved_group(g) && allowed.contains(g))
        .cloned()
        .collect()
}

/// Builds and caches per-caller clients.
pub struct KubeAccess {
    own: Client,
    config: Config,
    impersonate_groups: Vec<String>,
    clients: Mutex<HashMap<Caller, Client>>,
}

impl KubeAccess {
    /// `impersonate_groups`: the callers' groups RBAC may see (none under `system:`).
    pub fn new(config: Config, impersonate_groups: Vec<String>) -> Result<Self, GatewayError> {
        if let Some(g) = impersonate_groups.iter().find(|g| is_reserved_group(g)) {
            return Err(GatewayError::Invalid(format!(
                "--impersonate-group {g}: groups under system: are never impersonated (they \
                 include system:masters); bind the roles to a group of your own"
            )));
        }
        let own = Client::try_from(config.clone())
            .map_err(|e| GatewayError::Kube(format!("cannot build a client: {e}")))?;
        Ok(Self {
            own,
            config,
            impersonate_groups,
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
        let groups = forwarded_groups(groups, &self.impersonate_groups);
        config.auth_info.impersonate_groups = (!groups.is_empty()).then_some(groups);
        let client = Client::try_from(config)
            .map_err(|e| GatewayError::Kube(format!("cannot build a client for {name}: {e}")))?;
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(caller.clone(), client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn only_listed_groups_outside_system_are_impersonated() {
        let caller = strings(&["system:masters", "system:authenticated", "team-a", "team-b"]);
        assert_eq!(forwarded_groups(&caller, &[]), Vec::<String>::new());
        assert_eq!(
            forwarded_groups(&caller, &strings(&["team-a", "system:masters"])),
            strings(&["team-a"])
        );
    }

    #[test]
    fn a_system_group_cannot_be_allowed() {
        let config = Config::new("https://127.0.0.1:1".parse().unwrap());
        let e = KubeAccess::new(config, strings(&["system:masters"]))
            .err()
            .unwrap();
        assert!(e.to_string().contains("never impersonated"), "{e}");
    }
}
