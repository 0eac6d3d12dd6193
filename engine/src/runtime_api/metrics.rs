//! `GET /metrics`: Prometheus text. Job counts, queue depth and the oldest queued job's age are read from the
//! store at each scrape; what this worker ran (by type and outcome, with a run-time histogram), the attempts
//! running now, the API's requests by status and the host's service figures are kept as they happen.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use envctl_contracts::jobs::JobStats;

type Labels = Vec<(String, String)>;

/// The host's service figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceCounts {
    /// Services running and ready.
    pub up: i64,
    /// Restarts so far.
    pub restarts: i64,
    /// Failed readiness or health probes so far.
    pub probe_failures: i64,
}

fn run_time_histogram() -> Histogram {
    // 10 ms to about 45 minutes.
    Histogram::new(exponential_buckets(0.01, 2.0, 19))
}

/// Every metric, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    jobs: Family<Labels, Gauge>,
    finished: Family<Labels, Counter>,
    run_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    running: Gauge,
    queue_depth: Gauge,
    oldest_queued: Gauge<f64, AtomicU64>,
    requests: Family<Labels, Counter>,
    services_up: Gauge,
    restarts: Gauge,
    probe_failures: Gauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("envctl");
        let metrics = Self {
            jobs: Family::default(),
            finished: Family::default(),
            run_seconds: Family::new_with_constructor(run_time_histogram as fn() -> Histogram),
            running: Gauge::default(),
            queue_depth: Gauge::default(),
            oldest_queued: Gauge::default(),
            requests: Family::default(),
            services_up: Gauge::default(),
            restarts: Gauge::default(),
            probe_failures: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("jobs", "Jobs in the store, by status", metrics.jobs.clone());
        registry.register(
            "jobs_finished",
            "Attempts this worker ran, by type and outcome",
            metrics.finished.clone(),
        );
        registry.register(
            "job_run_seconds",
            "Run time of the attempts this worker ran, by type",
            metrics.run_seconds.clone(),
        );
        registry.register("jobs_running", "Attempts this worker runs now", metrics.running.clone());
        registry.register("queue_depth", "Jobs queued for a worker", metrics.queue_depth.clone());
        registry.register(
            "oldest_queued_seconds",
            "How long the oldest queued job has waited",
            metrics.oldest_queued.clone(),
        );
        registry.register("api_requests", "Runtime API requests, by HTTP status", metrics.requests.clone());
        registry.register("services_up", "Services running and ready", metrics.services_up.clone());
        registry.register("service_restarts", "Service restarts so far", metrics.restarts.clone());
        registry.register(
            "probe_failures",
            "Failed readiness and health probes so far",
            metrics.probe_failures.clone(),
        );
        Self { registry, ..metrics }
    }

    /// One more (or fewer) attempt running.
    pub fn running(&self, delta: i64) {
        self.running.inc_by(delta);
    }

    /// An attempt of `job_type` ended with `outcome` after `took`.
    pub fn finished(&self, job_type: &str, outcome: &str, took: Duration) {
        let kind = ("type".to_owned(), job_type.to_owned());
        self.finished.get_or_create(&vec![kind.clone(), ("outcome".into(), outcome.to_owned())]).inc();
        self.run_seconds.get_or_create(&vec![kind]).observe(took.as_secs_f64());
    }

    /// A request answered with `status`.
    pub fn request(&self, status: u16) {
        self.requests.get_or_create(&vec![("status".into(), status.to_string())]).inc();
    }

    /// The host's service figures.
    pub fn set_services(&self, counts: ServiceCounts) {
        self.services_up.set(counts.up);
        self.restarts.set(counts.restarts);
        self.probe_failures.set(counts.probe_failures);
    }

    /// The text exposition, with the store's figures as of now (none when it is not reachable).
    pub fn render(&self, store: Option<(JobStats, Option<Duration>)>) -> String {
        if let Some((stats, oldest)) = store {
            let by_status = [
                ("waiting", stats.waiting),
                ("queued", stats.queued),
                ("scheduled", stats.scheduled),
                ("running", stats.running),
                ("succeeded", stats.succeeded),
                ("failed", stats.failed),
                ("cancelled", stats.cancelled),
                ("dead", stats.dead),
                ("skipped", stats.skipped),
            ];
            for (status, n) in by_status {
                self.jobs
                    .get_or_create(&vec![("status".into(), status.into())])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            self.queue_depth.set(i64::try_from(stats.queued).unwrap_or(i64::MAX));
            self.oldest_queued.set(oldest.map_or(0.0, |d| d.as_secs_f64()));
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
