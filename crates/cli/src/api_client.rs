//! The controller's clients' options on the command line; the client itself is
//! `ricochet_api::client`.

use std::path::PathBuf;

use clap::Args;
pub use ricochet_api::client::Client;
use ricochet_api::client::ClientOptions;

/// Where the controller is and how to authenticate.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The controller's API.
    #[arg(long, env = "RICOCHET_URL", default_value = "http://127.0.0.1:8480")]
    pub url: String,
    /// The API token (default: read from --token-file).
    #[arg(long, env = "RICOCHET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the API token (the controller writes the admin token there).
    #[arg(
        long,
        env = "RICOCHET_TOKEN_FILE",
        default_value = "/var/lib/ricochet/admin-token"
    )]
    pub token_file: PathBuf,
    /// PEM file of the CA that signed the controller's certificate (https://).
    #[arg(long, env = "RICOCHET_CA_FILE", conflicts_with = "fingerprint")]
    pub ca_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the controller's certificate, pinned (https://; e.g. the
    /// self-signed one it logs at start).
    #[arg(long, env = "RICOCHET_CONTROLLER_FINGERPRINT")]
    pub fingerprint: Option<String>,
}

impl ClientArgs {
    /// A client of the controller these options name.
    pub fn client(&self) -> Client {
        Client::new(&ClientOptions {
            url: self.url.clone(),
            token: self.token.clone(),
            token_file: self.token_file.clone(),
            tls: ricochet_api::tls::ClientTls {
                ca_file: self.ca_file.clone(),
                fingerprint: self.fingerprint.clone(),
            },
        })
    }
}
