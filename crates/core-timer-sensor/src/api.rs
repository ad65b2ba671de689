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

/// An event as posted to `/api/v1/events` (upstream's `CreateEventRequest`),
/// and as one line of the spool.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// The trigger type.
    pub trigger_ref: String,
    /// What happened.
    pub payload: Value,
    /// `rule_<id>`.
    pub trigger_instance_id: String,
}

impl std::fmt::Display for Event {
    /// Names the event for a log line: trigger, instance, count and time,
    /// for example `core.intervaltimer rule_1 #3 fired at 2030-01-01T00:00:03Z`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.trigger_ref, self.trigger_instance_id)?;
        if let Some(n) = self.payload.get("execution_count").and_then(Value::as_u64) {
            write!(f, " #{n}")?;
        }
        if let Some(t) = self.payload.get("fired_at").and_then(Value::as_str) {
            write!(f, " fired at {t}")?;
        }
        Ok(())
    }
}

/// How a request ended, as the sender acts on it.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// 2xx.
    Ok(Vec<u8>),
    /// Worth retrying: unreachable, a timeout (408), busy (429), a server error
    /// (5xx), or a status this sensor does not expect. `after` is the server's
    /// `Retry-After` on 429 and 503.
    Retry {
        /// What happened, for the log.
        why: String,
        /// How long the server asked to wait.
        after: Option<Duration>,
    },
    /// 401 or 403: the token is refused; only a restart with a fresh one helps.
    Unauthorized(u16),
    /// 400 or 422: the request itself is refused; sending it again cannot help.
    Invalid(u16, String),
}

/// What a status means for a request that can be sent again unchanged.
pub fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Ok(body.to_vec()),
        401 | 403 => Outcome::Unauthorized(status),
        400 | 422 => Outcome::Invalid(
            status,
            String::from_utf8_lossy(body).chars().take(300).collect(),
        ),
        429 | 503 => Outcome::Retry {
            why: format!("HTTP {status}"),
            after: retry_after,
        },
        408 | 500..=599 => Outcome::Retry {
            why: format!("HTTP {status}"),
            after: None,
        },
        // 404, 405, 413, 3xx...: a misconfigured URL or proxy, not a bad event.
        // Dropping would lose events the API may take once it is fixed.
        other => Outcome::Retry {
            why: format!(
                "unexpected HTTP {other} (is {} right?)",
                attune_contract::env::API_URL
            ),
            after: None,
        },
    }
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
            Err(e) => Outcome::Retry {
                why: format!("{method} {path}: {e}"),
                after: None,
            },
            Ok(r) => match classify(r.status, &r.body, r.retry_after) {
                Outcome::Retry { why, after } => Outcome::Retry {
                    why: format!("{method} {path}: {why}"),
                    after,
                },
                other => other,
            },
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
                Outcome::Retry { why, .. } => return Err(why),
                Outcome::Unauthorized(s) => {
                    return Err(format!("GET {path}: HTTP {s}: the token is refused"));
                }
                Outcome::Invalid(s, m) => return Err(format!("GET {path}: HTTP {s}: {m}")),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind(status: u16) -> &'static str {
        match classify(status, b"", None) {
            Outcome::Ok(_) => "ok",
            Outcome::Retry { .. } => "retry",
            Outcome::Unauthorized(_) => "auth",
            Outcome::Invalid(..) => "invalid",
        }
    }

    /// 408 (the API's own body timeout) was final: the event was dropped.
    #[test]
    fn only_400_and_422_are_final_for_an_event() {
        for (status, want) in [
            (200, "ok"),
            (201, "ok"),
            (400, "invalid"),
            (422, "invalid"),
            (401, "auth"),
            (403, "auth"),
            (408, "retry"),
            (429, "retry"),
            (500, "retry"),
            (503, "retry"),
            (504, "retry"),
            (404, "retry"),
            (413, "retry"),
            (302, "retry"),
        ] {
            assert_eq!(kind(status), want, "HTTP {status}");
        }
    }

    #[test]
    fn retry_after_is_kept_for_429_and_503_only() {
        let wait = Some(Duration::from_secs(2));
        for status in [429, 503] {
            assert!(
                matches!(classify(status, b"", wait), Outcome::Retry { after, .. } if after == wait)
            );
        }
        assert!(matches!(
            classify(500, b"", wait),
            Outcome::Retry { after: None, .. }
        ));
    }

    #[test]
    fn an_event_names_itself() {
        let e = Event {
            trigger_ref: "core.intervaltimer".into(),
            payload: json!({"execution_count": 3, "fired_at": "2030-01-01T00:00:03Z"}),
            trigger_instance_id: "rule_1".into(),
        };
        assert_eq!(
            e.to_string(),
            "core.intervaltimer rule_1 #3 fired at 2030-01-01T00:00:03Z"
        );
    }
}
