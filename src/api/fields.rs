//! Field types shared by the resources: durations, memory quantities and Secret
//! references, each with the schema (pattern, description) the API server enforces and
//! the parsing the controller needs.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Pattern of [`Duration`]: one or more `<number><unit>` parts, units `s`, `m`, `h`, `d`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(s|m|h|d))+$";
/// Pattern of notebook and file paths: relative, `/`-separated, no empty, `.` or `..`
/// component (so a path can never leave the notebook root).
pub const RELATIVE_PATH_PATTERN: &str =
    r"^([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)(/([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+))*$";
/// Notebook paths end in `.ipynb` (checked besides [`RELATIVE_PATH_PATTERN`]).
pub const NOTEBOOK_SUFFIX_PATTERN: &str = r"\.ipynb$";

/// True when `path` is relative and stays inside its root (what
/// [`RELATIVE_PATH_PATTERN`] accepts).
pub fn is_contained_relative_path(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Pattern of [`MemoryQuantity`]: a positive Kubernetes quantity without exponents or
/// fractions (SLURM reads a memory request of 0 as "the whole node").
pub const MEMORY_PATTERN: &str = r"^[1-9][0-9]{0,15}(Ki|Mi|Gi|Ti|k|M|G|T)?$";

/// A length of time written like `30s`, `30m`, `4h`, `2d` or `1h30m`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Duration(pub String);

/// A malformed [`Duration`] or [`MemoryQuantity`] (the schema normally refuses these
/// before the controller sees them).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FieldError {
    #[error("{0:?} is not a duration: write it like 30m, 4h, 2d or 1h30m")]
    Duration(String),
    #[error("{0:?} is not a memory quantity: write it like 512Mi, 16Gi or 4G")]
    Memory(String),
}

impl Duration {
    /// Parses the duration; unknown units or an empty string are an error.
    pub fn to_std(&self) -> Result<std::time::Duration, FieldError> {
        let err = || FieldError::Duration(self.0.clone());
        let mut total: u64 = 0;
        let mut number = String::new();
        for c in self.0.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86400,
                _ => return Err(err()),
            };
            let n: u64 = number.parse().map_err(|_| err())?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(err)?;
            number.clear();
        }
        if !number.is_empty() || self.0.is_empty() {
            return Err(err());
        }
        Ok(std::time::Duration::from_secs(total))
    }

    /// Whole minutes, rounded up (SLURM time limits are in minutes).
    pub fn to_minutes_ceil(&self) -> Result<u64, FieldError> {
        Ok(self.to_std()?.as_secs().div_ceil(60))
    }
}

impl From<&str> for Duration {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration such as 30m, 4h, 2d or 1h30m (units s, m, h, d)."
        })
    }
}

/// An amount of memory written as a Kubernetes quantity: `512Mi`, `16Gi`, `4G`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemoryQuantity(pub String);

impl MemoryQuantity {
    /// Bytes this quantity stands for.
    pub fn to_bytes(&self) -> Result<u64, FieldError> {
        let err = || FieldError::Memory(self.0.clone());
        let digits_end = self
            .0
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.0.len());
        let (digits, suffix) = self.0.split_at(digits_end);
        let n: u64 = digits.parse().map_err(|_| err())?;
        let mult: u64 = match suffix {
            "" => 1,
            "k" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            _ => return Err(err()),
        };
        n.checked_mul(mult).ok_or_else(err)
    }

    /// Mebibytes, rounded up: SLURM's `--mem` unit (slurm.conf's "MB" are MiB).
    pub fn to_slurm_mb(&self) -> Result<u64, FieldError> {
        Ok(self.to_bytes()?.div_ceil(1 << 20))
    }
}

impl From<&str> for MemoryQuantity {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Display for MemoryQuantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for MemoryQuantity {
    fn schema_name() -> Cow<'static, str> {
        "MemoryQuantity".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": MEMORY_PATTERN,
            "description": "Memory as a Kubernetes quantity such as 512Mi, 16Gi or 4G."
        })
    }
}

/// A key of a Secret in a given namespace (the referrer may be cluster-scoped).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Namespace of the Secret.
    #[schemars(length(min = 1))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1))]
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_every_unit_and_combinations() {
        let secs = |s: &str| Duration::from(s).to_std().map(|d| d.as_secs());
        assert_eq!(secs("30s"), Ok(30));
        assert_eq!(secs("30m"), Ok(1800));
        assert_eq!(secs("4h"), Ok(14400));
        assert_eq!(secs("2d"), Ok(172800));
        assert_eq!(secs("1h30m"), Ok(5400));
        for bad in ["", "4", "4 hours", "h", "1x", "-1h"] {
            assert!(
                Duration::from(bad).to_std().is_err(),
                "{bad:?} should be refused"
            );
        }
        assert_eq!(Duration::from("90s").to_minutes_ceil(), Ok(2));
    }

    #[test]
    fn memory_quantities_map_to_slurm_megabytes() {
        let mb = |s: &str| MemoryQuantity::from(s).to_slurm_mb();
        assert_eq!(mb("16Gi"), Ok(16384));
        assert_eq!(mb("512Mi"), Ok(512));
        assert_eq!(mb("1G"), Ok(954)); // 10^9 bytes, rounded up to whole MiB
        assert_eq!(mb("1"), Ok(1));
        for bad in ["", "Gi", "1.5Gi", "16GB", "16 Gi"] {
            assert!(
                MemoryQuantity::from(bad).to_bytes().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn schema_patterns_agree_with_the_parsers() {
        // The API server checks the pattern (Go RE2; these patterns mean the same in the
        // regex crate), the controller parses: both must accept the same strings.
        let dur = regex::Regex::new(DURATION_PATTERN).unwrap();
        for s in ["30s", "4h", "1h30m", "2d", "4", "4 hours", "1.5h", "h"] {
            assert_eq!(dur.is_match(s), Duration::from(s).to_std().is_ok(), "{s}");
        }
        let path = regex::Regex::new(RELATIVE_PATH_PATTERN).unwrap();
        for s in [
            "a.ipynb",
            "dir/a.ipynb",
            ".hidden/a.ipynb",
            "..dots/x",
            "a..b",
            "../a.ipynb",
            "a/../b.ipynb",
            "/a.ipynb",
            "./a.ipynb",
            "a//b.ipynb",
            "a/",
            "",
            "..",
            ".",
        ] {
            assert_eq!(path.is_match(s), is_contained_relative_path(s), "{s:?}");
        }
        assert!(!is_contained_relative_path("../../etc/passwd"));
        let mem = regex::Regex::new(MEMORY_PATTERN).unwrap();
        for s in ["16Gi", "4G", "512Mi", "1024", "16GB", "1.5Gi", "Gi", "1k"] {
            assert_eq!(
                mem.is_match(s),
                MemoryQuantity::from(s).to_bytes().is_ok(),
                "{s}"
            );
        }
    }
}
