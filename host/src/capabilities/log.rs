//! `omniflow:piece/log` plus the guest's stdout/stderr: everything a piece
//! writes ends up in one size-capped step log. Past the cap the log keeps its
//! beginning, gets a single truncation marker, and further writes are dropped
//! silently (a log flood is not a trap: it only costs the guest its own fuel).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::bindings::omniflow::piece::log::{self as wit_log, Host, Level};

/// The marker appended once when a step's log reaches its cap.
pub const TRUNCATION_MARKER: &str = "\n[log truncated: the step wrote more than its log limit]\n";

#[derive(Debug)]
struct Buffer {
    text: String,
    cap: usize,
    truncated: bool,
}

/// The log of one step attempt, shared by the `log` import and stdio pipes.
#[derive(Debug, Clone)]
pub struct StepLog {
    inner: Arc<Mutex<Buffer>>,
}

impl StepLog {
    /// An empty log holding at most `cap` bytes (plus the marker).
    pub fn new(cap: usize) -> Self {
        StepLog {
            inner: Arc::new(Mutex::new(Buffer {
                text: String::new(),
                cap,
                truncated: false,
            })),
        }
    }

    /// Append text, truncating at the cap (on a char boundary).
    pub fn append(&self, text: &str) {
        let mut buf = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if buf.truncated {
            return;
        }
        let room = buf.cap.saturating_sub(buf.text.len());
        if text.len() <= room {
            buf.text.push_str(text);
            return;
        }
        let mut cut = room;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        buf.text.push_str(&text[..cut]);
        buf.text.push_str(TRUNCATION_MARKER);
        buf.truncated = true;
    }

    /// The log text so far and whether it was truncated.
    pub fn snapshot(&self) -> (String, bool) {
        let buf = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (buf.text.clone(), buf.truncated)
    }

    /// A stdout/stderr stream writing into this log.
    pub(crate) fn pipe(&self) -> LogPipe {
        LogPipe { log: self.clone() }
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

impl Host for StepLog {
    fn log(&mut self, level: Level, message: String) {
        self.append(&format!("[{}] {message}\n", level_name(level)));
    }
}

/// Link `omniflow:piece/log` into `linker`, reaching each store's step log
/// through `log_of` (the log capability knows nothing of the store's type).
pub(crate) fn link<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    log_of: fn(&mut T) -> &mut StepLog,
) -> wasmtime::Result<()> {
    wit_log::add_to_linker::<T, wasmtime::component::HasSelf<StepLog>>(linker, log_of)
}

/// Guest stdout/stderr as a WASI output stream into the step log.
#[derive(Debug, Clone)]
pub(crate) struct LogPipe {
    log: StepLog,
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.log.append(&String::from_utf8_lossy(&bytes));
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.log.append(&String::from_utf8_lossy(buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_once_on_a_char_boundary() {
        let log = StepLog::new(10);
        log.append("héllo");
        log.append("wörld!!");
        log.append("EXTRA");
        let (text, truncated) = log.snapshot();
        assert!(truncated);
        assert!(text.starts_with("héllowör"));
        assert_eq!(text.matches("[log truncated").count(), 1);
        assert!(!text.contains("EXTRA"));
    }
}
