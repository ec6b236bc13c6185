//! JS value → JSON text, like `JSON.stringify` but strict: what it would
//! silently drop or mangle (functions, symbols, `BigInt`, `Map`, `Set`,
//! cycles) is an error naming where in the result it sits.
//!
//! Written in Rust (instead of calling `JSON.stringify`) so the text is built
//! once, straight into the output buffer (a large string result costs one
//! copy, not UTF-16 intermediates), and errors can name the path.

use std::fmt::Write as _;

use boa_engine::object::builtins::{JsMap, JsSet};
use boa_engine::string::JsStrVariant;
use boa_engine::value::JsVariant;
use boa_engine::{Context, JsError, JsObject, JsString, JsValue, js_string};

/// Deepest nesting accepted in a result (the writer recurses).
pub(crate) const MAX_DEPTH: usize = 512;

/// Why a result could not be converted.
pub(crate) enum OutputError {
    /// Not JSON: the message names the place and the problem.
    Invalid(String),
    /// A `toJSON` method or getter threw.
    Thrown(JsError),
}

impl From<JsError> for OutputError {
    fn from(err: JsError) -> Self {
        OutputError::Thrown(err)
    }
}

enum Segment {
    Key(String),
    Index(u64),
}

struct Writer<'a> {
    out: String,
    /// Objects being serialized (for cycle detection), with their depth.
    open: Vec<JsObject>,
    path: Vec<Segment>,
    object_keys: &'a JsObject,
}

/// Serialize `value`; a top-level `undefined` is `null`.
pub(crate) fn to_json(value: &JsValue, context: &mut Context) -> Result<String, OutputError> {
    let object_keys = context
        .intrinsics()
        .constructors()
        .object()
        .constructor()
        .get(js_string!("keys"), context)?
        .as_object()
        .ok_or_else(|| OutputError::Invalid("Object.keys is missing".into()))?;
    let mut writer = Writer {
        out: String::new(),
        open: Vec::new(),
        path: Vec::new(),
        object_keys: &object_keys,
    };
    if !writer.value(&js_string!().into(), value.clone(), context)? {
        writer.out.push_str("null");
    }
    Ok(writer.out)
}

