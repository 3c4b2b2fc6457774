//! Enrollment: what a client keeps to reach its server ([`RemoteConfig`]),
//! the check of a server URL, the certificate's fingerprint for trust on
//! first use, and the trade of a one-time token for a client key, made
//! only over a connection to the pinned certificate.

use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use rewind_core::RepoError;
use rewind_core::wire::{self, EnrollReply, EnrollRequest};
use serde::{Deserialize, Serialize};

use crate::client::{http_client, net_error, read_reply, remote};
use crate::tls;

/// What a client needs to reach its server; written at enrollment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteConfig {
    /// `https://host:port`.
    pub url: String,
    /// The client's name on the server.
    pub client: String,
    /// The client's key.
    pub key: String,
    /// The pinned certificate fingerprint (`SHA256:…`).
    pub fingerprint: String,
}

/// Check and normalise a server URL: `https://host[:port]`, no path.
pub fn normalize_url(url: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(url.trim())
        .map_err(|e| format!("not a server URL: {url:?} ({e}); use https://HOST:PORT"))?;
    if u.scheme() != "https" {
        return Err(format!("{url}: only https:// servers are supported"));
    }
    if u.host_str().is_none() {
        return Err(format!("{url}: no host"));
    }
    if !(u.path() == "/" || u.path().is_empty()) || u.query().is_some() {
        return Err(format!(
            "{url}: give the server only (https://HOST:PORT), no path"
        ));
    }
    let mut s = u.to_string();
    while s.ends_with('/') {
        s.pop();
    }
    Ok(s)
}

/// Connect to `url` and return the fingerprint of the certificate it
/// presents (for trust on first use: show it, ask, then pin it).
pub fn probe_fingerprint(url: &str) -> Result<String, RepoError> {
    let url = normalize_url(url).map_err(|m| remote(url, m, false))?;
    let u = reqwest::Url::parse(&url).map_err(|e| remote(&url, e.to_string(), false))?;
    let host = u
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = u.port_or_known_default().unwrap_or(443);
    let (cfg, pinned) = tls::client_config(None);
    let name = rustls_pki_types::ServerName::try_from(host.clone())
        .map_err(|e| remote(&url, format!("bad host name: {e}"), false))?;
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name)
        .map_err(|e| remote(&url, format!("TLS: {e}"), false))?;
    let addr = format!(
        "{}:{port}",
        if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        }
    );
    let mut tcp = TcpStream::connect(&addr)
        .map_err(|e| remote(&url, format!("cannot connect: {e}"), true))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| remote(&url, format!("TLS handshake: {e}"), true))?;
    }
    pinned
        .seen()
        .ok_or_else(|| remote(&url, "the server presented no certificate", false))
}

/// Tries of an enrollment the server turned away before looking at the
/// token (429, 503): a person waits for it, so a few, up to 10 s apart.
const ENROLL_ATTEMPTS: u32 = 4;

/// Enroll as `name` with a one-time `token` at the server pinned to
/// `fingerprint`; returns the client's key and the server's description.
pub fn enroll(
    url: &str,
    fingerprint: &str,
    name: &str,
    token: &str,
) -> Result<EnrollReply, RepoError> {
    let url = normalize_url(url).map_err(|m| remote(url, m, false))?;
    let fp = wire::parse_fingerprint(fingerprint).ok_or_else(|| {
        remote(
            &url,
            format!("not a fingerprint: {fingerprint:?} (SHA256: and 64 hex digits)"),
            false,
        )
    })?;
    let (http, pinned) = http_client(Some(&fp))?;
    let body = serde_json::to_vec(&EnrollRequest {
        name: name.to_string(),
        token: token.trim().to_string(),
    })
    .expect("serializable");
    let mut attempt = 1;
    let resp = loop {
        let resp = http
            .post(format!("{url}/v1/enroll"))
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .map_err(|e| net_error(&url, &pinned, e))?;
        // 429 (this address is braked after failures) and 503 (the
        // server is busy checking other credentials, or could not write
        // its registry) come before the token is used up: ask again when
        // the server says, a few times.
        let busy = matches!(resp.status().as_u16(), 429 | 503);
        if !busy || attempt == ENROLL_ATTEMPTS {
            break resp;
        }
        let wait = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(1)
            .clamp(1, 10);
        tracing::debug!("enrollment: {}; asking again in {wait} s", resp.status());
        std::thread::sleep(Duration::from_secs(wait));
        attempt += 1;
    };
    let b = read_reply(&url, resp)?;
    serde_json::from_slice(&b).map_err(|e| remote(&url, format!("malformed reply: {e}"), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert_eq!(normalize_url("https://h:8443/").unwrap(), "https://h:8443");
        assert_eq!(
            normalize_url(" https://[::1]:9 ").unwrap(),
            "https://[::1]:9"
        );
        assert!(normalize_url("http://h:1").is_err());
        assert!(normalize_url("https://h:1/api").is_err());
        assert!(normalize_url("h:1").is_err());
    }
}
