//! Pulling from an OCI distribution registry: manifests (OCI and Docker schema2, indexes
//! narrowed to one platform), blobs downloaded in parallel and each verified by the store
//! before it enters, anonymous, Basic and bearer-token auth with credentials from the
//! usual auth files.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use base64::Engine;

use crate::digest::Digest;
use crate::manifest::{self, Parsed};
use crate::reference::Reference;
use crate::store::{ImageRef, Locked};
use oci_spec::image::{Descriptor, Platform};

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
/// Largest manifest accepted from a registry.
const MAX_MANIFEST: u64 = 4 << 20;
/// Blobs downloaded at once.
const PARALLEL_DOWNLOADS: usize = 4;

pub struct PullOptions {
    pub platform: Option<Platform>,
    pub plain_http: bool,
    pub authfile: Option<PathBuf>,
}

/// A registry session for one repository: the base URL, credentials, and the
/// Authorization header once the registry has asked for one.
struct Session {
    agent: ureq::Agent,
    base: String,
    repository: String,
    credentials: Option<(String, String)>,
    authorization: Mutex<Option<String>>,
}

/// The `user:password` for `registry` from the first auth file that has it: --authfile,
/// $REGISTRY_AUTH_FILE, containers' auth.json, then Docker's config.json.
pub fn credentials(registry: &str, authfile: Option<&Path>) -> Result<Option<(String, String)>> {
    let mut files: Vec<PathBuf> = authfile.map(Path::to_path_buf).into_iter().collect();
    if authfile.is_none() {
        if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
            files.push(f.into());
        }
        if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR") {
            files.push(Path::new(&run).join("containers/auth.json"));
        }
        files.push(PathBuf::from("/run/containers/0/auth.json"));
        if let Some(home) = std::env::var_os("HOME") {
            files.push(Path::new(&home).join(".config/containers/auth.json"));
        }
        match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) => files.push(Path::new(&dir).join("config.json")),
            None => files.extend(std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker/config.json"))),
        }
    }
    let keys: Vec<String> = if registry == "docker.io" {
        vec![
            "docker.io".into(),
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![registry.to_string(), format!("https://{registry}"), format!("http://{registry}")]
    };
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && authfile.is_none() => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read auth file {}", file.display())),
        };
        let doc: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("auth file {} is not valid JSON", file.display()))?;
        for key in &keys {
            if let Some(auth) = doc["auths"][key]["auth"].as_str() {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .with_context(|| format!("the auth for {registry} in {} is not base64", file.display()))?;
                let text = String::from_utf8(decoded).context("credentials are not UTF-8")?;
                let (user, password) = text
                    .split_once(':')
                    .with_context(|| format!("the auth for {registry} in {} is not user:password", file.display()))?;
                return Ok(Some((user.to_string(), password.to_string())));
            }
        }
    }
    Ok(None)
}

/// `key="value"` pairs of a WWW-Authenticate challenge.
fn challenge_params(header: &str) -> std::collections::HashMap<String, String> {
    let mut params = std::collections::HashMap::new();
    let mut rest = header.split_once(' ').map(|(_, r)| r).unwrap_or("");
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key, value.to_string());
        rest = next;
    }
    params
}

impl Session {
    fn basic(&self) -> Option<String> {
        self.credentials
            .as_ref()
            .map(|(u, p)| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))))
    }

    /// Answers a 401's challenge: Basic with the credentials, or a bearer token from the
    /// realm it names.
    fn authenticate(&self, challenge: &str) -> Result<()> {
        let header = if challenge.to_ascii_lowercase().starts_with("bearer") {
            let params = challenge_params(challenge);
            let realm = params.get("realm").context("the registry's bearer challenge names no realm")?;
            let mut request = self.agent.get(realm);
            for key in ["service", "scope"] {
                if let Some(value) = params.get(key) {
                    request = request.query(key, value);
                }
            }
            if let Some(basic) = self.basic() {
                request = request.set("Authorization", &basic);
            }
            let response = request.call().map_err(|e| describe(e, &format!("the token server {realm}")))?;
            let body: serde_json::Value = serde_json::from_reader(response.into_reader().take(MAX_MANIFEST))
                .context("the token server's answer is not JSON")?;
            let token = body["token"]
                .as_str()
                .or(body["access_token"].as_str())
                .context("the token server's answer has no token")?;
            format!("Bearer {token}")
        } else {
            self.basic().with_context(|| format!("the registry at {} wants credentials: add them to an auth file (--authfile, ~/.docker/config.json or containers' auth.json)", self.base))?
        };
        *self.authorization.lock().unwrap() = Some(header);
        Ok(())
    }

    /// GETs `/v2/<repository>/<path>`, authenticating once when asked to.
    fn get(&self, path: &str, accept: Option<&str>) -> Result<ureq::Response> {
        let url = format!("{}/v2/{}/{path}", self.base, self.repository);
        for attempt in 0..2 {
            let mut request = self.agent.get(&url);
            if let Some(accept) = accept {
                request = request.set("Accept", accept);
            }
            if let Some(auth) = self.authorization.lock().unwrap().as_deref() {
                request = request.set("Authorization", auth);
            }
            match request.call() {
                Ok(response) => return Ok(response),
                Err(ureq::Error::Status(401, response)) if attempt == 0 => {
                    let challenge = response.header("WWW-Authenticate").unwrap_or("Basic").to_string();
                    self.authenticate(&challenge)?;
                }
                Err(e) => return Err(describe(e, &url)),
            }
        }
        bail!("{url}: the registry refused the credentials (401)")
    }

    fn manifest(&self, reference: &str) -> Result<(Vec<u8>, String)> {
        let response = self
            .get(&format!("manifests/{reference}"), Some(ACCEPT))
            .with_context(|| format!("cannot fetch manifest {reference} of {}", self.repository))?;
        let media_type = response.content_type().to_string();
        let mut data = Vec::new();
        response.into_reader().take(MAX_MANIFEST + 1).read_to_end(&mut data)?;
        if data.len() as u64 > MAX_MANIFEST {
            bail!("manifest {reference} is larger than {MAX_MANIFEST} bytes");
        }
        Ok((data, media_type))
    }
}

