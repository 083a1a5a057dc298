//! Durations and times as a plan writes them, parsed once when the plan is read.
//!
//! A plan says `precopyInterval: 60m` and `cutover: "2026-06-01T02:00:00Z"`. Kept as text, each
//! was parsed twice (when the plan was checked, and again where it was used, hours later at a
//! cutover) with two chances to disagree. [`Duration`] and [`UtcTime`] are parsed when the plan
//! is deserialized, so a bad value is refused with the field's path and line before anything
//! runs, and code that uses them holds a value that cannot fail. Both serialize back to the text
//! the plan had, so a plan written out again (and the status file's plan digest) is unchanged.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorCode, Result};

/// What a refused duration's message ends with; [`is_refused_value`] recognises it.
const DURATION_HINT: &str = "(use e.g. 30s, 15m, 1h)";
/// What a refused time's message holds; [`is_refused_value`] recognises it.
const TIME_HINT: &str = "is not an RFC 3339 UTC time";

/// A duration written `90` (seconds), `90s`, `15m`, `1h`, `1h30m`, `500ms` or `2d`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Duration {
    value: std::time::Duration,
    text: String,
}

impl Duration {
    /// Parse `text`.
    ///
    /// # Errors
    /// [`ErrorCode::PlanInvalid`] naming the text and the accepted forms.
    pub fn parse(text: &str) -> Result<Duration> {
        let bad = || Error::new(ErrorCode::PlanInvalid, format!("invalid duration {text:?} {DURATION_HINT}"));
        let t = text.trim();
        if t.is_empty() {
            return Err(bad());
        }
        if let Ok(secs) = t.parse::<u64>() {
            return Ok(Duration { value: std::time::Duration::from_secs(secs), text: text.to_string() });
        }
        let mut total = std::time::Duration::ZERO;
        let mut num = String::new();
        let mut chars = t.chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: u64 = num.parse().map_err(|_| bad())?;
            num.clear();
            let secs = |per: u64| n.checked_mul(per).map(std::time::Duration::from_secs).ok_or_else(bad);
            let unit = match (c, chars.peek()) {
                ('m', Some('s')) => {
                    chars.next();
                    std::time::Duration::from_millis(n)
                }
                ('s', _) => secs(1)?,
                ('m', _) => secs(60)?,
                ('h', _) => secs(3600)?,
                ('d', _) => secs(86400)?,
                _ => return Err(bad()),
            };
            total = total.checked_add(unit).ok_or_else(bad)?;
        }
        if !num.is_empty() {
            return Err(bad());
        }
        Ok(Duration { value: total, text: text.to_string() })
    }

    /// A duration from code, to the millisecond, written in the largest units that are exact
    /// (`1h30m`, `1s250ms`).
    pub fn from_std(value: std::time::Duration) -> Duration {
        let mut text = String::new();
        let mut secs = value.as_secs();
        for (unit, per) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
            if secs >= per {
                text.push_str(&format!("{}{unit}", secs / per));
                secs %= per;
            }
        }
        let ms = value.subsec_millis();
        if ms > 0 || text.is_empty() {
            text.push_str(&if ms > 0 { format!("{ms}ms") } else { "0s".to_string() });
        }
        Duration { value: std::time::Duration::from_millis(value.as_millis().try_into().unwrap_or(u64::MAX)), text }
    }

    /// The value.
    pub fn get(&self) -> std::time::Duration {
        self.value
    }

    /// The text, as the plan wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Duration {
    type Err = Error;
    fn from_str(s: &str) -> Result<Duration> {
        Duration::parse(s)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
        d.deserialize_str(Parse(Duration::parse))
    }
}

/// A UTC time written in RFC 3339 (`2026-06-01T02:00:00Z`), as `humantime` reads it: fractions
/// of a second and a space for the `T` are taken, offsets other than `Z` are not.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UtcTime {
    at: SystemTime,
    text: String,
}

