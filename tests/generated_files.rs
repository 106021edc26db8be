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
