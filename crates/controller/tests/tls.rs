//! TLS: the API over rustls with a generated self-signed certificate; the clients (the
//! CLI's and the engines' `ricochet_api::client`) accept it by the right CA file or
//! fingerprint and refuse a wrong one with a message saying why; plain HTTP only on
//! loopback unless allowed.

mod common;

use std::path::Path;

use common::{options, Ctl};
use ricochet_api::client::{Client, ClientError, ClientOptions};
use ricochet_api::tls::ClientTls;
use ricochet_api::types::Health;
use ricochet_controller::tls::{server_tls, TlsOptions};
use ricochet_controller::{Controller, ControllerError};
use rustls_pki_types::pem::PemObject as _;

fn tls_options(dir: &Path) -> TlsOptions {
    TlsOptions {
        cert: dir.join("tls-cert.pem"),
        key: dir.join("tls-key.pem"),
        generate: true,
        names: vec!["localhost".into(), "127.0.0.1".into()],
    }
}

fn client(url: &str, token: &str, tls: ClientTls) -> Client {
    Client::new(&ClientOptions {
        url: url.to_owned(),
        token: Some(token.to_owned()),
        token_file: "/nonexistent".into(),
        tls,
    })
}

fn refusal(result: Result<Health, ClientError>) -> String {
    match result {
        Err(e) => e.to_string(),
        Ok(h) => panic!("a wrong certificate was accepted: {h:?}"),
    }
}

#[test]
fn clients_accept_the_right_certificate_and_refuse_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_options(dir.path());
    let mut o = options(dir.path());
    o.tls = Some(tls.clone());
    let ctl = Ctl::start_with(tempfile::tempdir().unwrap(), o);
    let url = ctl.url.replace("http://", "https://");

    // Generated on first start, the key private.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&tls.key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let pem = std::fs::read_to_string(&tls.cert).unwrap();
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let fingerprint = ricochet_api::tls::fingerprint(der.as_ref());
    // The controller reports the same fingerprint it serves (loading the same files).
    assert_eq!(server_tls(&tls).unwrap().fingerprint, fingerprint);

    // Right fingerprint, right CA file: answered (an authenticated route too).
    let pinned = client(
        &url,
        &ctl.token,
        ClientTls {
            fingerprint: Some(fingerprint.to_lowercase()),
            ca_file: None,
        },
    );
    assert_eq!(pinned.get::<Health>("/healthz").unwrap().status, "ok");
    pinned.get::<serde_json::Value>("/api/v1/pools").unwrap();
    let by_ca = client(
        &url,
        &ctl.token,
        ClientTls {
            ca_file: Some(tls.cert.clone()),
            fingerprint: None,
        },
    );
    assert_eq!(by_ca.get::<Health>("/healthz").unwrap().status, "ok");

    // A wrong fingerprint.
    let wrong = "00".repeat(32);
    let message = refusal(
        client(
            &url,
            &ctl.token,
            ClientTls {
                fingerprint: Some(wrong),
                ca_file: None,
            },
        )
        .get::<Health>("/healthz"),
    );
    assert!(
        message.contains(&format!("has the SHA-256 fingerprint {fingerprint}"))
            && message.contains("not the pinned 00:00"),
        "{message}"
    );

    // Another CA (a second self-signed certificate).
    let other = tempfile::tempdir().unwrap();
    let other_tls = tls_options(other.path());
    server_tls(&other_tls).unwrap();
    let message = refusal(
        client(
            &url,
            &ctl.token,
            ClientTls {
                ca_file: Some(other_tls.cert.clone()),
                fingerprint: None,
            },
        )
        .get::<Health>("/healthz"),
    );
    assert!(
        message.contains("is not trusted by the CA file"),
        "{message}"
    );

    // Verification settings with a plain URL would verify nothing: refused.
    let message = refusal(
        client(
            &ctl.url,
            &ctl.token,
            ClientTls {
                ca_file: Some(tls.cert.clone()),
                fingerprint: None,
            },
        )
        .get::<Health>("/healthz"),
    );
    assert!(message.contains("is not https://"), "{message}");

    // A restart keeps the certificate (same fingerprint).
    drop(ctl);
    assert_eq!(server_tls(&tls).unwrap().fingerprint, fingerprint);
}

#[test]
fn a_half_pair_is_refused_and_nothing_is_generated_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_options(dir.path());
    std::fs::write(&tls.cert, "not used").unwrap();
    let Err(e) = server_tls(&tls) else {
        panic!("a certificate without its key was accepted")
    };
    assert!(
        e.to_string()
            .contains("give both the certificate and its key"),
        "{e}"
    );
    assert!(!tls.key.exists());
}

fn bind(o: ricochet_controller::Options) -> Result<Controller, ControllerError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(Controller::bind(o))
}

#[test]
fn plain_http_is_refused_off_loopback_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.listen = "0.0.0.0:0".parse().unwrap();
    let Err(e) = bind(o.clone()) else {
        panic!("plain HTTP on 0.0.0.0 was accepted")
    };
    let message = e.to_string();
    assert!(
        message.contains("refusing plain HTTP on 0.0.0.0:0")
            && message.contains("--allow-plain-http"),
        "{message}"
    );
    // Allowed explicitly, or over TLS: it starts.
    let mut allowed = o.clone();
    allowed.allow_plain_http = true;
    drop(bind(allowed).expect("plain HTTP allowed"));
    let mut tls = o;
    tls.tls = Some(tls_options(dir.path()));
    drop(bind(tls).expect("TLS on every address"));
}
