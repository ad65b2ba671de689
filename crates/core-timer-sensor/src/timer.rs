//! Timers: the three core trigger types, their next deadlines (absolute, so no
//! drift accumulates) and the payloads they fire.

use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::config::TriggerInstance;

/// The longest interval accepted: about 100 years, far inside what clocks add up.
pub const MAX_INTERVAL_SECS: u64 = 100 * 366 * 86_400;

/// `core.intervaltimer`.
pub const INTERVAL: &str = "core.intervaltimer";
/// `core.crontimer`.
pub const CRON: &str = "core.crontimer";
/// `core.datetimetimer`.
pub const DATETIME: &str = "core.datetimetimer";
/// The trigger types this sensor serves.
pub const TRIGGER_TYPES: [&str; 3] = [INTERVAL, CRON, DATETIME];

/// When a timer fires.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Every `every`, counted from the moment the timer starts.
    Interval {
        /// The period.
        every: Duration,
    },
    /// On a six-field cron expression, in a time zone.
    Cron {
        /// The parsed schedule.
        schedule: Box<cron::Schedule>,
        /// Its time zone.
        tz: Zone,
    },
    /// Once, at an instant.
    DateTime {
        /// The instant.
        at: DateTime<Utc>,
    },
}

/// One timer: an instance of a trigger type for one rule.
#[derive(Clone, Debug)]
pub struct Timer {
    /// The rule id.
    pub id: String,
    /// The trigger ref.
    pub trigger_ref: String,
    /// The trigger parameters as given (a change restarts the timer).
    pub config: Value,
    /// When it fires.
    pub schedule: Schedule,
}

/// What the trigger ref is when the instance does not say: inferred from its keys.
pub fn infer_trigger_ref(config: &Value) -> Option<&'static str> {
    if config.get("interval").is_some() {
        Some(INTERVAL)
    } else if config.get("expression").is_some() {
        Some(CRON)
    } else if config.get("fire_at").is_some() {
        Some(DATETIME)
    } else {
        None
    }
}

impl Timer {
    /// Builds a timer from a trigger instance; `now` decides whether a date-time is in the past.
    pub fn new(inst: &TriggerInstance, now: DateTime<Utc>) -> Result<Timer, String> {
        let c = &inst.config;
        let trigger_ref = match &inst.trigger_ref {
            Some(r) => r.clone(),
            None => infer_trigger_ref(c)
                .ok_or("no trigger_ref, and the config has none of `interval`, `expression`, `fire_at`")?
                .to_string(),
        };
        let schedule = match trigger_ref.as_str() {
            INTERVAL => {
                let interval = c
                    .get("interval")
                    .and_then(Value::as_u64)
                    .filter(|n| *n > 0)
                    .ok_or("`interval` must be a whole number of at least 1")?;
                let unit = c.get("unit").and_then(Value::as_str).unwrap_or("seconds");
                let scale = match unit {
                    "seconds" | "second" | "s" => 1,
                    "minutes" | "minute" | "m" => 60,
                    "hours" | "hour" | "h" => 3600,
                    "days" | "day" | "d" => 86400,
                    other => {
                        return Err(format!(
                            "`unit` `{other}` is not seconds, minutes, hours or days"
                        ));
                    }
                };
                let secs = interval
                    .checked_mul(scale)
                    .filter(|s| *s <= MAX_INTERVAL_SECS)
                    .ok_or_else(|| {
                        format!("`interval` {interval} {unit} is too large; at most {MAX_INTERVAL_SECS} seconds (about 100 years)")
                    })?;
                Schedule::Interval {
                    every: Duration::from_secs(secs),
                }
            }
            CRON => {
                let expr = c
                    .get("expression")
                    .and_then(Value::as_str)
                    .ok_or("`expression` must be a string")?;
                let fields = expr.split_whitespace().count();
                if fields != 6 {
                    return Err(format!(
                        "`expression` `{expr}` has {fields} fields; six are needed: second minute hour day-of-month month day-of-week"
                    ));
                }
                let schedule = cron::Schedule::from_str(expr)
                    .map_err(|e| format!("`expression` `{expr}`: {e}"))?;
                if schedule.after(&now).next().is_none() {
                    return Err(format!(
                        "`expression` `{expr}` never fires (no such date, for example 31 February)"
                    ));
                }
                let tz = match c.get("timezone").and_then(Value::as_str) {
                    None => Zone::utc(),
                    Some(name) => Zone::parse(name)?,
                };
                Schedule::Cron {
                    schedule: Box::new(schedule),
                    tz,
                }
            }
            DATETIME => {
                let text = c
                    .get("fire_at")
                    .and_then(Value::as_str)
                    .ok_or("`fire_at` must be an RFC 3339 string")?;
                let at = DateTime::parse_from_rfc3339(text)
                    .map_err(|e| format!("`fire_at` `{text}` is not RFC 3339 (for example 2030-01-01T00:00:00Z): {e}"))?
                    .with_timezone(&Utc);
                if at <= now {
                    return Err(format!("`fire_at` {text} is in the past"));
                }
                Schedule::DateTime { at }
            }
            other => {
                return Err(format!(
                    "trigger type `{other}` is not served by this sensor ({})",
                    TRIGGER_TYPES.join(", ")
                ));
            }
        };
        Ok(Timer {
            id: inst.id.clone(),
            trigger_ref,
            config: c.clone(),
            schedule,
        })
    }