impl UtcTime {
    /// Parse `text`.
    ///
    /// # Errors
    /// [`ErrorCode::PlanInvalid`] naming the text, with the parser's reason as the cause.
    pub fn parse(text: &str) -> Result<UtcTime> {
        humantime::parse_rfc3339_weak(text).map(|at| UtcTime { at, text: text.to_string() }).map_err(|e| {
            Error::new(ErrorCode::PlanInvalid, format!("{text:?} {TIME_HINT} (e.g. 2026-06-01T02:00:00Z)"))
                .with_source(e)
        })
    }

    /// The time.
    pub fn get(&self) -> SystemTime {
        self.at
    }

    /// The text, as the plan wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for UtcTime {
    type Err = Error;
    fn from_str(s: &str) -> Result<UtcTime> {
        UtcTime::parse(s)
    }
}

impl fmt::Display for UtcTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for UtcTime {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for UtcTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<UtcTime, D::Error> {
        d.deserialize_str(Parse(UtcTime::parse))
    }
}

/// Whether a deserializer's message is one of ours refusing a value (a plan whose text parsed
/// but whose value is wrong is [`ErrorCode::PlanInvalid`], as before these types existed).
pub(crate) fn is_refused_value(message: &str) -> bool {
    message.contains(DURATION_HINT) || message.contains(TIME_HINT)
}

/// Parses a string, or a plain number as YAML and JSON write `precopyInterval: 45`, inside the
/// deserializer's visit, so its error carries the field's path and line.
struct Parse<T>(fn(&str) -> Result<T>);

impl<T> serde::de::Visitor<'_> for Parse<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<T, E> {
        (self.0)(v).map_err(|e| E::custom(e.message()))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<T, E> {
        self.visit_str(&v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_round_trip_as_written() {
        for (text, secs, ms) in
            [("60m", 3600, 0), ("1h30m", 5400, 0), ("45", 45, 0), ("250ms", 0, 250), ("2d", 172800, 0)]
        {
            let d = Duration::parse(text).expect(text);
            assert_eq!(d.get(), std::time::Duration::from_secs(secs) + std::time::Duration::from_millis(ms));
            assert_eq!(serde_json::to_string(&d).expect("json"), format!("{text:?}"));
            let back: Duration = serde_yaml_ng::from_str(text).expect("yaml");
            assert_eq!(back, d);
        }
        for bad in ["", "m", "5x", "1h5", "-3s", "99999999999999999999d", "213503982334602d"] {
            let e = Duration::parse(bad).expect_err(bad);
            assert_eq!(e.code(), ErrorCode::PlanInvalid);
            assert!(e.to_string().contains("invalid duration") && is_refused_value(&e.to_string()), "{e}");
        }
        assert_eq!(Duration::from_std(std::time::Duration::from_secs(5400)).as_str(), "1h30m");
        assert_eq!(Duration::from_std(std::time::Duration::from_millis(1250)).as_str(), "1s250ms");
        assert_eq!(Duration::from_std(std::time::Duration::ZERO).as_str(), "0s");
        for s in [1u64, 59, 61, 3601, 90061] {
            let d = Duration::from_std(std::time::Duration::from_secs(s));
            assert_eq!(Duration::parse(d.as_str()).expect("own text parses").get().as_secs(), s);
        }
    }

    #[test]
    fn times_are_utc_rfc3339_and_round_trip_as_written() {
        let t = UtcTime::parse("2026-06-01T02:00:00Z").expect("utc");
        assert_eq!(t.get(), SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_780_279_200));
        assert_eq!(serde_json::to_string(&t).expect("json"), "\"2026-06-01T02:00:00Z\"");
        for bad in ["tonight", "2026-13-01T00:00:00Z", "2026-06-01T02:00:00+02:00", ""] {
            let e = UtcTime::parse(bad).expect_err(bad);
            assert_eq!(e.code(), ErrorCode::PlanInvalid);
            assert!(is_refused_value(&e.to_string()), "{e}");
        }
        let e = serde_yaml_ng::from_str::<UtcTime>("tonight").expect_err("bad");
        assert!(e.to_string().contains("\"tonight\" is not an RFC 3339 UTC time"), "{e}");
    }
}
