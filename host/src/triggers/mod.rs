//! Triggers: what starts runs other than a direct call. Today the cron
//! scheduler ([`schedule`]): it stores each workflow's next fire time and
//! queues exactly one run per fire time, even with several schedulers on one
//! database. Manual, API, batch and webhook runs are created by the engine
//! and the API (see ARCHITECTURE.md, "Triggers").
//!
//! Knows the store, the workflow model and the engine's [`RunQueue`]
//! (crate::engine::RunQueue); never the server or HTTP.

pub mod schedule;
