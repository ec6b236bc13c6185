//! The host-side budget of one attempt: what the host holds on a piece's
//! behalf outside its linear memory (wasi:http header fields, requests,
//! bodies, unread responses, streams, pollables). Wasmtime's
//! `ResourceLimiter` does not see these; the HTTP capability counts the bytes
//! it hands over and the runtime measures the resource table on every epoch
//! tick. A breach ends the attempt as `resource-limit`.

/// Live host resources (resource-table entries: wasi:http fields, requests,
/// bodies, responses, streams, pollables...) one attempt may hold at once.
pub const MAX_HOST_RESOURCES: usize = 2048;
/// Largest in-memory size of one mutable wasi:http `fields` (headers).
pub const FIELDS_BYTES: usize = 32 << 10;
/// Largest chunk an outgoing body buffers (one chunk per body).
pub const OUTGOING_BODY_CHUNK_BYTES: usize = 64 << 10;

/// The host-side memory budget of one attempt: bytes the host holds on the
/// guest's behalf (response bodies and headers not yet dropped, header
/// `fields`, request headers, outgoing-body buffers). Wasmtime's
/// `ResourceLimiter` sees only linear memory and tables; this counts the
/// rest. Responses are counted exactly when handed over (and released when
/// the guest drops their body); table contents are measured on every epoch
/// tick. A breach is recorded here and ends the attempt as `resource-limit`.
#[derive(Debug)]
pub struct HostBudget {
    limit: usize,
    held: std::sync::atomic::AtomicUsize,
    table: std::sync::atomic::AtomicUsize,
    breach: std::sync::Mutex<Option<String>>,
}

/// Bytes held for the guest; released when dropped.
#[derive(Debug)]
pub struct HeldBytes {
    budget: std::sync::Arc<HostBudget>,
    bytes: usize,
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.budget
            .held
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::SeqCst);
    }
}

impl HostBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        HostBudget {
            limit,
            held: Default::default(),
            table: Default::default(),
            breach: Default::default(),
        }
    }

    fn used(&self) -> usize {
        use std::sync::atomic::Ordering::SeqCst;
        self.held
            .load(SeqCst)
            .saturating_add(self.table.load(SeqCst))
    }

    fn record(&self, message: String) -> String {
        let mut breach = self.breach.lock().unwrap_or_else(|p| p.into_inner());
        breach.get_or_insert(message).clone()
    }

    /// Hold `bytes` more for the guest, or the breach sentence.
    pub fn hold(self: &std::sync::Arc<Self>, bytes: usize) -> Result<HeldBytes, String> {
        use std::sync::atomic::Ordering::SeqCst;
        let before = self.held.fetch_add(bytes, SeqCst);
        let guard = HeldBytes {
            budget: self.clone(),
            bytes,
        };
        let used = before
            .saturating_add(bytes)
            .saturating_add(self.table.load(SeqCst));
        if used > self.limit {
            drop(guard);
            return Err(self.record(format!(
                "the step holds {used} bytes in host resources (unread responses, headers, bodies), limit is {}",
                self.limit
            )));
        }
        Ok(guard)
    }

    /// Measure what `table` holds and check the budget.
    pub(crate) fn measure(
        &self,
        table: &mut wasmtime::component::ResourceTable,
    ) -> Result<(), String> {
        use std::sync::atomic::Ordering::SeqCst;
        use wasmtime_wasi_http::FieldMap;
        use wasmtime_wasi_http::p2::body::HostOutgoingBody;
        use wasmtime_wasi_http::p2::types::{HostIncomingResponse, HostOutgoingRequest};
        fn fields_size(
            map: &http::HeaderMap,
            seen: &mut std::collections::HashSet<usize>,
        ) -> usize {
            // Clones share one map: count it once.
            if !seen.insert(map as *const http::HeaderMap as usize) {
                return 0;
            }
            map.iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 64)
                .sum::<usize>()
        }
        let mut seen = std::collections::HashSet::new();
        let mut bytes = 0usize;
        let mut entries = 0usize;
        for entry in table.iter_mut() {
            entries += 1;
            let any: &mut dyn std::any::Any = entry;
            bytes += 64;
            if let Some(f) = any.downcast_ref::<FieldMap>() {
                bytes += fields_size(f, &mut seen);
            } else if let Some(r) = any.downcast_ref::<HostOutgoingRequest>() {
                bytes += fields_size(&r.headers, &mut seen);
                if r.body.is_some() {
                    bytes += 2 * OUTGOING_BODY_CHUNK_BYTES;
                }
            } else if any.downcast_ref::<HostOutgoingBody>().is_some() {
                bytes += 2 * OUTGOING_BODY_CHUNK_BYTES;
            } else if let Some(r) = any.downcast_ref::<HostIncomingResponse>() {
                bytes += fields_size(&r.headers, &mut seen);
            }
        }
        self.table.store(bytes, SeqCst);
        if let Some(message) = self.breach() {
            return Err(message);
        }
        let used = self.used();
        if used > self.limit {
            return Err(self.record(format!(
                "the step holds {used} bytes in {entries} host resources (wasi:http fields, requests, bodies, unread responses), limit is {}",
                self.limit
            )));
        }
        Ok(())
    }

    /// The first breach recorded, if any.
    pub fn breach(&self) -> Option<String> {
        self.breach
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
