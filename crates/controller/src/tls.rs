//! TLS for the API (rustls): a certificate and key given by path, or a self-signed pair
//! generated there on first start when asked. Clients verify it with a CA file or by the
//! certificate's SHA-256 fingerprint, which the controller logs at every start.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the certificate and key are, and whether to create them.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// PEM certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// If neither file exists, generate a self-signed certificate for `names` there.
    pub generate: bool,
    /// DNS names and IP addresses a generated certificate is valid for.
    pub names: Vec<String>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file's content is not usable.
    #[error("{}: {why}", path.display())]
    Content {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Only one of the two files exists, or neither and generating was not asked.
    #[error("{0}")]
    Setup(String),
}

/// The server's TLS set-up, ready to accept.
pub struct ServerTls {
    /// The acceptor.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The certificate's SHA-256 fingerprint (`AB:CD:..`), for clients to pin.
    pub fingerprint: String,
    /// Whether the certificate was generated now.
    pub generated: bool,
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::File {
        path: path.to_owned(),
        source,
    }
}

/// Writes `contents` to a new file with `mode` (refusing to replace one).
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(file_error(path))?;
    file.write_all(contents).map_err(file_error(path))?;
    file.sync_all().map_err(file_error(path))
}

fn generate(options: &TlsOptions) -> Result<(), TlsError> {
    let generated = rcgen::generate_simple_self_signed(options.names.clone())
        .map_err(|e| TlsError::Setup(format!("generating a self-signed certificate: {e}")))?;
    for path in [&options.cert, &options.key] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(file_error(dir))?;
        }
    }
    // The key first and private: a crash between the two leaves no certificate that
    // would be loaded without its key.
    write_new(
        &options.key,
        generated.key_pair.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_new(&options.cert, generated.cert.pem().as_bytes(), 0o644)
}

/// Loads (or generates, if asked and absent) the certificate and key.
pub fn server_tls(options: &TlsOptions) -> Result<ServerTls, TlsError> {
    let (cert_exists, key_exists) = (options.cert.exists(), options.key.exists());
    let generated = match (cert_exists, key_exists) {
        (true, true) => false,
        (false, false) if options.generate => {
            generate(options)?;
            true
        }
        (false, false) => {
            return Err(TlsError::Setup(format!(
                "the TLS certificate {} and key {} do not exist (pass --tls-self-signed to \
                 generate a self-signed pair there)",
                options.cert.display(),
                options.key.display()
            )))
        }
        (true, false) | (false, true) => {
            let (there, missing) = if cert_exists {
                (&options.cert, &options.key)
            } else {
                (&options.key, &options.cert)
            };
            return Err(TlsError::Setup(format!(
                "{} exists but {} does not: give both the certificate and its key (nothing \
                 is generated over a half pair)",
                there.display(),
                missing.display()
            )));
        }
    };
    let certs: Result<Vec<CertificateDer<'static>>, _> =
        CertificateDer::pem_file_iter(&options.cert)
            .map_err(|e| TlsError::Content {
                path: options.cert.clone(),
                why: e.to_string(),
            })?
            .collect();
    let certs = certs.map_err(|e| TlsError::Content {
        path: options.cert.clone(),
        why: format!("not a PEM certificate: {e}"),
    })?;
    let Some(first) = certs.first() else {
        return Err(TlsError::Content {
            path: options.cert.clone(),
            why: "holds no certificate".into(),
        });
    };
    let fingerprint = ricochet_api::tls::fingerprint(first.as_ref());
    let key = PrivateKeyDer::from_pem_file(&options.key).map_err(|e| TlsError::Content {
        path: options.key.clone(),
        why: format!("not a PEM private key: {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(format!("TLS set-up: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Content {
            path: options.key.clone(),
            why: format!(
                "does not go with the certificate {}: {e}",
                options.cert.display()
            ),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        fingerprint,
        generated,
    })
}
