//! TLS for the controller's clients (the CLI and the engines): the controller's
//! certificate is verified either by a CA file (the usual chain and name checks) or by
//! its pinned SHA-256 fingerprint (for the self-signed certificate the controller can
//! generate: no CA, no name to match, only that exact certificate).
//!
//! ureq has no hook for a custom certificate verifier, so this is a ureq connector of
//! its own over rustls; it also keeps the verifier's reason for a refusal, so that the
//! error says *why* ("fingerprint AB:.. is not the pinned CD:..") instead of rustls'
//! generic "invalid peer certificate".

use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};
use sha2::{Digest as _, Sha256};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

/// Where the system's CA bundle is (Debian's `ca-certificates`), used for `https://`
/// when neither a CA file nor a fingerprint is given.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How the client trusts the controller's certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM file of the CA(s) that signed the controller's certificate.
    pub ca_file: Option<PathBuf>,
    /// The SHA-256 fingerprint of the controller's certificate (hex, colons optional,
    /// as `openssl x509 -fingerprint -sha256` prints it).
    pub fingerprint: Option<String>,
}

/// The SHA-256 fingerprint of a DER certificate, as `AB:CD:..` (openssl's format).
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a fingerprint: 64 hex digits, colons and an `sha256 Fingerprint=` prefix
/// allowed.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let hex_part = text.rsplit_once('=').map_or(text, |(_, h)| h);
    let digits: String = hex_part.chars().filter(|c| *c != ':').collect();
    let bad = || {
        format!(
            "{text:?} is not a SHA-256 fingerprint: give 64 hex digits, colons allowed \
             (openssl x509 -noout -fingerprint -sha256 -in cert.pem prints it)"
        )
    };
    if digits.len() != 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("the CA file {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the CA file {} holds no certificate",
            path.display()
        ));
    }
    Ok(certs)
}

enum Trust {
    Pinned([u8; 32]),
    Ca {
        file: String,
        verifier: Arc<WebPkiServerVerifier>,
    },
}

/// Verifies the controller's certificate and keeps the reason of the last refusal.
struct Verifier {
    trust: Trust,
    provider: Arc<CryptoProvider>,
    refusal: Mutex<Option<String>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier")
    }
}

impl Verifier {
    fn refuse(&self, why: String) -> rustls::Error {
        *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.trust {
            Trust::Pinned(pin) => {
                let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
                if &got == pin {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(self.refuse(format!(
                        "the controller's certificate has the SHA-256 fingerprint {}, not the \
                         pinned {}",
                        fingerprint(end_entity.as_ref()),
                        pin.iter()
                            .map(|b| format!("{b:02X}"))
                            .collect::<Vec<_>>()
                            .join(":")
                    )))
                }
            }
            Trust::Ca { file, verifier } => verifier
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|e| {
                    self.refuse(format!(
                        "the controller's certificate is not trusted by the CA file {file}: {e}"
                    ))
                }),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A ureq connector that wraps `https://` connections in rustls with [`Verifier`].
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    verifier: Arc<Verifier>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConnector")
    }
}

impl TlsConnector {
    /// The connector for `tls`: the pinned fingerprint, else the CA file, else the
    /// system's CA bundle.
    pub fn new(tls: &ClientTls) -> Result<TlsConnector, String> {
        let provider = provider();
        let trust = match (&tls.fingerprint, &tls.ca_file) {
            (Some(_), Some(_)) => {
                return Err(
                    "give either a CA file or a certificate fingerprint, not both".to_owned(),
                )
            }
            (Some(text), None) => Trust::Pinned(parse_fingerprint(text)?),
            (None, ca) => {
                let file = ca
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
                let mut roots = RootCertStore::empty();
                for cert in load_certs(&file)? {
                    roots.add(cert).map_err(|e| {
                        format!(
                            "a certificate in {} is not usable as a CA: {e}",
                            file.display()
                        )
                    })?;
                }
                let verifier =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| format!("the CA file {}: {e}", file.display()))?;
                Trust::Ca {
                    file: file.display().to_string(),
                    verifier,
                }
            }
        };
        let verifier = Arc::new(Verifier {
            trust,
            provider: provider.clone(),
            refusal: Mutex::new(None),
        });
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        Ok(TlsConnector {
            config: Arc::new(config),
            verifier,
        })
    }
}

impl<In: Transport> Connector<In> for TlsConnector {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let name = ServerName::try_from(host.clone())
            .map_err(|_| ureq::Error::BadUri(format!("{host:?} is not a TLS server name")))?;
        let mut conn = ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(|e| ureq::Error::Io(std::io::Error::other(format!("TLS: {e}"))))?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        if let Err(e) = conn.complete_io(&mut sock) {
            let refusal = self
                .verifier
                .refusal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let why = match refusal {
                Some(why) => format!("TLS: {why}"),
                None => format!("TLS handshake: {e}"),
            };
            return Err(ureq::Error::Io(std::io::Error::other(why)));
        }
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TlsTransport {
            buffers,
            stream: StreamOwned { conn, sock },
        })))
    }
}

/// A TLS connection under ureq.
pub struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsTransport")
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_openssl_and_plain_forms() {
        let hex = "AB".repeat(32);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_fingerprint(&hex).unwrap(), [0xAB; 32]);
        assert_eq!(
            parse_fingerprint(&format!("sha256 Fingerprint={colons}")).unwrap(),
            [0xAB; 32]
        );
        assert!(parse_fingerprint("AB:CD")
            .unwrap_err()
            .contains("64 hex digits"));
        assert_eq!(fingerprint(b"x").len(), 32 * 3 - 1);
    }
}
