//! Pieces as OCI artifacts: `omniflow piece push FILE oci://REGISTRY/REPO:TAG`
//! and `omniflow piece install oci://...`, laid out the way `wkg`
//! (wasm-pkg-tools) and the CNCF Wasm OCI artifact spec do: an image
//! manifest whose config has media type `application/vnd.wasm.config.v0+json`
//! and whose one layer is the component, `application/wasm`.
//!
//! A small client over the OCI distribution API (the registry's `/v2/`):
//! manifests and blobs by digest, anonymous bearer tokens when the registry
//! asks for them (`WWW-Authenticate: Bearer realm=...`). Every pulled blob is
//! checked against the sha256 digest the manifest names. Plain HTTP is used
//! only for loopback registries (`127.0.0.1`, `localhost`, `[::1]`), HTTPS
//! otherwise. Why not the `oci-client` crate: its releases for our reqwest
//! pull a second HTTP stack (reqwest 0.13) and aws-lc-sys (a C build) for
//! the handful of requests below.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Media types of the Wasm OCI artifact layout.
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.wasm.config.v0+json";
const WASM_TYPE: &str = "application/wasm";
/// Largest component pulled (the API's upload limit).
const MAX_BLOB: usize = 64 << 20;

/// `oci://REGISTRY/REPOSITORY[:TAG|@sha256:DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OciRef {
    registry: String,
    repository: String,
    /// A tag or a `sha256:` digest.
    reference: String,
}

impl OciRef {
    /// Parse an `oci://` reference (the tag defaults to `latest`).
    pub(crate) fn parse(text: &str) -> Result<OciRef> {
        let rest = text
            .strip_prefix("oci://")
            .with_context(|| format!("{text:?}: expected oci://REGISTRY/REPOSITORY:TAG"))?;
        let (registry, path) = rest
            .split_once('/')
            .with_context(|| format!("{text:?}: no repository after the registry"))?;
        let (repository, reference) = match path.split_once('@') {
            Some((repo, digest)) => (repo, digest.to_owned()),
            None => match path.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => (repo, tag.to_owned()),
                _ => (path, "latest".to_owned()),
            },
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.split('/').all(|part| {
                    !part.is_empty()
                        && part != ".."
                        && part.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c)
                        })
                })
        };
        anyhow::ensure!(
            !registry.is_empty() && valid(repository),
            "{text:?}: the repository must be lowercase path components (a-z, 0-9, . _ -)"
        );
        Ok(OciRef {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            reference,
        })
    }

    fn base(&self) -> String {
        let host = self.registry.split(':').next().unwrap_or_default();
        let loopback = matches!(host, "127.0.0.1" | "localhost" | "[::1]");
        let scheme = if loopback { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", self.registry, self.repository)
    }
}

impl std::fmt::Display for OciRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "oci://{}/{}{sep}{}",
            self.registry, self.repository, self.reference
        )
    }
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Refuse `bytes` unless their digest is `expected`.
fn verify(bytes: &[u8], expected: &str) -> Result<()> {
    let actual = digest_of(bytes);
    anyhow::ensure!(
        actual == expected,
        "the registry sent bytes whose digest is {actual}, not the {expected} the manifest names: refused"
    );
    Ok(())
}

struct Registry {
    http: reqwest::Client,
    reference: OciRef,
    /// An anonymous bearer token, once the registry asked for one.
    token: Option<String>,
}

