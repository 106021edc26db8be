//! Which sessions belong to which allocation. One set of rules for everyone who counts:
//! the controller's capacity check and session counter, the trigger that wakes a
//! session when its allocation changes, and the gateway's choice of an allocation to
//! reuse.

use super::{JupyterSession, SessionPhase};

/// Name of the allocation a session with `allocationTemplate` owns.
pub fn owned_allocation_name(session: &str) -> String {
    format!("{session}-alloc")
}

/// Whether a session in this phase holds (or is about to hold) a place on its allocation.
pub fn holds_a_place(phase: SessionPhase) -> bool {
    matches!(
        phase,
        SessionPhase::Starting | SessionPhase::Restoring | SessionPhase::Ready
    )
}

/// Whether a session in this phase has ended for good (it will not take a place again
/// unless its spec changes).
pub fn has_ended(phase: SessionPhase) -> bool {
    matches!(
        phase,
        SessionPhase::Terminated | SessionPhase::Failed | SessionPhase::Lost
    )
}

/// The allocation `session` holds a place on, if any: the one its status runs on, while
/// its phase holds a place. This is what capacity (`spec.maxSessions`) counts.
pub fn place_of(session: &JupyterSession) -> Option<&str> {
    let status = session.status.as_ref()?;
    holds_a_place(status.phase)
        .then_some(status.allocation.as_deref())
        .flatten()
}

/// Whether `session` is spoken for on `allocation`: a live session that runs on it or
/// references it and has not ended, so it holds a place or will ask for one. What a
/// caller choosing an allocation to share must count (a Pending session will start).
pub fn spoken_for(session: &JupyterSession, allocation: &str) -> bool {
    if session.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let status = session.status.as_ref();
    if status.is_some_and(|s| has_ended(s.phase)) {
        return false;
    }
    session.spec.allocation_ref.as_deref() == Some(allocation)
        || status.and_then(|s| s.allocation.as_deref()) == Some(allocation)
}

/// Whether a change of `allocation` concerns `session`: it references the allocation,
/// runs on it, or owns it through its template.
pub fn concerns(session: &JupyterSession, session_name: &str, allocation: &str) -> bool {
    session.spec.allocation_ref.as_deref() == Some(allocation)
        || session
            .status
            .as_ref()
            .and_then(|s| s.allocation.as_deref())
            == Some(allocation)
        || (session.spec.allocation_template.is_some()
            && owned_allocation_name(session_name) == allocation)
}

/// The places taken on `allocation` among `sessions`, leaving out the session named
/// `except` (the one asking).
pub fn places_taken<'a>(
    sessions: impl IntoIterator<Item = &'a JupyterSession>,
    allocation: &str,
    except: Option<&str>,
) -> usize {
    sessions
        .into_iter()
        .filter(|s| except.is_none_or(|e| s.metadata.name.as_deref() != Some(e)))
        .filter(|s| place_of(s) == Some(allocation))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::JupyterSessionStatus;
    use serde_json::json;

    fn session(
        name: &str,
        alloc_ref: Option<&str>,
        status: Option<(&str, SessionPhase)>,
    ) -> JupyterSession {
        let mut s: JupyterSession = serde_json::from_value(json!({
            "apiVersion": "slurmlab.io/v1alpha1", "kind": "JupyterSession",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"allocationRef": alloc_ref, "kernel": "python3", "notebook": {"mode": "New"}},
        }))
        .expect("a valid session");
        s.status = status.map(|(a, phase)| JupyterSessionStatus {
            allocation: Some(a.to_owned()),
            phase,
            ..Default::default()
        });
        s
    }

    #[test]
    fn capacity_counts_sessions_running_on_the_allocation_in_a_place_holding_phase() {
        let all = [
            session("a", Some("x"), Some(("x", SessionPhase::Ready))),
            session("b", Some("x"), Some(("x", SessionPhase::Starting))),
            session("c", Some("x"), Some(("x", SessionPhase::Restoring))),
            session("d", Some("x"), Some(("x", SessionPhase::Pending))),
            session("e", Some("x"), Some(("x", SessionPhase::Lost))),
            session("f", Some("x"), None),
            session("g", Some("y"), Some(("y", SessionPhase::Ready))),
        ];
        assert_eq!(places_taken(&all, "x", None), 3);
        assert_eq!(places_taken(&all, "x", Some("a")), 2);
        assert_eq!(places_taken(&all, "x", Some("d")), 3);
        assert_eq!(places_taken(&all, "y", None), 1);
        assert_eq!(places_taken(&all, "z", None), 0);
    }

    #[test]
    fn a_pending_session_is_spoken_for_but_an_ended_or_deleted_one_is_not() {
        assert!(spoken_for(&session("a", Some("x"), None), "x"));
        assert!(spoken_for(
            &session("a", Some("x"), Some(("x", SessionPhase::Pending))),
            "x"
        ));
        assert!(!spoken_for(
            &session("a", Some("x"), Some(("x", SessionPhase::Failed))),
            "x"
        ));
        assert!(!spoken_for(&session("a", Some("y"), None), "x"));
        let mut deleted = session("a", Some("x"), None);
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert!(!spoken_for(&deleted, "x"));
    }

    #[test]
    fn an_allocation_concerns_the_sessions_that_name_it_run_on_it_or_own_it() {
        assert!(concerns(&session("a", Some("x"), None), "a", "x"));
        assert!(concerns(
            &session("a", None, Some(("x", SessionPhase::Ready))),
            "a",
            "x"
        ));
        assert!(!concerns(&session("a", Some("y"), None), "a", "x"));
        let mut templated = session("a", None, None);
        templated.spec.allocation_template =
            Some(serde_json::from_value(json!({"clusterRef": "c"})).expect("a valid template"));
        assert!(concerns(&templated, "a", "a-alloc"));
        assert!(!concerns(&templated, "a", "x"));
    }
}
