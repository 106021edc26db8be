//! Standard Kubernetes conditions (`metav1.Condition`) and the one rule for updating
//! them: `lastTransitionTime` moves only when `status` changes.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Condition status values.
pub const TRUE: &str = "True";
/// Condition status values.
pub const FALSE: &str = "False";
/// Condition status values.
pub const UNKNOWN: &str = "Unknown";

/// Sets (adds or replaces) the condition of `new.type_` in `conditions`, keeping the old
/// `lastTransitionTime` when the status did not change. Returns true when anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            let changed = *old != new;
            *old = new;
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// Builds a condition stamped now.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// The condition of the given type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of the given type is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == TRUE)
}

/// True when the condition of the given type is present with status `False`.
pub fn is_false(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == FALSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(c: Condition, secs: i64) -> Condition {
        Condition {
            last_transition_time: Time(Timestamp::from_second(secs).unwrap()),
            ..c
        }
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conds = vec![];
        assert!(set_condition(
            &mut conds,
            at(condition("Ready", FALSE, "Queued", "m1", Some(1)), 10)
        ));
        // Same status, new message: changed, but the transition time stays.
        assert!(set_condition(
            &mut conds,
            at(condition("Ready", FALSE, "Queued", "m2", Some(1)), 20)
        ));
        assert_eq!(conds[0].last_transition_time.0.as_second(), 10);
        assert_eq!(conds[0].message, "m2");
        // Identical: nothing changed.
        assert!(!set_condition(
            &mut conds,
            at(condition("Ready", FALSE, "Queued", "m2", Some(1)), 30)
        ));
        // Status flips: the time moves.
        assert!(set_condition(
            &mut conds,
            at(condition("Ready", TRUE, "Ready", "ok", Some(1)), 40)
        ));
        assert_eq!(conds[0].last_transition_time.0.as_second(), 40);
        assert!(is_true(&conds, "Ready"));
        assert_eq!(conds.len(), 1);
    }
}
