//! A blocking JSON client for the Attune API with the bearer token; keeps
//! connections alive between calls.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a call failed.
#[derive(Debug)]
pub enum ApiError {
    /// No answer (connection refused, timeout): worth retrying.
    Unreachable(String),
    /// An answer with a non-2xx status.
    Status(u16, String),
    /// A 2xx answer whose body was not the expected JSON.
    Body(String),
}

impl ApiError {
    /// Whether retrying may help (unreachable, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Unreachable(_) => true,
            ApiError::Status(s, _) => *s >= 500 || *s == 429,
            ApiError::Body(_) => false,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Unreachable(m) => write!(f, "API unreachable: {m}"),
            ApiError::Status(s, b) => write!(f, "API answered HTTP {s}: {b}"),
            ApiError::Body(m) => write!(f, "API answer not understood: {m}"),
        }
    }
}

impl std::error::Error for ApiError {}

/// A client for one API.
#[derive(Clone, Debug)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    auth: String,
}

impl Client {
    /// A client for `base` (`http://host:port`) with `token`; requests time out after 30 s.
    pub fn new(base: &str, token: &str) -> Client {
        Client::with_timeout(base, token, Duration::from_secs(30))
    }

    /// A client whose requests time out after `timeout`.
    pub fn with_timeout(base: &str, token: &str, timeout: Duration) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Client {
            agent,
            base: base.trim_end_matches('/').to_string(),
            auth: format!("Bearer {token}"),
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn finish<T: DeserializeOwned>(
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Option<T>, ApiError> {
        let mut resp = result.map_err(|e| ApiError::Unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        if status == 204 {
            return Ok(None);
        }
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| ApiError::Unreachable(e.to_string()))?;
        if !(200..300).contains(&status) {
            return Err(ApiError::Status(status, text.chars().take(500).collect()));
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ApiError::Body(e.to_string()))
    }

    /// `GET path`, expecting JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let r = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .call();
        Self::finish(r)?.ok_or_else(|| ApiError::Body("empty answer".into()))
    }

    /// `POST path` with a JSON body; `None` for 204 No Content.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Option<T>, ApiError> {
        let r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .send_json(body);
        Self::finish(r)
    }
}
