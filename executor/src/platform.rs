//! OCI platforms (`os/arch[/variant]`): parsing, normalising as containerd
//! does (`x86_64` is `amd64`, `aarch64` is `arm64`...), and this machine's
//! own platform. Shared by the Dockerfile frontend (for `TARGETPLATFORM` and
//! friends) and, later, by image resolution.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {input:?}: {reason}")]
pub struct PlatformError {
    pub input: String,
    pub reason: &'static str,
}

impl Platform {
    /// The platform this binary runs on.
    #[must_use]
    pub fn host() -> Self {
        let (architecture, variant) = normalize_arch(std::env::consts::ARCH, None);
        Self {
            os: std::env::consts::OS.to_string(),
            architecture,
            variant,
        }
    }

    #[must_use]
    pub fn os(&self) -> &str {
        &self.os
    }
}

/// containerd's `platforms.Normalize` for architectures and their variants.
fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.map(str::to_ascii_lowercase);
    match (arch.as_str(), variant.as_deref()) {
        ("i386" | "i486" | "i586" | "i686" | "x86", _) => ("386".into(), None),
        ("x86_64" | "x86-64" | "amd64", None | Some("v1")) => ("amd64".into(), None),
        ("x86_64" | "x86-64" | "amd64", Some(v)) => ("amd64".into(), Some(v.into())),
        ("aarch64" | "arm64", None | Some("8" | "v8")) => ("arm64".into(), None),
        ("aarch64" | "arm64", Some(v)) => ("arm64".into(), Some(v.into())),
        ("armhf", _) | ("arm", None | Some("7" | "v7")) => ("arm".into(), Some("v7".into())),
        ("armel", _) | ("arm", Some("6" | "v6")) => ("arm".into(), Some("v6".into())),
        ("arm", Some("5" | "v5")) => ("arm".into(), Some("v5".into())),
        ("arm", Some("8" | "v8")) => ("arm".into(), Some("v8".into())),
        (a, v) => (a.to_string(), v.map(str::to_string)),
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| PlatformError {
            input: s.to_string(),
            reason,
        };
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        if parts.iter().any(|p| !valid(p)) {
            return Err(err("each part must be letters, digits, '_', '-' or '.'"));
        }
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            [one] => {
                // A lone part is an OS when it names one, else an architecture
                // of this machine's OS, as containerd reads it.
                if matches!(*one, "linux" | "windows" | "darwin" | "freebsd") {
                    let host = Self::host();
                    return Ok(Self {
                        os: (*one).to_string(),
                        architecture: host.architecture,
                        variant: host.variant,
                    });
                }
                (std::env::consts::OS, *one, None)
            }
            _ => return Err(err("expected os/arch or os/arch/variant")),
        };
        let (architecture, variant) = normalize_arch(arch, variant);
        Ok(Self {
            os: os.to_ascii_lowercase(),
            architecture,
            variant,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        let p: Platform = "linux/x86_64".parse().unwrap();
        assert_eq!(p.to_string(), "linux/amd64");
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64");
        let p: Platform = "linux/arm".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert!("linux//amd64".parse::<Platform>().is_err());
        assert!("a/b/c/d".parse::<Platform>().is_err());
        assert!("linux/$ARCH".parse::<Platform>().is_err());
    }

    #[test]
    fn host_is_normalized() {
        let host = Platform::host();
        assert_eq!(host.to_string().parse::<Platform>().unwrap(), host);
    }
}