    /// The next wall-clock time the schedule fires after `after` (cron and date-time).
    /// The `timezone` parameter as given, else `UTC`.
    fn timezone(&self) -> String {
        self.config
            .get("timezone")
            .and_then(Value::as_str)
            .unwrap_or("UTC")
            .to_string()
    }

    fn next_wall(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.schedule {
            Schedule::Interval { .. } => None,
            Schedule::Cron { schedule, tz } => tz.next(schedule, after),
            Schedule::DateTime { at } => (*at > after).then_some(*at),
        }
    }
}

/// The time zone of a cron timer: UTC, a fixed offset, or (with the `iana-tz`
/// feature) an IANA zone name.
#[derive(Clone, Debug)]
pub enum Zone {
    /// A fixed offset from UTC (UTC itself is +00:00).
    Fixed(chrono::FixedOffset),
    /// A named zone with daylight saving rules.
    #[cfg(feature = "iana-tz")]
    Named(chrono_tz::Tz),
}

impl Zone {
    /// UTC.
    pub fn utc() -> Zone {
        Zone::Fixed(chrono::FixedOffset::east_opt(0).expect("zero offset"))
    }

    /// `UTC`, `Z`, `+02:00`, or an IANA name with the `iana-tz` feature.
    pub fn parse(name: &str) -> Result<Zone, String> {
        if matches!(name, "UTC" | "utc" | "Z" | "Etc/UTC") {
            return Ok(Zone::utc());
        }
        if let Ok(offset) = chrono::FixedOffset::from_str(name) {
            return Ok(Zone::Fixed(offset));
        }
        #[cfg(feature = "iana-tz")]
        if let Ok(tz) = chrono_tz::Tz::from_str(name) {
            return Ok(Zone::Named(tz));
        }
        let names = if cfg!(feature = "iana-tz") {
            "an IANA time zone name such as Europe/Berlin, UTC or an offset such as +02:00"
        } else {
            "UTC or an offset such as +02:00 (IANA names such as Europe/Berlin need a build with the iana-tz feature)"
        };
        Err(format!("`timezone` `{name}` is not {names}"))
    }

