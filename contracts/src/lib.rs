//! Types of everything envctl writes to disk or prints as JSON.
//!
//! Every artifact and every `--json` body is a type here with a `schema_version` field. The JSON Schemas in
//! `contracts/schemas/` are generated from these types ([`schemas`]) and a test fails when they are stale, so a
//! change to a public shape is always a visible change to a checked-in file.

pub mod bundle;
pub mod commands;
pub mod config;
pub mod control;
pub mod doctor;
pub mod inspect;
pub mod jobs;
pub mod ports;
pub mod runtime_api;
pub mod startup;
pub mod state;
pub mod targets;

/// The schema version every artifact in this release carries.
pub const SCHEMA_VERSION: u32 = 1;

/// Every public type with a checked-in schema, as `(file stem, schema)`.
pub fn schemas() -> Vec<(&'static str, schemars::Schema)> {
    use schemars::schema_for;
    vec![
        ("command_list", schema_for!(commands::CommandList)),
        ("config_report", schema_for!(config::ConfigReport)),
        ("target_list", schema_for!(targets::TargetList)),
        ("startup_plan", schema_for!(startup::StartupPlan)),
        ("show_state", schema_for!(state::ShowState)),
        ("run_state", schema_for!(state::RunState)),
        ("runtime_map", schema_for!(state::RuntimeMap)),
        ("ports_manifest", schema_for!(ports::PortsManifest)),
        ("port_lease", schema_for!(ports::PortLease)),
        ("error_report", schema_for!(state::ErrorReport)),
        ("event", schema_for!(state::Event)),
        ("control_request", schema_for!(control::Request)),
        ("control_reply", schema_for!(control::Reply)),
        ("health_report", schema_for!(inspect::HealthReport)),
        ("errors_report", schema_for!(inspect::ErrorsReport)),
        ("endpoint_list", schema_for!(inspect::EndpointList)),
        ("env_report", schema_for!(inspect::EnvReport)),
        ("job", schema_for!(jobs::Job)),
        ("job_list", schema_for!(jobs::JobList)),
        ("job_stats", schema_for!(jobs::JobStats)),
        ("job_server", schema_for!(jobs::JobServer)),
        ("variable_list", schema_for!(jobs::VariableList)),
        ("execution_context", schema_for!(runtime_api::ExecutionContext)),
        ("enqueue_request", schema_for!(runtime_api::EnqueueRequest)),
        ("test_results", schema_for!(jobs::TestResults)),
        ("runtime_readiness_report", schema_for!(doctor::ReadinessReport)),
        ("bundle_manifest", schema_for!(bundle::BundleManifest)),
        ("bundle_facts", schema_for!(bundle::BundleFacts)),
        ("bundle_job", schema_for!(bundle::BundleJob)),
        ("debug_report", schema_for!(bundle::DebugReport)),
    ]
}

/// Pretty JSON for a schema file, ending in a newline.
pub fn render_schema(schema: &schemars::Schema) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The checked-in schemas match the types. Run with `ENVCTL_BLESS_SCHEMAS=1` to rewrite them.
    #[test]
    #[allow(clippy::disallowed_methods)]
    fn checked_in_schemas_are_fresh() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let bless = std::env::var_os("ENVCTL_BLESS_SCHEMAS").is_some();
        let mut stale = Vec::new();
        for (stem, schema) in super::schemas() {
            let path = dir.join(format!("{stem}.json"));
            let want = super::render_schema(&schema);
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            if have != want {
                if bless {
                    std::fs::write(&path, want).expect("write schema");
                } else {
                    stale.push(path.display().to_string());
                }
            }
        }
        assert!(stale.is_empty(), "stale schemas (rerun with ENVCTL_BLESS_SCHEMAS=1 and commit): {stale:?}");
    }
}
