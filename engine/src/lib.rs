//! The envctl engine.
//!
//! Module map (one folder per domain, each with one public entry type). Lower rows never import higher ones;
//! no two domains import each other; only `runtime` imports `startup`.
//!
//! | module | owns |
//! |---|---|
//! | [`runtime`] | `EngineRuntime`, the composition root: builds settings, targets, state, ledger, job stores, the tokio runtime and the host once; the command line; thin commands; exit codes |
//! | [`doctor`] | readiness gates: one flat registry of checks over config, prerequisites, state truth, requirements, services, the job runtime and the artifacts' schemas; `--fix`'s safe repairs |
//! | [`bundle`] | incident triage: `debug-pack`'s redacted bundle, reading one back, `debug-report`'s diagnosis (reads state, settings, logs, the job store; never the host or startup) |
//! | [`startup`] | start / restart / resume orchestration, run in the host as its `Orchestrator` |
//! | [`host`] | the per-repository host process: control socket, adopting survivors, the run's bookkeeping, state writes, stopping without a host (`direct`) |
//! | [`runtime_api`] | the HTTP API running jobs and services call with scoped tokens (JWT), metrics, the `envctl job` client, the helper libraries |
//! | [`jobs`] | job model, `JobStore` (embedded SQLite, Redis), worker, handlers, test suites as jobs |
//! | [`setup`] | preparing a checkout (`[setup]`, a service's `setup`): run before its first start and again when an input changes |
//! | [`plan`] | pure planning: each target's ports, environment and service argv (`explain`) |
//! | [`ports`] | the port planner and the machine-wide lease ledger |
//! | [`requirements`] | Postgres / Redis / command servers: data, databases, exports, probes' clients, teardown |
//! | [`supervisor`] | spawning, probes, restart policies, graceful stop, logs, process truth, the health verdict |
//! | [`targets`] | main + worktrees, names, slots, selection, `git worktree` |
//! | [`config`] | finding and reading `.envctl` (TOML or legacy), precedence, validation, `Paths`, `EnvVars` |
//! | [`state`] | run artifacts, atomic writes, the scope's repository, ids |
//! | [`ui`] | the printer, tables and lifecycle lines (the only module that writes to the terminal) |

pub mod bundle;
pub mod config;
pub mod doctor;
pub mod host;
pub mod jobs;
pub mod plan;
pub mod ports;
pub mod requirements;
pub mod runtime;
pub mod runtime_api;
pub mod setup;
pub mod startup;
pub mod state;
pub mod supervisor;
pub mod targets;
pub mod ui;

pub use runtime::{Cli, EngineError, EngineRuntime, Outcome, completion_env, exit_code, parse, run_cli};