impl Registry {
    fn new(reference: OciRef) -> Result<Registry> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        Ok(Registry {
            http,
            reference,
            token: None,
        })
    }

    /// Send `build()`'s request; on a bearer challenge, fetch an anonymous
    /// token and send it again.
    async fn send(
        &mut self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        for _ in 0..2 {
            let mut request = build(&self.http);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("reaching {}", self.reference))?;
            if response.status() != reqwest::StatusCode::UNAUTHORIZED || self.token.is_some() {
                return Ok(response);
            }
            let challenge = response
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            self.token = Some(self.anonymous_token(&challenge).await?);
        }
        anyhow::bail!(
            "{}: the registry refused the token it issued",
            self.reference
        )
    }

    /// `Bearer realm="...",service="...",scope="..."` → a token.
    async fn anonymous_token(&self, challenge: &str) -> Result<String> {
        let params = challenge
            .strip_prefix("Bearer ")
            .with_context(|| {
                format!(
                    "{}: the registry wants credentials ({challenge:?}); only anonymous access is supported",
                    self.reference
                )
            })?;
        let field = |name: &str| {
            params.split(',').find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_owned())
            })
        };
        let realm = field("realm").context("a bearer challenge without a realm")?;
        let mut query = Vec::new();
        for name in ["service", "scope"] {
            if let Some(value) = field(name) {
                query.push((name, value));
            }
        }
        let body: serde_json::Value = self
            .http
            .get(&realm)
            .query(&query)
            .send()
            .await
            .with_context(|| format!("asking {realm} for a token"))?
            .error_for_status()?
            .json()
            .await?;
        body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .map(str::to_owned)
            .context("the token endpoint answered without a token")
    }

    async fn manifest(&mut self) -> Result<serde_json::Value> {
        let url = format!(
            "{}/manifests/{}",
            self.reference.base(),
            self.reference.reference
        );
        let response = self
            .send(|http| {
                http.get(&url)
                    .header(reqwest::header::ACCEPT, MANIFEST_TYPE)
            })
            .await?;
        let status = response.status();
        anyhow::ensure!(
            status.is_success(),
            "{}: the registry answered {status} for the manifest",
            self.reference
        );
        response.json().await.context("the manifest is not JSON")
    }

    async fn blob(&mut self, digest: &str) -> Result<Vec<u8>> {
        let url = format!("{}/blobs/{digest}", self.reference.base());
        let response = self.send(|http| http.get(&url)).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{}: the registry answered {} for blob {digest}",
            self.reference,
            response.status()
        );
        let bytes = response.bytes().await?;
        anyhow::ensure!(
            bytes.len() <= MAX_BLOB,
            "the component is larger than 64 MiB"
        );
        Ok(bytes.to_vec())
    }

    async fn put_blob(&mut self, bytes: &[u8]) -> Result<String> {
        let digest = digest_of(bytes);
        let start = format!("{}/blobs/uploads/", self.reference.base());
        let response = self.send(|http| http.post(&start)).await?;
        anyhow::ensure!(
            response.status() == reqwest::StatusCode::ACCEPTED,
            "{}: starting a blob upload: {}",
            self.reference,
            response.status()
        );
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .context("the registry gave no upload location")?
            .to_owned();
        let mut url = reqwest::Url::parse(&start)?.join(&location)?;
        url.query_pairs_mut().append_pair("digest", &digest);
        let body = bytes.to_vec();
        let response = self
            .send(|http| {
                http.put(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(body.clone())
            })
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{}: uploading blob {digest}: {}",
            self.reference,
            response.status()
        );
        Ok(digest)
    }
}

/// Pull the component `reference` names, digest-checked.
pub(crate) async fn pull(reference: &OciRef) -> Result<Vec<u8>> {
    let mut registry = Registry::new(reference.clone())?;
    let manifest = registry.manifest().await?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let layer = layers
        .iter()
        .find(|l| l["mediaType"] == WASM_TYPE)
        .with_context(|| {
            let types: Vec<String> = layers
                .iter()
                .map(|l| l["mediaType"].as_str().unwrap_or("?").to_owned())
                .collect();
            format!(
                "{reference}: no {WASM_TYPE} layer (layers: {}): not a Wasm component artifact",
                types.join(", ")
            )
        })?;
    let digest = layer["digest"]
        .as_str()
        .context("a layer without a digest")?
        .to_owned();
    let bytes = registry.blob(&digest).await?;
    verify(&bytes, &digest)?;
    Ok(bytes)
}

/// Push component `bytes` (piece `name@version`) as `reference`; returns
/// the manifest's digest.
pub(crate) async fn push(
    reference: &OciRef,
    bytes: &[u8],
    name: &str,
    version: &str,
) -> Result<String> {
    let mut registry = Registry::new(reference.clone())?;
    let layer = registry.put_blob(bytes).await?;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer],
        "created": omniflow::store::now_rfc3339(),
    }))?;
    let config_digest = registry.put_blob(&config).await?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": CONFIG_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": WASM_TYPE, "digest": layer, "size": bytes.len()}],
        "annotations": {
            "org.opencontainers.image.title": name,
            "org.opencontainers.image.version": version,
        },
    }))?;
    let url = format!("{}/manifests/{}", reference.base(), reference.reference);
    let response = registry
        .send(|http| {
            http.put(&url)
                .header(reqwest::header::CONTENT_TYPE, MANIFEST_TYPE)
                .body(manifest.clone())
        })
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{reference}: the registry refused the manifest: {}",
        response.status()
    );
    Ok(digest_of(&manifest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_print() {
        let r = OciRef::parse("oci://127.0.0.1:5000/pieces/sentiment:0.1.0").unwrap();
        assert_eq!(r.base(), "http://127.0.0.1:5000/v2/pieces/sentiment");
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/pieces/sentiment:0.1.0");
        let latest = OciRef::parse("oci://ghcr.io/acme/feed").unwrap();
        assert_eq!(latest.reference, "latest");
        assert!(latest.base().starts_with("https://ghcr.io/v2/acme/feed"));
        let pinned = OciRef::parse("oci://r.example/a/b@sha256:00ff").unwrap();
        assert_eq!(pinned.reference, "sha256:00ff");
        assert!(OciRef::parse("https://x/y").is_err());
        assert!(OciRef::parse("oci://x").is_err());
        assert!(OciRef::parse("oci://x/../etc:1").is_err());
        assert!(OciRef::parse("oci://x/Upper:1").is_err());
    }

    #[test]
    fn bytes_that_do_not_match_their_digest_are_refused() {
        let digest = digest_of(b"component");
        assert!(verify(b"component", &digest).is_ok());
        let err = verify(b"tampered", &digest).unwrap_err().to_string();
        assert!(err.contains("refused") && err.contains(&digest), "{err}");
    }
}
