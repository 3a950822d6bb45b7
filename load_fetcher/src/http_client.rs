//! The HTTP client both sources use: timeouts on every request, TLS with a CA file or the
//! system roots, an optional client certificate and bearer token.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::{Error, Result};

/// How to reach an endpoint.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Upper bound for each request, connection included.
    pub timeout: Duration,
    /// File holding a bearer token (a service account token), sent on every request.
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle to verify servers with; the system roots otherwise.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key (e.g. the ones in a kubeconfig).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate. Only for test clusters with self-signed certificates.
    pub insecure_skip_tls_verify: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(5),
            token_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            insecure_skip_tls_verify: false,
        }
    }
}

impl ClientOptions {
    /// A reqwest client for `address` (named in errors only).
    pub fn build(&self, address: &str) -> Result<reqwest::Client> {
        let client_error = |reason: String| Error::Client {
            address: address.to_owned(),
            reason,
        };
        let mut headers = HeaderMap::new();
        if let Some(path) = &self.token_file {
            let token = read(path)?;
            let token = String::from_utf8(token).map_err(|_| Error::InvalidFile {
                path: path.clone(),
                reason: "the token is not UTF-8".into(),
            })?;
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
                    Error::InvalidFile {
                        path: path.clone(),
                        reason: "the token holds characters not allowed in a header".into(),
                    }
                })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .default_headers(headers)
            // A proxy from the environment would be a surprise for loopback addresses.
            .no_proxy()
            .tls_backend_preconfigured(self.tls_config()?)
            .build()
            .map_err(|e| client_error(crate::error::cause_chain(&e)))
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig> {
        // The provider is passed explicitly: a process-wide default may not be installed,
        // and with several providers linked in rustls could not pick one.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS versions: {e}")))?;
        let builder = if self.insecure_skip_tls_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServer {
                    algorithms: provider.signature_verification_algorithms,
                }))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert)?;
                let key_der =
                    PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| Error::InvalidFile {
                        path: key.clone(),
                        reason: format!("no PEM private key: {e}"),
                    })?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| Error::InvalidFile {
                        path: cert.clone(),
                        reason: format!("client certificate and key do not fit: {e}"),
                    })
            }
            (None, None) => Ok(builder.with_no_client_auth()),
            _ => Err(Error::Config(
                "a client certificate needs its key and the key its certificate".into(),
            )),
        }
    }

    fn roots(&self) -> Result<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                for cert in certificates(path)? {
                    roots.add(cert).map_err(|e| Error::InvalidFile {
                        path: path.clone(),
                        reason: format!("unusable CA certificate: {e}"),
                    })?;
                }
            }
            None => {
                // Unreadable system certificates are skipped; a server they would have
                // verified then fails with a TLS error that names it.
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        Ok(roots)
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|cause| Error::ReadFile {
        path: path.to_owned(),
        cause,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::InvalidFile {
            path: path.to_owned(),
            reason: format!("bad PEM certificate: {e}"),
        })?;
    if certs.is_empty() {
        return Err(Error::InvalidFile {
            path: path.to_owned(),
            reason: "no PEM certificate in it".into(),
        });
    }
    Ok(certs)
}

/// `--insecure-skip-tls-verify`: any certificate is accepted, but the handshake signatures
/// are still checked so the connection is at least to whoever holds the presented key.
#[derive(Debug)]
struct AcceptAnyServer {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
