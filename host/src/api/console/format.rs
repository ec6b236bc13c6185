//! Numbers and times as people read them: `1.2 s`, `3 min ago`, `1.5 M`.

use std::time::{Duration, SystemTime};

/// A duration in milliseconds, humanised: `850 ms`, `1.2 s`, `3 min 4 s`,
/// `2 h 5 min`, `3 d 4 h`.
pub(crate) fn duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Fuel units, short: `950`, `12.3 k`, `1.5 M`, `2.0 G`.
pub(crate) fn fuel(units: u64) -> String {
    match units {
        0..1_000 => units.to_string(),
        1_000..1_000_000 => format!("{:.1} k", units as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} M", units as f64 / 1e6),
        _ => format!("{:.1} G", units as f64 / 1e9),
    }
}

/// How long before `now` `then` was: `just now`, `42 s ago`, `3 min ago`,
/// `5 h ago`, `2 d ago` (`in 3 min` for the future).
pub(crate) fn ago(then: SystemTime, now: SystemTime) -> String {
    let (d, future) = match now.duration_since(then) {
        Ok(d) => (d, false),
        Err(e) => (e.duration(), true),
    };
    let text = short(d);
    match (text.as_str(), future) {
        ("now", _) => "just now".to_owned(),
        (_, false) => format!("{text} ago"),
        (_, true) => format!("in {text}"),
    }
}

fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..2 => "now".to_owned(),
        2..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fuel_and_relative_times_read_naturally() {
        assert_eq!(duration_ms(0), "0 ms");
        assert_eq!(duration_ms(999), "999 ms");
        assert_eq!(duration_ms(1_240), "1.2 s");
        assert_eq!(duration_ms(184_000), "3 min 4 s");
        assert_eq!(duration_ms(7_500_000), "2 h 5 min");
        assert_eq!(duration_ms(3 * 86_400_000 + 4 * 3_600_000), "3 d 4 h");
        assert_eq!(fuel(950), "950");
        assert_eq!(fuel(12_345), "12.3 k");
        assert_eq!(fuel(1_500_000), "1.5 M");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(now - Duration::from_secs(42), now), "42 s ago");
        assert_eq!(ago(now - Duration::from_secs(180), now), "3 min ago");
        assert_eq!(ago(now + Duration::from_secs(180), now), "in 3 min");
        assert_eq!(ago(now - Duration::from_secs(200_000), now), "2 d ago");
    }
}