    fn next(&self, schedule: &cron::Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Zone::Fixed(o) => schedule
                .after(&after.with_timezone(o))
                .next()
                .map(|t| t.with_timezone(&Utc)),
            #[cfg(feature = "iana-tz")]
            Zone::Named(tz) => schedule
                .after(&after.with_timezone(tz))
                .next()
                .map(|t| t.with_timezone(&Utc)),
        }
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A timer that runs: its schedule state.
#[derive(Debug)]
pub struct Running {
    /// The timer.
    pub timer: Timer,
    /// Monotonic origin of interval deadlines.
    started: Instant,
    /// Ticks fired so far.
    pub count: u64,
    /// Next deadline (monotonic) and the wall time it stands for.
    pub due: Option<(Instant, DateTime<Utc>)>,
}

/// `Instant` for a wall-clock time, from a pair of readings taken together.
fn instant_for(wall: DateTime<Utc>, now: Instant, now_wall: DateTime<Utc>) -> Instant {
    match (wall - now_wall).to_std() {
        Ok(ahead) => now
            .checked_add(ahead)
            .unwrap_or_else(|| now + Duration::from_secs(MAX_INTERVAL_SECS)),
        Err(_) => now, // already due
    }
}

impl Running {
    /// Starts `timer` now.
    pub fn start(timer: Timer) -> Running {
        let started = Instant::now();
        let mut r = Running {
            timer,
            started,
            count: 0,
            due: None,
        };
        r.due = r.next_after(started, Utc::now());
        r
    }

    fn next_after(
        &self,
        now: Instant,
        now_wall: DateTime<Utc>,
    ) -> Option<(Instant, DateTime<Utc>)> {
        match &self.timer.schedule {
            Schedule::Interval { every } => {
                // Deadline k is started + k * every: absolute, so lateness never accumulates.
                // After a stall, skip to the first deadline still ahead.
                // Checked throughout: no schedule may panic the sensor (a panic
                // would stop every other timer with it).
                let elapsed = now.saturating_duration_since(self.started);
                let k = u32::try_from(elapsed.as_nanos() / every.as_nanos())
                    .ok()?
                    .checked_add(1)?;
                let at = self.started.checked_add(every.checked_mul(k)?)?;
                let ahead = chrono::Duration::from_std(at.saturating_duration_since(now)).ok()?;
                Some((at, now_wall.checked_add_signed(ahead)?))
            }
            _ => {
                let wall = self.timer.next_wall(now_wall)?;
                Some((instant_for(wall, now, now_wall), wall))
            }
        }
    }

