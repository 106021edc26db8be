//! slurmrestd REST API versions and how to pick one.

use std::fmt;
use std::str::FromStr;

/// A slurmrestd API version this client speaks (data parser v0.0.40 to v0.0.45,
/// Slurm 23.11 to 26.05).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiVersion {
    V0_0_40,
    V0_0_41,
    V0_0_42,
    V0_0_43,
    V0_0_44,
    V0_0_45,
}

impl ApiVersion {
    /// Every supported version, oldest first.
    pub const ALL: [ApiVersion; 6] = [
        Self::V0_0_40,
        Self::V0_0_41,
        Self::V0_0_42,
        Self::V0_0_43,
        Self::V0_0_44,
        Self::V0_0_45,
    ];

    /// The path segment, e.g. `v0.0.42`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_0_40 => "v0.0.40",
            Self::V0_0_41 => "v0.0.41",
            Self::V0_0_42 => "v0.0.42",
            Self::V0_0_43 => "v0.0.43",
            Self::V0_0_44 => "v0.0.44",
            Self::V0_0_45 => "v0.0.45",
        }
    }

    /// Ping answers carry `pinged: "UP"` up to v0.0.44 and only `responding` from v0.0.45.
    pub fn ping_has_pinged_field(self) -> bool {
        self <= Self::V0_0_44
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version string this client does not speak.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported slurmrestd API version {0:?}: slurmlab speaks v0.0.40 to v0.0.45")]
pub struct UnknownVersion(pub String);

impl FromStr for ApiVersion {
    type Err = UnknownVersion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownVersion(s.to_owned()))
    }
}

/// What the cluster's spec asks for: the newest common version, or one pinned version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionChoice {
    Auto,
    Pinned(ApiVersion),
}

impl FromStr for VersionChoice {
    type Err = UnknownVersion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            Ok(Self::Auto)
        } else {
            s.parse().map(Self::Pinned)
        }
    }
}

/// The `vX.Y.Z` versions under `/slurm/` among the paths of an `/openapi/v3` document,
/// sorted and deduplicated (including versions this client does not speak).
pub fn served_versions<'a>(paths: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut versions: Vec<String> = paths
        .into_iter()
        .filter_map(|p| p.strip_prefix("/slurm/"))
        .filter_map(|rest| rest.split('/').next())
        .filter(|v| v.starts_with('v'))
        .map(str::to_owned)
        .collect();
    versions.sort_by_key(|v| version_key(v));
    versions.dedup();
    versions
}

fn version_key(v: &str) -> Vec<u32> {
    v.trim_start_matches('v')
        .split('.')
        .map(|n| n.parse().unwrap_or(0))
        .collect()
}

/// Picks the version to speak given what the server serves.
pub fn negotiate(choice: VersionChoice, served: &[String]) -> Result<ApiVersion, NegotiationError> {
    let speakable: Vec<ApiVersion> = served.iter().filter_map(|v| v.parse().ok()).collect();
    match choice {
        VersionChoice::Pinned(v) if speakable.contains(&v) => Ok(v),
        VersionChoice::Pinned(v) => Err(NegotiationError::PinnedNotServed {
            pinned: v,
            served: served.to_vec(),
        }),
        VersionChoice::Auto => {
            speakable
                .into_iter()
                .max()
                .ok_or_else(|| NegotiationError::NoCommonVersion {
                    served: served.to_vec(),
                })
        }
    }
}

/// Why no version could be agreed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    #[error(
        "slurmrestd does not serve the pinned API version {pinned}; it serves {}: set restApi.version to one of those or to auto",
        list(served)
    )]
    PinnedNotServed {
        pinned: ApiVersion,
        served: Vec<String>,
    },
    #[error(
        "slurmrestd serves no API version slurmlab speaks (it serves {}; slurmlab needs v0.0.40 to v0.0.45, i.e. Slurm 23.11 or newer)",
        list(served)
    )]
    NoCommonVersion { served: Vec<String> },
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served_by(file: &str) -> Vec<String> {
        let path = format!(
            "{}/tests/data/slurm/openapi/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        served_versions(doc["paths"].as_object().unwrap().keys().map(String::as_str))
    }

    #[test]
    fn reads_the_versions_real_daemons_serve() {
        assert_eq!(
            served_by("openapi-v3-trixie.json"),
            ["v0.0.40", "v0.0.41", "v0.0.42"]
        );
        assert_eq!(
            served_by("openapi-v3-sid.json"),
            ["v0.0.42", "v0.0.43", "v0.0.44", "v0.0.45"]
        );
        assert_eq!(
            served_by("openapi-v3-bookworm.json"),
            ["v0.0.36", "v0.0.37", "v0.0.38"]
        );
    }

    #[test]
    fn auto_picks_the_newest_common_version() {
        assert_eq!(
            negotiate(VersionChoice::Auto, &served_by("openapi-v3-trixie.json")),
            Ok(ApiVersion::V0_0_42)
        );
        assert_eq!(
            negotiate(VersionChoice::Auto, &served_by("openapi-v3-sid.json")),
            Ok(ApiVersion::V0_0_45)
        );
        let future = vec![
            "v0.0.44".to_owned(),
            "v0.0.45".to_owned(),
            "v0.0.46".to_owned(),
        ];
        assert_eq!(
            negotiate(VersionChoice::Auto, &future),
            Ok(ApiVersion::V0_0_45)
        );
    }

    #[test]
    fn a_pinned_version_must_be_served_and_the_error_names_what_is() {
        let trixie = served_by("openapi-v3-trixie.json");
        assert_eq!(
            negotiate(VersionChoice::Pinned(ApiVersion::V0_0_40), &trixie),
            Ok(ApiVersion::V0_0_40)
        );
        let err = negotiate(VersionChoice::Pinned(ApiVersion::V0_0_45), &trixie).unwrap_err();
        assert_eq!(
            err.to_string(),
            "slurmrestd does not serve the pinned API version v0.0.45; it serves v0.0.40, v0.0.41, v0.0.42: set restApi.version to one of those or to auto"
        );
        let err =
            negotiate(VersionChoice::Auto, &served_by("openapi-v3-bookworm.json")).unwrap_err();
        assert!(
            err.to_string()
                .contains("it serves v0.0.36, v0.0.37, v0.0.38"),
            "{err}"
        );
    }

    #[test]
    fn version_strings_round_trip() {
        for v in ApiVersion::ALL {
            assert_eq!(v.as_str().parse::<ApiVersion>(), Ok(v));
        }
        assert_eq!("auto".parse::<VersionChoice>(), Ok(VersionChoice::Auto));
        assert!("v0.0.39".parse::<VersionChoice>().is_err());
    }
}
