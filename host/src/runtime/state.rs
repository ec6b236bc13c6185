//! What a `Store` holds for one step attempt: WASI with no ambient authority,
//! the HTTP policy, the step log, resource limits and the deadline.

use std::time::Instant;

use tokio_util::sync::CancellationToken;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use std::sync::Arc;

use crate::capabilities::budget::{FIELDS_BYTES, HostBudget, MAX_HOST_RESOURCES};
use crate::capabilities::http::{HttpGrants, HttpPolicy};
use crate::capabilities::log::StepLog;
use crate::capabilities::secrets::Redactor;
use crate::runtime::limits::{LimitBreach, StepLimiter, StepLimits};

/// What an attempt shares with the runtime beyond its store: the run's
/// redactor and the host-resource budget.
pub(crate) struct AttemptGuards {
    pub(crate) redactor: Redactor,
    pub(crate) budget: Arc<HostBudget>,
}

pub(crate) struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    http_policy: HttpPolicy,
    pub(crate) log: StepLog,
    pub(crate) limiter: StepLimiter,
    pub(crate) deadline: Instant,
    pub(crate) cancel: CancellationToken,
    pub(crate) budget: Arc<HostBudget>,
}

impl StepState {
    pub(crate) fn new(
        step_id: &str,
        limits: &StepLimits,
        deadline: Instant,
        cancel: CancellationToken,
        http: HttpGrants,
        guards: AttemptGuards,
    ) -> Self {
        let AttemptGuards { redactor, budget } = guards;
        let log = StepLog::new(limits.log_bytes);
        // No env, no args, no preopens, closed stdin, no sockets: the builder's
        // defaults plus stdio redirected into the step log.
        let wasi = WasiCtx::builder()
            .stdout(log.pipe())
            .stderr(log.pipe())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        // Host resources are capped in number here and in bytes by `budget`.
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HOST_RESOURCES);
        let mut http_ctx = WasiHttpCtx::new();
        http_ctx.set_field_size_limit(FIELDS_BYTES);
        StepState {
            wasi,
            table,
            http: http_ctx,
            http_policy: HttpPolicy::prepare(
                step_id,
                log.clone(),
                http,
                deadline,
                redactor,
                budget.clone(),
            ),
            log,
            limiter: StepLimiter::new(limits),
            deadline,
            cancel,
            budget,
        }
    }

    /// Measure the host resources the guest holds against its budget.
    pub(crate) fn check_host_budget(&mut self) -> Result<(), LimitBreach> {
        self.budget
            .measure(&mut self.table)
            .map_err(LimitBreach::HostResources)
    }
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StepState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_policy,
        }
    }
}
