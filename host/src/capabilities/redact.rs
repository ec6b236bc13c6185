//! Redaction: every secret value a run has used, replaced by
//! `[redacted:NAME]` wherever the run's output goes ([`Redactor`]).

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use super::secrets::Secrets;

/// The secret values one run has used: every value granted anywhere in the
/// run's workflow plus every value placed into a request. Everything
/// persisted or returned for the run (response bodies and headers the piece
/// sees, the step output, log and error text) passes through it.
///
/// Each value is replaced by `[redacted:NAME]` in its plain form and in
/// common encodings: JSON string escapes (`\/`, `\"`, `\n`, `\uXXXX` in any
/// case, surrogate pairs), percent-encoding (`%XX` in any case, `+` for a
/// space), freely mixed per character; and base64 (standard and URL-safe) of
/// the value alone or after any prefix, such as `user:secret` in a Basic
/// authorization (the characters that depend only on the value are
/// replaced; values shorter than 6 bytes are not looked for in base64). Not
/// covered: other encodings (hex, HTML entities, double percent-encoding,
/// compression, encryption) or a value split or transformed by the piece.
#[derive(Clone, Default)]
pub struct Redactor {
    values: Arc<std::sync::Mutex<Vec<Needle>>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.lock().iter().map(|n| n.name.clone()).collect();
        f.debug_struct("Redactor").field("names", &names).finish()
    }
}

/// One secret value and the base64 cores it is looked for as.
struct Needle {
    name: String,
    value: SecretString,
    marker: Vec<u8>,
    base64: Vec<Vec<u8>>,
}

/// Shortest value looked for in base64 (shorter cores match too much).
const MIN_BASE64_VALUE: usize = 6;

impl Needle {
    fn new(name: &str, value: SecretString) -> Self {
        let bytes = value.expose_secret().as_bytes();
        let mut base64 = Vec::new();
        if bytes.len() >= MIN_BASE64_VALUE {
            use base64::Engine as _;
            for engine in [
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ] {
                // The value after 0, 1 or 2 bytes of some prefix: keep the
                // characters whose 6 bits all come from the value.
                for offset in 0..3usize {
                    let mut input = vec![0u8; offset];
                    input.extend_from_slice(bytes);
                    let encoded = engine.encode(&input).into_bytes();
                    let first = (8 * offset).div_ceil(6);
                    let last = (8 * (offset + bytes.len())) / 6; // exclusive
                    if last > first {
                        let core = encoded[first..last].to_vec();
                        if !base64.contains(&core) {
                            base64.push(core);
                        }
                    }
                }
            }
        }
        Needle {
            name: name.to_string(),
            marker: format!("[redacted:{name}]").into_bytes(),
            value,
            base64,
        }
    }

    /// The end of a match of this value (in any covered encoding) at `at`.
    fn match_at(&self, hay: &[u8], at: usize) -> Option<usize> {
        let value = self.value.expose_secret();
        let mut pos = at;
        for c in value.chars() {
            pos = match_char(hay, pos, c)?;
        }
        if pos > at {
            return Some(pos);
        }
        None
    }
}

/// The end of one character `c` of a value at `pos`, written plainly,
/// JSON-escaped or percent-encoded.
fn match_char(hay: &[u8], pos: usize, c: char) -> Option<usize> {
    let mut utf8 = [0u8; 4];
    let bytes = c.encode_utf8(&mut utf8).as_bytes();
    let rest = hay.get(pos..)?;
    if rest.starts_with(bytes) {
        return Some(pos + bytes.len());
    }
    match rest.first()? {
        b'%' | b'+' => {
            // Each byte plain or `%XX`; a space may be `+`.
            let mut p = pos;
            for &b in bytes {
                let r = hay.get(p..)?;
                if r.first() == Some(&b) || (b == b' ' && r.first() == Some(&b'+')) {
                    p += 1;
                } else if r.len() >= 3 && r[0] == b'%' && hex_value(&r[1..3]) == Some(u32::from(b))
                {
                    p += 3;
                } else {
                    return None;
                }
            }
            Some(p)
        }
        b'\\' => {
            let short = match c {
                '"' => Some(b'"'),
                '\\' => Some(b'\\'),
                '/' => Some(b'/'),
                '\n' => Some(b'n'),
                '\r' => Some(b'r'),
                '\t' => Some(b't'),
                '\u{8}' => Some(b'b'),
                '\u{c}' => Some(b'f'),
                _ => None,
            };
            if let Some(s) = short
                && rest.get(1) == Some(&s)
            {
                return Some(pos + 2);
            }
            let mut units = [0u16; 2];
            let mut p = pos;
            for &unit in c.encode_utf16(&mut units).iter() {
                let r = hay.get(p..p + 6)?;
                if r[0] != b'\\' || r[1] != b'u' || hex_value(&r[2..6]) != Some(u32::from(unit)) {
                    return None;
                }
                p += 6;
            }
            Some(p)
        }
        _ => None,
    }
}

fn hex_value(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |acc, &d| {
        let v = char::from(d).to_digit(16)?;
        Some(acc * 16 + v)
    })
}

