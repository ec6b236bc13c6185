//! A parsed HTTP grant: `scheme://host[:port][/path-prefix]` and the secrets
//! the host may place into requests to it. Pure data (the `url` crate only):
//! validation parses grants here, and the HTTP capability matches requests
//! against them.

use std::net::IpAddr;

/// One HTTP destination a step may reach, parsed.
#[derive(Debug, Clone)]
pub struct Grant {
    pub(crate) scheme: String,
    pub(crate) host: url::Host<String>,
    pub(crate) port: u16,
    /// Path prefix without a trailing slash ("" = any path).
    pub(crate) path_prefix: String,
    pub(crate) secrets: Vec<String>,
    /// As written in the workflow (for messages).
    pub(crate) text: String,
}

impl Grant {
    /// Parse `scheme://host[:port][/path-prefix]` naming the secrets that may
    /// be placed into requests to it. The error says what is wrong.
    pub fn parse(destination: &str, secrets: &[String]) -> Result<Grant, String> {
        let url = url::Url::parse(destination).map_err(|e| {
            format!(
                "grant {destination:?} is not a URL ({e}); write e.g. \"https://api.example.com\""
            )
        })?;
        let scheme = url.scheme().to_string();
        if scheme != "http" && scheme != "https" {
            return Err(format!(
                "grant {destination:?}: scheme must be http or https, not {scheme:?}"
            ));
        }
        let host = url
            .host()
            .ok_or_else(|| format!("grant {destination:?} has no host"))?
            .to_owned();
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "grant {destination:?}: credentials do not belong in a grant; use a secret"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "grant {destination:?}: a grant has no query or fragment, only scheme://host[:port][/path]"
            ));
        }
        for name in secrets {
            crate::names::check_secret_name(name)
                .map_err(|why| format!("grant {destination:?}: {why}"))?;
        }
        Ok(Grant {
            port: url.port_or_known_default().unwrap_or(80),
            path_prefix: url.path().trim_end_matches('/').to_string(),
            scheme,
            host,
            secrets: secrets.to_vec(),
            text: destination.to_string(),
        })
    }

    /// Same scheme, host and port (any path).
    pub(crate) fn same_origin(&self, url: &url::Url) -> bool {
        url.scheme() == self.scheme
            && url.host().map(|h| h.to_owned()).as_ref() == Some(&self.host)
            && url.port_or_known_default() == Some(self.port)
    }

    pub(crate) fn matches(&self, url: &url::Url) -> bool {
        self.same_origin(url)
            && (self.path_prefix.is_empty()
                || url.path() == self.path_prefix
                || url
                    .path()
                    .strip_prefix(&self.path_prefix)
                    .is_some_and(|rest| rest.starts_with('/')))
    }

    /// The IP the grant names literally, if it does.
    pub(crate) fn literal_ip(&self) -> Option<IpAddr> {
        match &self.host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(*ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(*ip)),
            url::Host::Domain(_) => None,
        }
    }
}
