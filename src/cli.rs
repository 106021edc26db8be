//! Subcommands that are not long-running services.

use std::io::Write;
use std::path::Path;

use crate::api;

/// Failure of `slurmlab crds`.
#[derive(Debug, thiserror::Error)]
pub enum CrdsError {
    #[error("could not render a CRD as YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("could not write {path}: {source} (does the directory exist and is it writable?)")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Prints every CRD as a YAML stream, or writes one file per CRD into `output_dir`.
pub fn crds(output_dir: Option<&Path>) -> Result<(), CrdsError> {
    let crds = api::all_crds();
    match output_dir {
        Some(dir) => {
            let write = |name: String, text: String| {
                let path = dir.join(name);
                std::fs::write(&path, text).map_err(|source| CrdsError::Write {
                    path: path.display().to_string(),
                    source,
                })
            };
            for crd in &crds {
                write(api::crd_file_name(crd), api::crd_yaml(crd)?)?;
            }
            write("kustomization.yaml".into(), api::crds_kustomization(&crds))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            for crd in &crds {
                let write = writeln!(out, "---\n{}", api::crd_yaml(crd)?);
                write.map_err(|source| CrdsError::Write {
                    path: "stdout".into(),
                    source,
                })?;
            }
        }
    }
    Ok(())
}
