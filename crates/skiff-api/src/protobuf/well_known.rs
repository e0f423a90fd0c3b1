//! The JSON spellings of the apimachinery types that carry their own `MarshalJSON`:
//! `metav1.Time`, `metav1.MicroTime`, `metav1.Duration`, and Go's float formatting.

use chrono::{DateTime, Datelike};
use serde_json::{Number, Value};

use super::WireProblem;

/// Go's zero `time.Time` (January 1, year 1, UTC) in Unix seconds. `Time.MarshalJSON`
/// writes it as null.
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// `metav1.Time`: RFC 3339 in UTC, whole seconds (the protobuf nanos are dropped on decode,
/// `apimachinery/pkg/apis/meta/v1/time_proto.go`); `None` for Go's zero time.
pub(super) fn time(seconds: i64) -> Result<Option<String>, WireProblem> {
    if seconds == GO_ZERO_TIME {
        return Ok(None);
    }
    let t = datetime(seconds, 0)?;
    Ok(Some(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

/// `metav1.MicroTime`: RFC 3339 in UTC with exactly six fractional digits
/// (`RFC3339Micro = "2006-01-02T15:04:05.000000Z07:00"`), nanos truncated to micros;
/// `None` for Go's zero time.
pub(super) fn micro_time(seconds: i64, nanos: i64) -> Result<Option<String>, WireProblem> {
    // Go's time.Unix normalises nanos outside [0, 1e9) into the seconds.
    let total = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    let secs = total.div_euclid(1_000_000_000);
    let nanos = total.rem_euclid(1_000_000_000);
    let out_of_range = WireProblem::TimeOutOfRange { seconds, nanos: 0 };
    let secs = i64::try_from(secs).map_err(|_| out_of_range.clone())?;
    let micros = u32::try_from(nanos / 1000 * 1000).map_err(|_| out_of_range)?;
    if secs == GO_ZERO_TIME && micros == 0 {
        return Ok(None);
    }
    let t = datetime(secs, micros)?;
    Ok(Some(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()))
}

fn datetime(seconds: i64, nanos: u32) -> Result<DateTime<chrono::Utc>, WireProblem> {
    let out_of_range = WireProblem::TimeOutOfRange {
        seconds,
        nanos: i64::from(nanos),
    };
    let t = DateTime::from_timestamp(seconds, nanos).ok_or(out_of_range.clone())?;
    // Go's Time.MarshalJSON refuses years outside [0, 9999].
    if !(0..=9999).contains(&t.year()) {
        return Err(out_of_range);
    }
    Ok(t)
}

/// Go's `time.Duration.String()`: `"0s"`, `"1.5µs"`, `"100ms"`, `"1h2m3.5s"`.
pub(super) fn duration(nanos: i64) -> String {
    let mut u = nanos.unsigned_abs();
    let sign = if nanos < 0 { "-" } else { "" };
    if u == 0 {
        return "0s".to_string();
    }
    if u < 1_000_000_000 {
        // Sub-second: one unit with a fraction.
        let (digits, unit) = match u {
            0..=999 => (0, "ns"),
            1_000..=999_999 => (3, "µs"),
            _ => (6, "ms"),
        };
        return format!("{sign}{}{unit}", fraction(u, digits));
    }
    let seconds = fraction(u % 60_000_000_000, 9);
    u /= 60_000_000_000; // whole minutes
    let mut out = String::from(sign);
    if u >= 60 {
        out.push_str(&format!("{}h", u / 60));
    }
    if u > 0 {
        out.push_str(&format!("{}m", u % 60));
    }
    out.push_str(&seconds);
    out.push('s');
    out
}

/// `v / 10^digits` written with the fraction's trailing zeros (and a bare point) removed.
fn fraction(v: u64, digits: u32) -> String {
    let scale = 10u64.pow(digits);
    let whole = v / scale;
    let frac = v % scale;
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0width$}", width = digits as usize);
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// A protobuf double as a JSON number; integral values are written without a fraction,
/// like Go's `encoding/json` (`5`, not `5.0`).
pub(super) fn double(v: f64) -> Result<Value, WireProblem> {
    if !v.is_finite() {
        return Err(WireProblem::NonFiniteDouble(v.to_string()));
    }
    // 2^53: every integral double below it is exactly an i64.
    if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        return Ok(Value::from(v as i64));
    }
    Number::from_f64(v)
        .map(Value::Number)
        .ok_or_else(|| WireProblem::NonFiniteDouble(v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_match_go() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (60_000_000_000, "1m0s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_500_000_000, "1h2m3.5s"),
            (-90_000_000_000, "-1m30s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
            (i64::MAX, "2562047h47m16.854775807s"),
        ];
        for (ns, want) in cases {
            assert_eq!(duration(ns), want, "{ns}ns");
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let text = |t: Result<Option<String>, WireProblem>| t.ok().flatten();
        assert_eq!(text(time(0)).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(text(time(1_700_000_000)).as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(
            text(micro_time(1_700_000_000, 123_456_789)).as_deref(),
            Some("2023-11-14T22:13:20.123456Z")
        );
        assert_eq!(
            text(micro_time(0, -1_000)).as_deref(),
            Some("1969-12-31T23:59:59.999999Z")
        );
        assert_eq!(time(GO_ZERO_TIME), Ok(None));
        assert_eq!(micro_time(GO_ZERO_TIME, 999), Ok(None));
        assert_eq!(
            text(micro_time(GO_ZERO_TIME, 1_000)).as_deref(),
            Some("0001-01-01T00:00:00.000001Z")
        );
        assert!(time(i64::MAX).is_err());
        assert!(time(300_000_000_000).is_err(), "year 11476");
        assert!(micro_time(i64::MAX, i64::MAX).is_err());
    }

    #[test]
    fn doubles_look_like_go() {
        assert_eq!(double(5.0), Ok(Value::from(5)));
        assert_eq!(double(0.5), Ok(serde_json::json!(0.5)));
        assert!(double(f64::NAN).is_err());
        assert!(double(f64::INFINITY).is_err());
    }
}
