//! Lines written here end up in the step's log (size-capped by the host).
//!
//! `println!`/`eprintln!` also reach the step log; these functions add a level.

use crate::bindings::omniflow::piece::log::{Level, log};

/// Log at trace level.
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message.as_ref());
}
/// Log at debug level.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message.as_ref());
}
/// Log at info level.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message.as_ref());
}
/// Log at warn level.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message.as_ref());
}
/// Log at error level.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message.as_ref());
}
