//! How the host's log lines are written: every field (and the message)
//! with control characters escaped, so an untrusted string in a log line
//! (a workflow name, a URL, a piece's error) cannot forge another line or
//! steer the terminal. Used by `main.rs`'s subscriber.

use std::fmt;

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// `text` with control characters (`\n`, `\r`, ESC, ...) written as escapes.
pub fn escape_controls(text: &str, out: &mut impl fmt::Write) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() {
            write!(out, "{}", c.escape_debug())?;
        } else {
            out.write_char(c)?;
        }
    }
    Ok(())
}

/// The field formatter for `tracing_subscriber::fmt().fmt_fields(..)`:
/// `message key=value key=value`, each value with control characters escaped.
pub fn escaped_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(
        |writer: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn fmt::Debug| {
            let text = format!("{value:?}");
            if field.name() != "message" {
                write!(writer, "{}=", field.name())?;
            }
            escape_controls(&text, writer)
        },
    )
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_newline_in_a_field_or_message_cannot_start_a_log_line() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(escaped_fields())
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let name = "x\nWARN omniflow: forged\u{1b}[31m";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(workflow = %name, "schedule ignored: {}", name);
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            out.contains(r"schedule ignored: x\nWARN omniflow: forged\u{1b}[31m"),
            "{out}"
        );
        assert!(out.contains(r"workflow=x\nWARN"), "{out}");
    }
}
