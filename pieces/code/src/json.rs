//! JS value → JSON text, like `JSON.stringify` but strict: what it would
//! silently drop or mangle (functions, symbols, `BigInt`, `Map`, `Set`,
//! cycles) is an error naming where in the result it sits.
//!
//! Written in Rust (instead of calling `JSON.stringify`) so the text is built
//! once, in one buffer: a 100 MB string result needs ~1× its size here rather
//! than the ~6× that going through UTF-16 intermediates took.

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
        for segment in &self.path {
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

/// A JSON string literal; lone surrogates become `\uXXXX` escapes
/// (well-formed JSON.stringify).
fn write_string(out: &mut String, s: &JsString) {
    match s.variant() {
        JsStrVariant::Latin1(bytes) => {
            out.reserve(bytes.len() + 2);
            out.push('"');
            for &b in bytes {
                push_escaped(out, char::from(b));
            }
            out.push('"');
        }
        JsStrVariant::Utf16(units) => {
            out.reserve(units.len() + 2);
            out.push('"');
            for unit in char::decode_utf16(units.iter().copied()) {
                match unit {
                    Ok(c) => push_escaped(out, c),
                    Err(lone) => {
                        let _ = write!(out, "\\u{:04x}", lone.unpaired_surrogate());
                    }
                }
            }
            out.push('"');
        }
    }
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
