//! The Attune API as this sensor uses it: health, events, and rules by trigger.

use std::time::Duration;

use serde_json::Value;

use crate::config::{Config, TriggerInstance, trigger_instance};
use crate::http::{self, Url};

/// Requests give up after this long.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Pages of rules read at most in one reconciliation.
pub const MAX_PAGES: usize = 100;

/// Rules are fetched in pages of this size.
const PAGE_SIZE: u32 = 100;

/// A client for one API.
#[derive(Clone, Debug)]
pub struct Api {
    url: Url,
    token: String,
}

/// An event as posted to `/api/v1/events`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// The trigger type.
    pub trigger_ref: String,
    /// What happened.
    pub payload: Value,
    /// `rule_<id>`.
    pub trigger_instance_id: String,
}

/// How a request ended.
#[derive(Debug)]
pub enum Outcome {
    /// 2xx.
    Ok(Vec<u8>),
    /// Worth retrying: unreachable, 5xx or 429.
    Retry(String),
    /// Not worth retrying (401, 403, other 4xx).
    Rejected(u16, String),
}

impl Api {
    /// A client for the configured API.
    pub fn new(config: &Config) -> Api {
        Api {
            url: Url::parse(&config.api_url).expect("validated with the configuration"),
            token: config.api_token.clone(),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&[u8]>, timeout: Duration) -> Outcome {
        match http::request(&self.url, method, path, Some(&self.token), body, timeout) {
            Err(e) => Outcome::Retry(format!("{method} {path}: {e}")),
            Ok(r) if (200..300).contains(&r.status) => Outcome::Ok(r.body),
            Ok(r) if r.status >= 500 || r.status == 429 => {
                Outcome::Retry(format!("{method} {path}: HTTP {}", r.status))
            }
            Ok(r) => Outcome::Rejected(
                r.status,
                String::from_utf8_lossy(&r.body).chars().take(300).collect(),
            ),
        }
    }

    /// `GET /health` answered 2xx.
    pub fn healthy(&self) -> bool {
        matches!(
            self.call("GET", "/health", None, Duration::from_secs(1)),
            Outcome::Ok(_)
        )
    }

    /// `POST /api/v1/events`.
    pub fn post_event(&self, event: &Event, timeout: Duration) -> Outcome {
        let body = serde_json::to_vec(event).expect("events serialize");
        self.call("POST", "/api/v1/events", Some(&body), timeout)
    }

    /// Every enabled rule for `trigger_ref`, following pagination up to
    /// [`MAX_PAGES`] pages (an API that always says `has_next` cannot grow
    /// the sensor's memory without bound).
    pub fn rules(&self, trigger_ref: &str) -> Result<Vec<TriggerInstance>, String> {
        let mut out = vec![];
        for page in 1.. {
            if page > MAX_PAGES {
                return Err(format!(
                    "GET /api/v1/rules?trigger_ref={trigger_ref}: still `has_next` after {MAX_PAGES} pages of {PAGE_SIZE}; kept the current timers"
                ));
            }
            let path = format!(
                "/api/v1/rules?trigger_ref={trigger_ref}&enabled=true&page={page}&page_size={PAGE_SIZE}"
            );
            let body = match self.call("GET", &path, None, TIMEOUT) {
                Outcome::Ok(b) => b,
                Outcome::Retry(m) => return Err(m),
                Outcome::Rejected(s, m) => return Err(format!("GET {path}: HTTP {s}: {m}")),
            };
            let v: Value =
                serde_json::from_slice(&body).map_err(|e| format!("GET {path}: not JSON: {e}"))?;
            // Upstream's lists are `items`; `data` is accepted too.
            let items = v
                .get("items")
                .or_else(|| v.get("data"))
                .and_then(Value::as_array)
                .ok_or_else(|| format!("GET {path}: no `items` array in the answer"))?;
            for item in items {
                let mut inst =
                    trigger_instance(item).map_err(|e| format!("GET {path}: rule {item}: {e}"))?;
                inst.trigger_ref
                    .get_or_insert_with(|| trigger_ref.to_string());
                out.push(inst);
            }
            let has_next = v
                .pointer("/pagination/has_next")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if !has_next || items.is_empty() {
                break;
            }
        }
        Ok(out)
    }
}
