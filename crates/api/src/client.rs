//! A small blocking client of the controller's API, whose errors read well in a terminal:
//! the API's message and each field's path, or what to do when the controller cannot be
//! reached or the token is missing.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use ureq::unversioned::transport::Connector as _;

use crate::text::terminal_safe;
use crate::tls::{ClientTls, TlsConnector};
use crate::{ErrorBody, MAX_MESSAGE_BYTES};

/// Where the controller is and how to authenticate.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The controller's API, e.g. `http://127.0.0.1:8480`.
    pub url: String,
    /// The API token; `None`: read it from `token_file`.
    pub token: Option<String>,
    /// File holding the API token (the controller writes the admin token there).
    pub token_file: PathBuf,
    /// How an `https://` controller's certificate is verified.
    pub tls: ClientTls,
}

/// A failed API call.
#[derive(Debug)]
pub enum ClientError {
    /// The controller answered with an error.
    Api {
        /// The API's error body.
        body: ErrorBody,
        /// Extra advice (e.g. where the token came from).
        hint: Option<String>,
    },
    /// No answer.
    Unreachable(String),
    /// An answer that is not what the API answers.
    Unexpected(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Api { body, hint, .. } => {
                write!(f, "{}", terminal_safe(&body.message))?;
                for d in &body.details {
                    // The message already says it when there is one detail with its path.
                    if body.details.len() > 1 || !body.message.contains(&d.message) {
                        let (path, message) = (terminal_safe(&d.path), terminal_safe(&d.message));
                        write!(f, "\n  {path}: {message}")?;
                    }
                }
                if let Some(hint) = hint {
                    write!(f, "\n{hint}")?;
                }
                Ok(())
            }
            ClientError::Unreachable(m) | ClientError::Unexpected(m) => {
                f.write_str(&terminal_safe(m))
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// An API client.
pub struct Client {
    url: String,
    token: Result<String, String>,
    token_source: String,
    /// The agent, or why TLS could not be set up (reported by every call).
    agent: Result<ureq::Agent, String>,
}

impl Client {
    /// A client for `args`. A token that cannot be read is reported only if the
    /// controller asks for one.
    pub fn new(args: &ClientOptions) -> Client {
        let (token, token_source) = match &args.token {
            Some(t) => (
                Ok(t.trim().to_owned()),
                "--token / RICOCHET_TOKEN".to_owned(),
            ),
            None => {
                let file = args.token_file.display().to_string();
                let token = std::fs::read_to_string(&args.token_file)
                    .map(|t| t.trim().to_owned())
                    .map_err(|e| format!("{file} could not be read ({e})"));
                (token, file)
            }
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(60)))
            .build();
        let tls = if args.url.starts_with("https://")
            || args.tls.ca_file.is_some()
            || args.tls.fingerprint.is_some()
        {
            TlsConnector::new(&args.tls).map(Some)
        } else {
            Ok(None)
        };
        let plain_with_tls_options = !args.url.starts_with("https://")
            && tls.is_ok()
            && (args.tls.ca_file.is_some() || args.tls.fingerprint.is_some());
        let agent = match tls {
            _ if plain_with_tls_options => Err(format!(
                "a CA file or a fingerprint is given but the URL {} is not https://: \
                 nothing would be verified",
                args.url
            )),
            Ok(Some(tls)) => Ok(ureq::Agent::with_parts(
                config,
                ureq::unversioned::transport::TcpConnector::default().chain(tls),
                ureq::unversioned::resolver::DefaultResolver::default(),
            )),
            Ok(None) => Ok(config.into()),
            Err(e) => Err(e),
        };
        Client {
            url: args.url.trim_end_matches('/').to_owned(),
            token,
            token_source,
            agent,
        }
    }

    /// Why no token is sent, if none is.
    pub fn token_problem(&self) -> Option<&str> {
        self.token.as_ref().err().map(String::as_str)
    }

    /// GET `path`, decoded.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call("GET", path, None, &[]).map(|(v, _)| v)
    }

    /// GET `path` that may answer 304 Not Modified (the desired-state long poll): `None`
    /// then.
    pub fn get_unless_not_modified<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, ClientError> {
        let (status, text) = self.send("GET", path, None, &[])?;
        if status == 304 {
            return Ok(None);
        }
        self.decode("GET", path, status, &text).map(Some)
    }

    /// `method` on `path` with a JSON body and extra headers; the decoded answer and its
    /// status.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<(T, u16), ClientError> {
        let (status, text) = self.send(method, path, body, headers)?;
        self.decode(method, path, status, &text)
            .map(|value| (value, status))
    }

    /// Sends a request; the status and the body's text.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<(u16, String), ClientError> {
        let url = format!("{}{path}", self.url);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Ok(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let result = match body {
            Some(body) => {
                let bytes = serde_json::to_vec(body).expect("JSON values serialize");
                self.run(
                    &url,
                    request.header("Content-Type", "application/json"),
                    bytes,
                )
            }
            None => self.run(&url, request, ()),
        };
        let mut response = result?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_MESSAGE_BYTES as u64)
            .read_to_string()
            .map_err(|e| {
                ClientError::Unexpected(format!("reading the answer of {method} {url}: {e}"))
            })?;
        Ok((status, text))
    }

    /// Sends `request` (to `url`) with `body`.
    fn run(
        &self,
        url: &str,
        request: ureq::http::request::Builder,
        body: impl ureq::AsSendBody,
    ) -> Result<ureq::http::Response<ureq::Body>, ClientError> {
        let request = request
            .body(body)
            .map_err(|e| ClientError::Unexpected(format!("bad request to {url}: {e}")))?;
        let agent = self
            .agent
            .as_ref()
            .map_err(|why| ClientError::Unreachable(why.clone()))?;
        agent.run(request).map_err(|e| self.unreachable(&e))
    }

    /// Decodes a 2xx answer, or turns an error answer into a readable error.
    fn decode<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        status: u16,
        text: &str,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.url);
        if (200..300).contains(&status) {
            return serde_json::from_str(text).map_err(|e| {
                ClientError::Unexpected(format!(
                    "{method} {url} answered {status} with something unexpected ({e}); is {} a Ricochet controller?",
                    self.url
                ))
            });
        }
        let body: ErrorBody = serde_json::from_str(text).map_err(|_| {
            ClientError::Unexpected(format!(
                "{method} {url} answered {status}: {}",
                text.chars().take(200).collect::<String>()
            ))
        })?;
        let hint = (status == 401).then(|| match &self.token {
            Ok(_) => format!(
                "(the token came from {}; the admin token is in the controller's state \
                 directory, file admin-token)",
                self.token_source
            ),
            Err(why) => format!("no token was sent: {why}; pass --token or --token-file"),
        });
        Err(ClientError::Api { body, hint })
    }

    fn unreachable(&self, e: &ureq::Error) -> ClientError {
        let why = match e {
            ureq::Error::Io(io) => io.to_string(),
            ureq::Error::ConnectionFailed => "connection failed".to_owned(),
            ureq::Error::HostNotFound => "host not found".to_owned(),
            ureq::Error::Timeout(t) => format!("timed out ({t})"),
            other => other.to_string(),
        };
        if why.starts_with("TLS") {
            return ClientError::Unreachable(format!(
                "refusing the controller at {}: {why}",
                self.url
            ));
        }
        ClientError::Unreachable(format!(
            "the controller is not reachable at {} ({why}); start it with `ricochet \
             controller`, or point --url (RICOCHET_URL) at the one that runs",
            self.url
        ))
    }
}