impl Redactor {
    /// Nothing to redact yet.
    pub fn new() -> Self {
        Redactor::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Needle>> {
        self.values.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Also redact `value` as `[redacted:NAME]` (empty values are ignored;
    /// every clone sees it).
    pub fn add(&self, name: &str, value: &SecretString) {
        if value.expose_secret().is_empty() {
            return;
        }
        let mut values = self.lock();
        if values
            .iter()
            .any(|n| n.name == name && n.value.expose_secret() == value.expose_secret())
        {
            return;
        }
        values.push(Needle::new(name, value.clone()));
        // Longest first, so a value containing another is redacted whole.
        values.sort_by_key(|n| std::cmp::Reverse(n.value.expose_secret().len()));
    }

    /// Add the values of `names` known to `secrets`.
    pub fn add_known<'a>(&self, secrets: &Secrets, names: impl IntoIterator<Item = &'a String>) {
        for name in names {
            if let Some(value) = secrets.get(name) {
                self.add(name, &value);
            }
        }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// `bytes` with every covered form of every value replaced.
    pub fn redact_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let values = self.lock();
        if values.is_empty() {
            return bytes.to_vec();
        }
        // Bytes that can start a match: skip every other position fast.
        let mut starts = [false; 256];
        starts[usize::from(b'%')] = true;
        starts[usize::from(b'+')] = true;
        starts[usize::from(b'\\')] = true;
        for n in values.iter() {
            if let Some(&b) = n.value.expose_secret().as_bytes().first() {
                starts[usize::from(b)] = true;
            }
            for core in &n.base64 {
                starts[usize::from(core[0])] = true;
            }
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        'scan: while i < bytes.len() {
            if starts[usize::from(bytes[i])] {
                for n in values.iter() {
                    if let Some(end) = n.match_at(bytes, i) {
                        out.extend_from_slice(&n.marker);
                        i = end;
                        continue 'scan;
                    }
                    if let Some(core) = n.base64.iter().find(|c| bytes[i..].starts_with(c)) {
                        out.extend_from_slice(&n.marker);
                        i += core.len();
                        continue 'scan;
                    }
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        out
    }

    /// [`Redactor::redact_bytes`] for text (markers are ASCII, so whole
    /// UTF-8 values replaced keep the text UTF-8).
    pub fn redact_str(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_string();
        }
        String::from_utf8_lossy(&self.redact_bytes(text.as_bytes())).into_owned()
    }

    /// Redact every string (keys included) of a JSON value in place.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        if self.is_empty() {
            return;
        }
        match value {
            serde_json::Value::String(s) => *s = self.redact_str(s),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut v) in entries {
                    self.redact_json(&mut v);
                    map.insert(self.redact_str(&key), v);
                }
            }
            _ => {}
        }
    }
}

/// Replace every occurrence of the given secret values (and their covered
/// encodings, see [`Redactor`]) in `text` with `[redacted:NAME]`.
pub fn redact(text: &str, used: &[(String, SecretString)]) -> String {
    let redactor = Redactor::new();
    for (name, value) in used {
        redactor.add(name, value);
    }
    redactor.redact_str(text)
}

/// Byte-level [`redact`].
pub fn redact_bytes(body: &[u8], used: &[(String, SecretString)]) -> Vec<u8> {
    let redactor = Redactor::new();
    for (name, value) in used {
        redactor.add(name, value);
    }
    redactor.redact_bytes(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_replaces_every_occurrence_longest_first() {
        let used = vec![
            ("A".to_string(), SecretString::from("abc")),
            ("B".to_string(), SecretString::from("abcdef")),
        ];
        assert_eq!(
            redact("x abcdef y abc", &used),
            "x [redacted:B] y [redacted:A]"
        );
        assert_eq!(
            redact_bytes(b"abcdef-abc", &used),
            b"[redacted:B]-[redacted:A]".to_vec()
        );
    }

    fn redactor(pairs: &[(&str, &str)]) -> Redactor {
        let r = Redactor::new();
        for (n, v) in pairs {
            r.add(n, &SecretString::from(*v));
        }
        r
    }

    #[test]
    fn encoded_echoes_are_redacted() {
        let r = redactor(&[("T", "ab/c&d\"e f<é😀")]);
        let m = "[redacted:T]";
        for echo in [
            "ab/c&d\"e f<é😀",                                  // plain
            r#"ab\/c&d\"e f<é😀"#,                              // JSON, \/ and \"
            r#"ab\/c\u0026d\u0022e\u0020f\u003cé\ud83d\ude00"#, // \uXXXX, surrogates
            r#"ab\u002Fc\u0026d\"e f\u003C\u00E9\uD83D\uDE00"#, // upper-case hex
            "ab%2Fc%26d%22e+f%3C%C3%A9%F0%9F%98%80",            // percent, + for space
            "ab%2fc&d%22e%20f<%c3%a9😀",                        // mixed
        ] {
            let text = format!("before {echo} after");
            assert_eq!(r.redact_str(&text), format!("before {m} after"), "{echo}");
        }
        // Base64 alone and after a prefix (`user:secret`), standard and URL-safe.
        let r = redactor(&[("P", "hunter2-s3cret/+?")]);
        use base64::Engine as _;
        for prefix in ["", "u:", "us:", "user:"] {
            for engine in [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::URL_SAFE,
            ] {
                let encoded = engine.encode(format!("{prefix}hunter2-s3cret/+?"));
                let out = r.redact_str(&format!("Basic {encoded}"));
                assert!(out.contains("[redacted:P]"), "{prefix}: {encoded} -> {out}");
                let left = out.replace("[redacted:P]", "");
                assert!(
                    left.len() <= "Basic ".len() + 12,
                    "{prefix}: too much left: {out}"
                );
            }
        }
        // Bytes that are not UTF-8 around the value.
        let r = redactor(&[("B", "tok-123")]);
        let out = r.redact_bytes(b"\xff\xfe tok%2D123 \xc3");
        assert_eq!(out, b"\xff\xfe [redacted:B] \xc3".to_vec());
        // JSON values: strings and keys.
        let mut v = serde_json::json!({ "tok-123": ["x tok-123", 1, { "k": "tok\u{2d}123" }] });
        r.redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({ "[redacted:B]": ["x [redacted:B]", 1, { "k": "[redacted:B]" }] })
        );
    }
}
