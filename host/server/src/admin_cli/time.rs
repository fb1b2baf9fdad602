//! Reading a moment from the command line: milliseconds since the Unix epoch, `now`, `-<n>s|m|h|d`
//! (that long ago), or an RFC 3339 timestamp such as `2026-11-25T08:00:00Z`.

use anyhow::{Context, bail};

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn number(s: &str, what: &str) -> anyhow::Result<i64> {
    s.parse().with_context(|| format!("{what} {s:?} is not a number"))
}

fn rfc3339(s: &str) -> anyhow::Result<i64> {
    let (date, rest) = s.split_once(['T', 't', ' ']).context("expected YYYY-MM-DDTHH:MM:SS")?;
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (
        number(d.next().unwrap_or(""), "year")?,
        number(d.next().unwrap_or(""), "month")?,
        number(d.next().unwrap_or(""), "day")?,
    );
    let (clock, offset_ms) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
        (clock, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (clock, zone) = rest.split_at(i);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (hh, mm) = zone[1..].split_once(':').context("expected a zone like +08:00")?;
        (clock, sign * (number(hh, "zone hours")? * 3_600_000 + number(mm, "zone minutes")? * 60_000))
    } else {
        bail!("a timestamp needs a zone: Z or ±HH:MM")
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.splitn(3, ':');
    let (hh, mi, ss) = (
        number(t.next().unwrap_or(""), "hour")?,
        number(t.next().unwrap_or(""), "minute")?,
        number(t.next().unwrap_or(""), "second")?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mi > 59 || ss > 60 {
        bail!("date or time out of range");
    }
    let millis = if frac.is_empty() { 0 } else { number(&format!("{:0<3}", &frac[..frac.len().min(3)]), "fraction")? };
    let days = days_from_civil(y, m, day);
    Ok(((days * 24 + hh) * 60 + mi) * 60_000 + ss * 1000 + millis - offset_ms)
}

/// Parses a moment relative to `now_ms`.
pub fn parse_time(s: &str, now_ms: i64) -> anyhow::Result<i64> {
    let s = s.trim();
    if s == "now" {
        return Ok(now_ms);
    }
    if let Some(ago) = s.strip_prefix('-') {
        let (n, unit) = ago.split_at(ago.len().saturating_sub(1));
        let scale = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => bail!("{s:?}: a relative time is -<n>s, -<n>m, -<n>h or -<n>d"),
        };
        return Ok(now_ms - number(n, "amount")? * scale);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return number(s, "milliseconds");
    }
    rfc3339(s).with_context(|| format!("{s:?} is not a time (ms since epoch, now, -<n>h, or RFC 3339)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_time_is_read() {
        assert_eq!(parse_time("1764057600000", 0).expect("ms"), 1_764_057_600_000);
        assert_eq!(parse_time("2025-11-25T08:00:00Z", 0).expect("utc"), 1_764_057_600_000);
        assert_eq!(parse_time("2025-11-25T16:00:00+08:00", 0).expect("zone"), 1_764_057_600_000);
        assert_eq!(parse_time("2025-11-25T08:00:00.5Z", 0).expect("fraction"), 1_764_057_600_500);
        assert_eq!(parse_time("1970-01-01T00:00:00Z", 0).expect("epoch"), 0);
        assert_eq!(parse_time("now", 42).expect("now"), 42);
        assert_eq!(parse_time("-2h", 10_000_000).expect("ago"), 2_800_000);
        for bad in ["yesterday", "2025-13-01T00:00:00Z", "2025-11-25T08:00:00", "-5y"] {
            assert!(parse_time(bad, 0).is_err(), "{bad}");
        }
    }
}