    /// Fires if due at `now`: returns the event payload and schedules the next deadline.
    pub fn fire(&mut self, now: Instant, sensor_ref: &str) -> Option<Value> {
        let (at, scheduled) = self.due?;
        if at > now {
            return None;
        }
        let fired = Utc::now();
        self.count += 1;
        let payload = match &self.timer.schedule {
            Schedule::Interval { every } => json!({
                "type": "interval",
                "interval_seconds": every.as_secs(),
                "fired_at": rfc3339(fired),
                "execution_count": self.count,
                "sensor_ref": sensor_ref,
            }),
            // The shapes of upstream's trigger `output` schemas
            // (packs/core/triggers/{crontimer,datetimetimer}.yaml).
            Schedule::Cron { .. } => {
                let next = self.timer.next_wall(scheduled).map(rfc3339);
                json!({
                    "type": "cron",
                    "expression": self.timer.config.get("expression").cloned().unwrap_or_default(),
                    "timezone": self.timer.timezone(),
                    "scheduled_at": rfc3339(scheduled),
                    "fired_at": rfc3339(fired),
                    "next_fire_at": next,
                    "execution_count": self.count,
                    "sensor_ref": sensor_ref,
                })
            }
            Schedule::DateTime { .. } => json!({
                "type": "one_shot",
                "fire_at": rfc3339(scheduled),
                "fired_at": rfc3339(fired),
                "timezone": self.timer.timezone(),
                "delay_ms": (fired - scheduled).num_milliseconds().max(0),
                "sensor_ref": sensor_ref,
            }),
        };
        self.due = match &self.timer.schedule {
            Schedule::DateTime { .. } => None,
            // Cron: strictly after the time just served, so one slot never fires twice.
            Schedule::Cron { .. } => self
                .timer
                .next_wall(scheduled)
                .map(|w| (instant_for(w, Instant::now(), Utc::now()), w)),
            Schedule::Interval { .. } => self.next_after(now, fired),
        };
        Some(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(trigger_ref: Option<&str>, config: Value) -> TriggerInstance {
        TriggerInstance {
            id: "1".into(),
            trigger_ref: trigger_ref.map(str::to_string),
            config,
        }
    }

    #[test]
    fn infers_trigger_types_from_config_keys() {
        let now = Utc::now();
        assert_eq!(
            Timer::new(&inst(None, json!({"interval": 5})), now)
                .unwrap()
                .trigger_ref,
            INTERVAL
        );
        assert_eq!(
            Timer::new(&inst(None, json!({"expression": "* * * * * *"})), now)
                .unwrap()
                .trigger_ref,
            CRON
        );
        assert_eq!(
            Timer::new(&inst(None, json!({"fire_at": "2999-01-01T00:00:00Z"})), now)
                .unwrap()
                .trigger_ref,
            DATETIME
        );
        assert!(
            Timer::new(&inst(None, json!({"every": 5})), now)
                .unwrap_err()
                .contains("no trigger_ref")
        );
    }

    #[test]
    fn interval_units() {
        let t = Timer::new(
            &inst(Some(INTERVAL), json!({"interval": 2, "unit": "minutes"})),
            Utc::now(),
        )
        .unwrap();
        assert!(
            matches!(t.schedule, Schedule::Interval { every } if every == Duration::from_secs(120))
        );
        assert!(Timer::new(&inst(Some(INTERVAL), json!({"interval": 0})), Utc::now()).is_err());
        assert!(
            Timer::new(
                &inst(Some(INTERVAL), json!({"interval": 1, "unit": "weeks"})),
                Utc::now()
            )
            .unwrap_err()
            .contains("weeks")
        );
    }

    #[test]
    fn cron_needs_six_fields_and_a_known_zone() {
        let now = Utc::now();
        let cron = |c: serde_json::Value| Timer::new(&inst(Some(CRON), c), now);
        assert!(
            cron(json!({"expression": "*/5 * * * *"}))
                .unwrap_err()
                .contains("six")
        );
        assert!(cron(json!({"expression": "0 0 9 * * Mon", "timezone": "+02:00"})).is_ok());
        assert!(cron(json!({"expression": "0 0 9 * * Mon", "timezone": "UTC"})).is_ok());
        assert_eq!(
            cron(json!({"expression": "0 0 9 * * Mon", "timezone": "Europe/Berlin"})).is_ok(),
            cfg!(feature = "iana-tz")
        );
        assert!(
            cron(json!({"expression": "0 0 9 * * *", "timezone": "Mars/Base"}))
                .unwrap_err()
                .contains("Mars/Base")
        );
    }

    #[test]
    fn fixed_offset_zone_shifts_the_schedule() {
        let schedule = cron::Schedule::from_str("0 0 9 * * *").unwrap();
        let after = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let next = Zone::parse("+02:00")
            .unwrap()
            .next(&schedule, after)
            .unwrap();
        assert_eq!(rfc3339(next), "2030-01-01T07:00:00.000Z");
    }

    #[test]
    fn datetime_in_the_past_is_refused() {
        let e = Timer::new(
            &inst(Some(DATETIME), json!({"fire_at": "2001-01-01T00:00:00Z"})),
            Utc::now(),
        )
        .unwrap_err();
        assert!(e.contains("in the past"), "{e}");
    }

    #[test]
    fn cron_payload_has_scheduled_and_next() {
        let t = Timer::new(
            &inst(Some(CRON), json!({"expression": "* * * * * *"})),
            Utc::now(),
        )
        .unwrap();
        let mut r = Running::start(t);
        let (at, _) = r.due.unwrap();
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let p = r.fire(Instant::now(), "core.timer_sensor").unwrap();
        assert_eq!(p["type"], "cron");
        assert_eq!(p["execution_count"], 1);
        let scheduled = DateTime::parse_from_rfc3339(p["scheduled_at"].as_str().unwrap()).unwrap();
        let next = DateTime::parse_from_rfc3339(p["next_fire_at"].as_str().unwrap()).unwrap();
        assert_eq!((next - scheduled).num_seconds(), 1);
    }
}