fn describe(error: ureq::Error, what: &str) -> anyhow::Error {
    match error {
        ureq::Error::Status(404, _) => anyhow::anyhow!("{what}: not found (404)"),
        ureq::Error::Status(code, response) => {
            anyhow::anyhow!("{what}: the server answered {code} {}", response.status_text())
        }
        ureq::Error::Transport(t) => anyhow::anyhow!("{what}: {t}"),
    }
}

/// Pulls `reference` into the store and names it by its normalised reference; returns
/// that name.
pub fn pull(
    locked: &Locked<'_>,
    text: &str,
    options: &PullOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<String> {
    let reference = Reference::parse(text)?;
    let scheme = if options.plain_http || reference.is_loopback() { "http" } else { "https" };
    let session = Session {
        agent: ureq::AgentBuilder::new().timeout_connect(std::time::Duration::from_secs(30)).build(),
        base: format!("{scheme}://{}", reference.api_host()),
        repository: reference.repository.clone(),
        credentials: credentials(&reference.registry, options.authfile.as_deref())?,
        authorization: Mutex::new(None),
    };
    let (mut data, mut media_type) = session.manifest(&reference.reference)?;
    let mut digest = Digest::of_bytes(&data);
    if reference.reference.starts_with("sha256:") && digest.as_str() != reference.reference {
        bail!("the registry's manifest for {reference} has digest {digest}; refusing it");
    }
    let host = manifest::host_platform();
    let wanted = options.platform.as_ref().unwrap_or(&host);
    let (config, layers) = loop {
        match manifest::parse(&media_type, &data, &digest)? {
            Parsed::Image(image_manifest) => break (image_manifest.config().clone(), image_manifest.layers().clone()),
            Parsed::Index(index) => {
                let entries = index.manifests();
                let chosen = entries
                    .iter()
                    .find(|d| d.platform().as_ref().is_some_and(|p| manifest::platform_matches(wanted, p)))
                    .with_context(|| {
                        let offered: Vec<String> =
                            entries.iter().filter_map(|d| d.platform().as_ref().map(manifest::platform_name)).collect();
                        format!(
                            "{reference} has no image for {} (it offers: {}); choose one with --platform",
                            manifest::platform_name(wanted),
                            offered.join(", ")
                        )
                    })?;
                let child = manifest::digest_of(chosen)?;
                (data, media_type) = session.manifest(child.as_str())?;
                digest = Digest::of_bytes(&data);
                if digest != child {
                    bail!("the registry's manifest {child} has digest {digest}; refusing it");
                }
                if media_type.is_empty()
                    || media_type.starts_with("application/json")
                    || media_type.starts_with("text/")
                {
                    media_type = chosen.media_type().to_string();
                }
            }
        }
    };
    let blobs: Vec<Descriptor> = std::iter::once(config).chain(layers).collect();
    let missing: Vec<&Descriptor> =
        blobs.iter().filter(|b| manifest::digest_of(b).map(|d| !locked.store().has_blob(&d)).unwrap_or(true)).collect();
    let queue = Mutex::new(missing.clone());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_DOWNLOADS {
            scope.spawn(|| loop {
                let Some(blob) = queue.lock().unwrap().pop() else { return };
                progress(&format!("pulling {} ({} bytes)", blob.digest(), blob.size()));
                let fetched = manifest::digest_of(blob).and_then(|d| {
                    let response =
                        session.get(&format!("blobs/{d}"), None).with_context(|| format!("cannot fetch blob {d}"))?;
                    locked.put_blob(response.into_reader(), &d, blob.size())
                });
                if let Err(e) = fetched {
                    failures.lock().unwrap().push(e);
                }
            });
        }
    });
    if let Some(first) = failures.into_inner().unwrap().into_iter().next() {
        // A failed pull leaves nothing: the blobs it did store go again.
        for blob in missing {
            if let Ok(d) = manifest::digest_of(blob) {
                let _ = std::fs::remove_file(locked.store().blob_path(&d));
            }
        }
        return Err(first.context(format!("cannot pull {reference}")));
    }
    // The manifest goes in last: an image is named only once all it needs is stored.
    locked.put_blob(data.as_slice(), &digest, data.len() as u64)?;
    let name = reference.to_string();
    let media_type = if media_type.contains("docker") { manifest::DOCKER_MANIFEST } else { manifest::OCI_MANIFEST };
    locked.set_ref(&name, ImageRef { digest: digest.to_string(), media_type: media_type.to_string() })?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_parsed() {
        let params = challenge_params(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:app:pull""#,
        );
        assert_eq!(params["realm"], "https://auth.example/token");
        assert_eq!(params["service"], "registry.example");
        assert_eq!(params["scope"], "repository:app:pull");
    }
}
