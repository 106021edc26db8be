//! Kubernetes Events for the transitions a person wants to see in `kubectl describe`.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::warn;

/// Events about cluster-scoped objects go here: the one namespace every API server
/// version accepts for them (1.20 refuses `default`).
const CLUSTER_EVENTS_NAMESPACE: &str = "kube-system";
const CONTROLLER: &str = "slurmlab-controller";

/// Publishes events as the controller.
#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    instance: String,
    recorder: Recorder,
}

impl Events {
    pub fn new(client: kube::Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER.into(),
            instance: instance.clone(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            instance: instance.unwrap_or_else(|| CONTROLLER.into()),
        }
    }

    /// A normal event; failures to publish are logged, never fatal.
    pub async fn normal(&self, obj: &ObjectReference, reason: &str, note: impl Into<String>) {
        self.publish(obj, EventType::Normal, reason, note.into())
            .await;
    }

    /// A warning event.
    pub async fn warning(&self, obj: &ObjectReference, reason: &str, note: impl Into<String>) {
        self.publish(obj, EventType::Warning, reason, note.into())
            .await;
    }

    async fn publish(&self, obj: &ObjectReference, type_: EventType, reason: &str, note: String) {
        // The API caps notes at 1 kB.
        let note: String = note.chars().take(1000).collect();
        let result = if obj.namespace.is_none() {
            self.publish_cluster_scoped(obj, type_, reason, note).await
        } else {
            let event = Event {
                type_,
                reason: reason.into(),
                note: Some(note),
                action: reason.into(),
                secondary: None,
            };
            self.recorder.publish(&event, obj).await
        };
        if let Err(e) = result {
            warn!(reason, object = ?obj.name, error = %e, "could not publish an event");
        }
    }

    async fn publish_cluster_scoped(
        &self,
        obj: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let event = EventV1 {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    obj.name.as_deref().unwrap_or(CONTROLLER),
                    now.as_nanosecond()
                )),
                namespace: Some(CLUSTER_EVENTS_NAMESPACE.into()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(reason.into()),
            reason: Some(reason.into()),
            note: Some(note),
            regarding: Some(obj.clone()),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(match type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            ..Default::default()
        };
        Api::<EventV1>::namespaced(self.client.clone(), CLUSTER_EVENTS_NAMESPACE)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}
