//! Image references as Docker normalises them: `busybox` is
//! `docker.io/library/busybox:latest`; the first component is a registry when it has a
//! `.` or `:` or is `localhost`; a reference may end in `:tag` or `@sha256:...`.

use anyhow::{bail, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (and port) as written, `docker.io` for Docker Hub.
    pub registry: String,
    /// Repository path, `library/busybox` for an official image.
    pub repository: String,
    /// Tag, or `sha256:...` digest.
    pub reference: String,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference> {
        if text.is_empty() || text.contains(char::is_whitespace) {
            bail!("{text:?} is not an image reference (e.g. busybox, docker.io/library/busybox:latest, localhost:5000/app@sha256:...)");
        }
        let (name, reference) = match text.split_once('@') {
            Some((name, digest)) => (name, digest.to_string()),
            None => match text.rsplit_once(':') {
                Some((name, tag)) if !tag.contains('/') => (name, tag.to_string()),
                _ => (text, "latest".to_string()),
            },
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.split('/').all(|p| {
                    !p.is_empty()
                        && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                })
        };
        if !valid(&repository) {
            bail!("{text:?} has an invalid repository name {repository:?} (lowercase letters, digits, '.', '_', '-' and '/')");
        }
        if reference.starts_with("sha256:") {
            crate::digest::Digest::parse(&reference)?;
        } else if reference.is_empty()
            || reference.len() > 128
            || !reference.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            bail!("{text:?} has an invalid tag {reference:?}");
        }
        Ok(Reference { registry, repository, reference })
    }

    /// The host to talk to: Docker Hub's API lives at registry-1.docker.io.
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// Whether the registry is on this machine (plain HTTP is then the default).
    pub fn is_loopback(&self) -> bool {
        let host = self.registry.rsplit_once(':').map(|(h, _)| h).unwrap_or(&self.registry);
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.starts_with("sha256:") { '@' } else { ':' };
        write!(f, "{}/{}{sep}{}", self.registry, self.repository, self.reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(text: &str) -> String {
        Reference::parse(text).unwrap().to_string()
    }

    #[test]
    fn short_names_are_normalised_as_docker_does() {
        assert_eq!(full("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(full("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(full("someone/app"), "docker.io/someone/app:latest");
        assert_eq!(full("quay.io/org/app:v1"), "quay.io/org/app:v1");
        assert_eq!(full("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(full("localhost/app:x"), "localhost/app:x");
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(full(&format!("busybox@{digest}")), format!("docker.io/library/busybox@{digest}"));
        assert_eq!(Reference::parse("busybox").unwrap().api_host(), "registry-1.docker.io");
        assert!(Reference::parse("127.0.0.1:5000/app").unwrap().is_loopback());
        assert!(!Reference::parse("quay.io/app").unwrap().is_loopback());
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in ["", "Busybox", "app:bad!tag", "app@sha256:short", "a b"] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
