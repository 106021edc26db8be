//! Names the gateway makes: object names, notebook files, execution ids, output files.

use sha2::{Digest, Sha256};

/// A DNS-1123 label: what namespaces and object names must be.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An experiment name as the start of an object name: lowercase, dashes, at most 40.
pub fn slug(name: &str) -> String {
    let mut s = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            s.push(c);
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
        if s.len() >= 40 {
            break;
        }
    }
    let s = s.trim_matches('-').to_owned();
    if s.is_empty() {
        "session".to_owned()
    } else {
        s
    }
}

/// `prefix-xxxxx` with a random lowercase suffix.
pub fn with_suffix(prefix: &str) -> String {
    format!("{prefix}-{}", random_chars(5))
}

/// A notebook file name for an experiment (the controller makes it unique).
pub fn notebook_file(experiment: &str) -> String {
    let stem: String = experiment
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let stem = stem.trim_matches('.');
    let stem = if stem.is_empty() { "session" } else { stem };
    format!("{stem}.ipynb")
}

/// Where an execution's whole output goes when it is too long to return: next to the
/// notebook, in `<stem>_outputs/`.
pub fn output_file(notebook_path: &str, execution_id: &str) -> String {
    let stem = notebook_path
        .strip_suffix(".ipynb")
        .unwrap_or(notebook_path);
    format!("{stem}_outputs/{execution_id}.txt")
}

/// This gateway process's mark in the ids it hands out, so an id from an earlier process
/// (before a restart) is told apart from one that never existed.
pub fn instance() -> &'static str {
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(|| random_chars(4))
}

/// A new execution id: `ex-<instance>-<random>`.
pub fn execution_id() -> String {
    format!("ex-{}-{}", instance(), random_chars(10))
}

/// The process mark in an execution id (None for an id of another shape).
pub fn execution_instance(id: &str) -> Option<&str> {
    let (instance, rest) = id.strip_prefix("ex-")?.split_once('-')?;
    (instance.len() == 4 && !rest.is_empty()).then_some(instance)
}

/// The first `bytes` bytes of the SHA-256 of `s`, in hex (label values, annotations).
pub fn digest(s: &str, bytes: usize) -> String {
    Sha256::digest(s.as_bytes())[..bytes]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_chars(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; n];
    if getrandom::fill(&mut bytes).is_err() {
        // Unique enough for a name when the OS has no randomness to give.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (nanos >> (i * 5)) as u8;
        }
    }
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_ids_name_the_process_that_made_them() {
        let id = execution_id();
        assert_eq!(execution_instance(&id), Some(instance()));
        assert_eq!(execution_instance("ex-abcdefghijkl"), None);
        assert_eq!(execution_instance("ex-ab-x"), None);
        assert_ne!(execution_id(), id);
    }

    #[test]
    fn names_are_valid_kubernetes_names() {
        assert_eq!(slug("My Experiment #3: fit!"), "my-experiment-3-fit");
        assert_eq!(slug("???"), "session");
        let name = with_suffix(&slug(&"x".repeat(100)));
        assert!(is_dns_label(&name), "{name}");
        assert!(!is_dns_label("-a") && !is_dns_label("A") && !is_dns_label(""));
    }

    #[test]
    fn files_are_placed_next_to_the_notebook() {
        assert_eq!(notebook_file("fit model/v2"), "fit_model_v2.ipynb");
        assert_eq!(notebook_file("../x"), "_x.ipynb");
        assert_eq!(output_file("a/b.ipynb", "ex-1"), "a/b_outputs/ex-1.txt");
        assert!(crate::api::fields::is_contained_relative_path(
            &notebook_file("../../etc")
        ));
    }
}
