//! The controller's job-tag key: 32 random bytes in a Secret of the controller's own
//! namespace, made by the first controller that starts and read by every later one (and
//! by the other replicas). Only the controller may read it: whoever holds it can forge
//! tags the controller trusts. Deleting the Secret makes every tag signed so far
//! unverifiable: those jobs are then never adopted or swept (cancel them by hand).

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use super::identity::TagKey;

/// Key of the bytes in the Secret.
pub const KEY: &str = "key";

/// Why the key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TagKeyError {
    #[error(
        "cannot read or create the job tag key Secret {namespace}/{name}: {source} (the controller needs get and create on Secrets in {namespace})"
    )]
    Kube {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error(
        "the job tag key Secret {namespace}/{name} is unusable: {why} (delete it to have a new one made; jobs signed with the old key are then left alone)"
    )]
    Invalid {
        namespace: String,
        name: String,
        why: String,
    },
}

/// The key in Secret `namespace/name`, created with fresh random bytes if absent.
pub async fn load_or_create(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<TagKey, TagKeyError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let kube_error = |source| TagKeyError::Kube {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source,
    };
    let secret = match api.get_opt(name).await.map_err(kube_error)? {
        Some(s) => s,
        None => {
            let mut bytes = vec![0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| TagKeyError::Invalid {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                why: format!("no randomness: {e}"),
            })?;
            let fresh = Secret {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    labels: Some(
                        [(
                            "app.kubernetes.io/managed-by".to_owned(),
                            "slurmlab".to_owned(),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                },
                type_: Some("Opaque".into()),
                data: Some([(KEY.to_owned(), ByteString(bytes))].into()),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &fresh).await {
                Ok(s) => s,
                // Another replica made it a moment ago: use that one.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    api.get(name).await.map_err(kube_error)?
                }
                Err(e) => return Err(kube_error(e)),
            }
        }
    };
    let bytes = secret
        .data
        .and_then(|mut d| d.remove(KEY))
        .map(|b| b.0)
        .unwrap_or_default();
    TagKey::new(bytes).map_err(|why| TagKeyError::Invalid {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        why,
    })
}
