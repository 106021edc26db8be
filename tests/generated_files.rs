//! Generated files in the repository are what the code generates now.

use std::path::Path;

/// Fails unless `rel` (from the repository root) holds exactly `want`.
fn assert_current(rel: &str, want: &str, how: &str) {
    let have = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_default();
    assert!(
        have == want,
        "{rel} is stale: run `{how}` and commit the result"
    );
}

#[test]
fn crds_directory_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let crds = slurmlab::api::all_crds();
    let mut expected: Vec<String> = crds.iter().map(slurmlab::api::crd_file_name).collect();
    expected.push("kustomization.yaml".into());
    assert_current(
        "crds/kustomization.yaml",
        &slurmlab::api::crds_kustomization(&crds),
        "make crds",
    );
    for crd in &crds {
        let name = slurmlab::api::crd_file_name(crd);
        let want = slurmlab::api::crd_yaml(crd).expect("CRD renders");
        assert_current(&format!("crds/{name}"), &want, "make crds");
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    present.sort();
    expected.sort();
    assert_eq!(
        present, expected,
        "crds/ holds files no CRD generates: remove them"
    );
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/slurmlab/crds");
    let crds = slurmlab::api::all_crds();
    for crd in &crds {
        let name = slurmlab::api::crd_file_name(crd);
        let want = slurmlab::api::crd_yaml(crd).expect("CRD renders");
        assert_current(&format!("charts/slurmlab/crds/{name}"), &want, "make crds");
    }
    let present = std::fs::read_dir(&dir)
        .expect("the chart has crds/")
        .count();
    assert_eq!(
        present,
        crds.len(),
        "charts/slurmlab/crds holds files no CRD generates"
    );
}

#[test]
fn reference_docs_are_current() {
    for (name, want) in slurmlab::reference::pages() {
        assert_current(&format!("docs/reference/{name}"), &want, "make docs");
    }
}
