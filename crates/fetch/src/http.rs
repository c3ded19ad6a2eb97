//! The HTTP client: one blocking agent with timeouts, and errors that say
//! which URL failed and what to do.

use std::time::Duration;

use ureq::http::Response;
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::{Agent, Body};

use crate::error::{FetchError, Result};

/// How long to wait for a connection to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long any single read may stall before the transfer is abandoned.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A blocking HTTP(S) agent: rustls trusting the system's certificate
/// store ([`root_certs`]), proxy from the usual environment variables,
/// redirects followed, statuses checked by [`get`] rather than turned into
/// opaque errors.
pub(crate) fn agent() -> Agent {
    Agent::config_builder()
        .tls_config(TlsConfig::builder().root_certs(root_certs()).build())
        .http_status_as_error(false)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .user_agent(concat!("hypertensor/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

/// The certificate authorities to trust: the system's store (which honours
/// `SSL_CERT_FILE` and `SSL_CERT_DIR`, and holds the CA of a corporate
/// TLS-inspecting proxy if there is one), or Mozilla's bundled roots when
/// the system has no store.
fn root_certs() -> RootCerts {
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "skipping unreadable system certificates");
    }
    if native.certs.is_empty() {
        tracing::debug!("no system certificate store; using the bundled Mozilla roots");
        return RootCerts::WebPki;
    }
    let certs: Vec<Certificate<'static>> = native
        .certs
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    RootCerts::new_with_certs(&certs)
}

/// GETs `url`, accepting only `200 OK`. `advice` goes into the error a user
/// sees if the request fails.
pub(crate) fn get(
    agent: &Agent,
    url: &str,
    accept: Option<&str>,
    advice: &str,
) -> Result<Response<Body>> {
    let mut request = agent.get(url);
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let response = request.call().map_err(|e| unreachable(url, &e, advice))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(FetchError::HttpStatus {
            url: url.to_string(),
            status,
            advice: advice.to_string(),
        });
    }
    Ok(response)
}

/// The error for a transfer that could not start or did not finish.
pub(crate) fn unreachable(url: &str, reason: &dyn std::fmt::Display, advice: &str) -> FetchError {
    FetchError::Unreachable {
        url: url.to_string(),
        reason: reason.to_string(),
        advice: advice.to_string(),
    }
}