impl Writer<'_> {
    fn location(&self) -> String {
        if self.path.is_empty() {
            return "the result".into();
        }
        let mut text = String::from("the value at $");
        // A deep path keeps its first and last segments.
        let (head, tail) = if self.path.len() > 16 {
            (8, self.path.len() - 6)
        } else {
            (self.path.len(), self.path.len())
        };
        for (n, segment) in self.path.iter().enumerate() {
            if n == head && head < tail {
                let _ = write!(text, "…({} levels)…", tail - head);
            }
            if (head..tail).contains(&n) {
                continue;
            }
            match segment {
                Segment::Index(i) => {
                    let _ = write!(text, "[{i}]");
                }
                Segment::Key(k) if is_identifier(k) => {
                    let _ = write!(text, ".{k}");
                }
                Segment::Key(k) => {
                    let _ = write!(text, "[{k:?}]");
                }
            }
        }
        text
    }

    fn invalid(&self, problem: &str) -> OutputError {
        OutputError::Invalid(format!("{} {problem}", self.location()))
    }

    /// Write `value` (held under `key`); `false` when it is `undefined` and
    /// so written nowhere (the caller omits the property or writes `null`).
    fn value(
        &mut self,
        key: &JsValue,
        mut value: JsValue,
        context: &mut Context,
    ) -> Result<bool, OutputError> {
        // toJSON, as JSON.stringify does (Date has one).
        if let Some(object) = value.as_object() {
            let to_json = object.get(js_string!("toJSON"), context)?;
            if let Some(to_json) = to_json.as_callable() {
                value = to_json.call(&value, std::slice::from_ref(key), context)?;
            }
        }
        match value.variant() {
            JsVariant::Undefined => Ok(false),
            JsVariant::Null => {
                self.out.push_str("null");
                Ok(true)
            }
            JsVariant::Boolean(b) => {
                self.out.push_str(if b { "true" } else { "false" });
                Ok(true)
            }
            JsVariant::Integer32(i) => {
                let _ = write!(self.out, "{i}");
                Ok(true)
            }
            JsVariant::Float64(f) => {
                if f.is_finite() {
                    // JS formatting (1e21, 0.1, -0 → 0), exactly as JSON.stringify.
                    let text = value.to_string(context)?;
                    self.out.push_str(&text.to_std_string_escaped());
                } else {
                    self.out.push_str("null");
                }
                Ok(true)
            }
            JsVariant::String(s) => {
                write_string(&mut self.out, &s);
                Ok(true)
            }
            JsVariant::BigInt(_) => Err(self.invalid(
                "is a BigInt, which is not JSON (convert it with Number(x) or String(x))",
            )),
            JsVariant::Symbol(_) => Err(self.invalid("is a Symbol, which is not JSON")),
            JsVariant::Object(object) => {
                if object.is_callable() {
                    return Err(self.invalid("is a function, which is not JSON"));
                }
                if JsMap::from_object(object.clone()).is_ok() {
                    return Err(self.invalid(
                        "is a Map, which is not JSON (convert it with Object.fromEntries(map))",
                    ));
                }
                if JsSet::from_object(object.clone()).is_ok() {
                    return Err(
                        self.invalid("is a Set, which is not JSON (convert it with [...set])")
                    );
                }
                if self.open.iter().any(|o| JsObject::equals(o, &object)) {
                    return Err(self.invalid("is a cyclic reference (an object containing itself)"));
                }
                if self.open.len() >= MAX_DEPTH {
                    return Err(self.invalid(&format!("is nested deeper than {MAX_DEPTH} levels")));
                }
                self.open.push(object.clone());
                let written = if object.is_array() {
                    self.array(&object, context)
                } else {
                    self.object(&object, context)
                };
                self.open.pop();
                written.map(|()| true)
            }
        }
    }

    fn array(&mut self, array: &JsObject, context: &mut Context) -> Result<(), OutputError> {
        let length = array
            .get(js_string!("length"), context)?
            .to_length(context)?;
        self.out.push('[');
        for i in 0..length {
            if i > 0 {
                self.out.push(',');
            }
            let item = array.get(i, context)?;
            self.path.push(Segment::Index(i));
            let written = self.value(&JsString::from(i.to_string()).into(), item, context)?;
            self.path.pop();
            if !written {
                self.out.push_str("null");
            }
        }
        self.out.push(']');
        Ok(())
    }

    fn object(&mut self, object: &JsObject, context: &mut Context) -> Result<(), OutputError> {
        // Object.keys: own enumerable string keys in spec order (Proxy-aware).
        let keys =
            self.object_keys
                .call(&JsValue::undefined(), &[object.clone().into()], context)?;
        let keys = keys
            .as_object()
            .ok_or_else(|| OutputError::Invalid("Object.keys returned a non-object".into()))?;
        let count = keys
            .get(js_string!("length"), context)?
            .to_length(context)?;
        self.out.push('{');
        let mut first = true;
        for i in 0..count {
            let key = keys.get(i, context)?;
            let Some(name) = key.as_string() else {
                continue;
            };
            let item = object.get(name.clone(), context)?;
            let mark = self.out.len();
            if !first {
                self.out.push(',');
            }
            write_string(&mut self.out, &name);
            self.out.push(':');
            self.path.push(Segment::Key(name.to_std_string_escaped()));
            let written = self.value(&key, item, context)?;
            self.path.pop();
            if written {
                first = false;
            } else {
                // `undefined` properties are omitted, as in JSON.stringify.
                self.out.truncate(mark);
            }
        }
        self.out.push('}');
        Ok(())
    }
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// A JSON string literal; a lone surrogate becomes U+FFFD. Runs that need no
/// escaping are copied in one go (per-character pushes cost far more fuel).
fn write_string(out: &mut String, s: &JsString) {
    out.push('"');
    match s.variant() {
        JsStrVariant::Latin1(bytes) => {
            out.reserve(bytes.len() + 1);
            let mut rest = bytes;
            while !rest.is_empty() {
                let plain = plain_prefix(rest);
                // Plain bytes are ASCII, so this never fails.
                if let Ok(run) = std::str::from_utf8(&rest[..plain]) {
                    out.push_str(run);
                }
                match rest.get(plain) {
                    Some(&b) => {
                        push_escaped(out, char::from(b));
                        rest = &rest[plain + 1..];
                    }
                    None => rest = &[],
                }
            }
        }
        JsStrVariant::Utf16(units) => {
            out.reserve(units.len() + 1);
            for unit in char::decode_utf16(units.iter().copied()) {
                // JSON.stringify would write `\udXXX`, which serde (and so
                // the host) refuses: a lone surrogate becomes U+FFFD.
                push_escaped(out, unit.unwrap_or(char::REPLACEMENT_CHARACTER));
            }
        }
    }
    out.push('"');
}

/// ASCII that JSON takes as it is.
fn is_plain(byte: u8) -> bool {
    (0x20..0x80).contains(&byte) && byte != b'"' && byte != b'\\'
}

/// Length of the leading run of plain bytes, eight at a time (SWAR): fuel
/// is per wasm instruction, and a 100 MB string is common enough in a
/// "return the whole file" script to matter.
fn plain_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    /// Some byte of `w` is zero (exact as a yes/no answer).
    fn has_zero(w: u64) -> bool {
        w.wrapping_sub(ONES) & !w & HIGH != 0
    }
    let mut start = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
        let non_ascii = w & HIGH != 0;
        if below_space
            || non_ascii
            || has_zero(w ^ (ONES * u64::from(b'"')))
            || has_zero(w ^ (ONES * u64::from(b'\\')))
        {
            break;
        }
        start += 8;
    }
    let rest = &bytes[start..];
    start
        + rest
            .iter()
            .position(|&b| !is_plain(b))
            .unwrap_or(rest.len())
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        c if (c as u32) < 0x20 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => out.push(c),
    }
}
