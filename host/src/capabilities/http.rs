//! Outbound HTTP (`wasi:http/outgoing-handler`): the one place where the
//! host decides whether a guest request may leave the sandbox.
//!
//! Policy today: deny everything. A denied request is an error value the
//! guest sees (`ErrorCode::HttpRequestDenied`), never a trap, and the step log
//! gets one line naming the grant that would allow it. Grant matching
//! (scheme + host + port + path prefix), private-address checks and secret
//! placement extend `HttpPolicy::check` (issue: capability-granted HTTP).

use wasmtime_wasi_http::{WasiHttpHooks, WasiBody, RequestOptions};

use crate::capabilities::log::StepLog;

/// The per-step HTTP policy stored in the `Store`.
pub(crate) struct HttpPolicy {
    step_id: String,
    log: StepLog,
}

impl HttpPolicy {
    pub(crate) fn prepare(step_id: &str, log: StepLog) -> Self {
        HttpPolicy {
            step_id: step_id.to_string(),
            log,
        }
    }

    /// The sentence an operator needs: which grant to add for this request.
    fn denial(&self, request: &http::Request<WasiBody>) -> String {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https");
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("<no host>");
        format!(
            "HTTP request denied: {} {scheme}://{authority}{} — add \"{scheme}://{authority}\" to steps[{}].grants.http",
            request.method(),
            uri.path(),
            self.step_id
        )
    }
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let message = self.denial(&request);
        tracing::info!(step = %self.step_id, "{message}");
        self.log.append(&format!("[host] {message}\n"));
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}
