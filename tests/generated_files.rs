//! Generated files in the repository are what the code generates now.

use std::path::Path;

#[test]
fn crds_directory_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let crds = slurmlab::api::all_crds();
    let mut expected: Vec<String> = crds.iter().map(slurmlab::api::crd_file_name).collect();
    expected.push("kustomization.yaml".into());
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap_or_default();
    assert!(
        kustomization == slurmlab::api::crds_kustomization(&crds),
        "crds/kustomization.yaml is stale: run `make crds` and commit the result"
    );
    for crd in &crds {
        let name = slurmlab::api::crd_file_name(crd);
        let want = slurmlab::api::crd_yaml(crd).expect("CRD renders");
        let have = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert!(
            have == want,
            "crds/{name} is stale: run `make crds` and commit the result"
        );
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
        let have = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert!(
            have == want,
            "charts/slurmlab/crds/{name} is stale: run `make crds` and commit the result"
        );
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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference");
    for (name, want) in slurmlab::reference::pages() {
        let have = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert!(
            have == want,
            "docs/reference/{name} is stale: run `make docs` and commit the result"
        );
    }
}
