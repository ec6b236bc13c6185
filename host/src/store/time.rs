//! Time as the store spells it: RFC 3339 UTC text with milliseconds
//! (`2026-11-23T19:30:07.123Z`), fixed width, so it sorts lexically.

use std::time::SystemTime;

/// Now, as RFC 3339 UTC with milliseconds: `2026-11-23T19:30:07.123Z`.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// `time` as RFC 3339 UTC with milliseconds, the stored spelling.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Milliseconds from `start` to `end` (RFC 3339 texts), if both parse.
pub(crate) fn elapsed_ms(start: &str, end: &str) -> Option<i64> {
    let start = humantime::parse_rfc3339_weak(start).ok()?;
    let end = humantime::parse_rfc3339_weak(end).ok()?;
    let ms = match end.duration_since(start) {
        Ok(d) => i64::try_from(d.as_millis()).ok()?,
        // Clock went backwards between the two writes: report 0, not garbage.
        Err(_) => 0,
    };
    Some(ms)
}
