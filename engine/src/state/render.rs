//! The text of the saved state, with each service record's text kept from the save before: a save renders again
//! only the records that changed and copies the others, so writing the state of 1,000 services after one of them
//! changed costs about one record's rendering, not a thousand. The text is byte for byte what rendering the
//! whole document would give (`serde_json::to_vec_pretty`).

use std::collections::HashMap;

use envctl_contracts::state::{Endpoint, RunState, RuntimeMap, ServiceRecord};
use serde_json::Value;

use super::redact::{Redactor, secret_values};

/// A record's place: its target and name.
type Key = (String, String);

/// What the last saves rendered, by record.
#[derive(Debug, Default)]
pub(super) struct Rendered {
    /// `run_state.json`'s records.
    latest: HashMap<Key, Latest>,
    /// The run copy's records.
    copy: HashMap<Key, Copied>,
    /// The secret values the run copy's texts were redacted with (sorted, each once).
    copy_secrets: Vec<String>,
    /// `runtime_map.json`'s endpoints, kept while they stay the same (a run id changes with every run; a thousand
    /// endpoints do not when one service restarts).
    map: Option<MapTexts>,
}

/// The endpoints of a runtime map and their texts.
#[derive(Debug)]
struct MapTexts {
    targets: Targets,
    /// As the latest view has them, indented for their place.
    latest: Vec<u8>,
    /// The secret values in them.
    secrets: Vec<String>,
    /// Redacted with the run's secrets (the first), as the run copy has them; none until rendered.
    copy: Option<(Vec<String>, Vec<u8>)>,
}

/// The run copy's texts: `run_state.json`, `runtime_map.json` and the other artifacts, in order.
#[derive(Debug)]
pub(super) struct CopyTexts<const N: usize> {
    pub(super) state: Vec<u8>,
    pub(super) map: Vec<u8>,
    pub(super) others: [Vec<u8>; N],
}

/// A runtime map's endpoints: target → service → endpoint.
type Targets = std::collections::BTreeMap<String, std::collections::BTreeMap<String, Endpoint>>;

/// A record as `run_state.json` has it.
#[derive(Debug)]
struct Latest {
    record: ServiceRecord,
    text: Vec<u8>,
}

/// A record as the run copy has it: the secret values it holds, and its redacted text (none until rendered with
/// the run's whole set of secrets).
#[derive(Debug)]
struct Copied {
    record: ServiceRecord,
    secrets: Vec<String>,
    text: Option<Vec<u8>>,
}

impl Rendered {
    /// `run_state.json`'s text.
    pub(super) fn latest(&mut self, state: &RunState) -> serde_json::Result<Vec<u8>> {
        let mut before = std::mem::take(&mut self.latest);
        let mut records = Vec::with_capacity(state.services.len());
        for record in &state.services {
            let key = key_of(record);
            let latest = match before.remove(&key).filter(|kept| kept.record == *record) {
                Some(kept) => kept,
                None => Latest { record: record.clone(), text: nested(&serde_json::to_vec_pretty(record)?) },
            };
            records.push((key, latest));
        }
        let header = serde_json::to_vec_pretty(&header(state))?;
        let text = match splice(&header, records.iter().map(|(_, r)| r.text.as_slice())) {
            Some(text) => text,
            None => serde_json::to_vec_pretty(state)?,
        };
        self.latest = records.into_iter().collect();
        Ok(text)
    }

    /// `runtime_map.json`'s text.
    pub(super) fn latest_map(&mut self, map: &RuntimeMap) -> serde_json::Result<Vec<u8>> {
        let texts = self.map_texts(map)?;
        let header = serde_json::to_vec_pretty(&map_header(map))?;
        // The header always has its empty object; were it missing, the map is rendered whole rather than wrong.
        match splice_map(&header, &texts.latest) {
            Some(text) => Ok(text),
            None => serde_json::to_vec_pretty(map),
        }
    }

    /// The texts of `map`'s endpoints: those kept when they are the same.
    fn map_texts(&mut self, map: &RuntimeMap) -> serde_json::Result<&mut MapTexts> {
        if self.map.as_ref().is_none_or(|kept| kept.targets != map.targets) {
            let value = serde_json::to_value(&map.targets)?;
            let mut secrets = Vec::new();
            secret_values(&value, &mut secrets);
            let latest = indented(&serde_json::to_vec_pretty(&map.targets)?, b"  ");
            self.map = Some(MapTexts { targets: map.targets.clone(), latest, secrets, copy: None });
        }
        Ok(self.map.as_mut().expect("just set"))
    }

    /// The run copy's texts of `state` and the other artifacts (`others`, in order), without their secrets:
    /// the values under secret-looking names and in URLs anywhere in them, and `known`, are replaced wherever they
    /// stand, with every other rule of [`super::redact`]. A record's text is kept while the record and the run's
    /// set of secrets stay the same.
    pub(super) fn copy<const N: usize>(
        &mut self,
        state: &RunState,
        map: &RuntimeMap,
        others: [Value; N],
        mut secrets: Vec<String>,
    ) -> serde_json::Result<CopyTexts<N>> {
        let mut head = serde_json::to_value(header(state))?;
        let mut map_head = serde_json::to_value(map_header(map))?;
        let mut others = others;
        secret_values(&head, &mut secrets);
        secret_values(&map_head, &mut secrets);
        secrets.extend(self.map_texts(map)?.secrets.iter().cloned());
        for other in &others {
            secret_values(other, &mut secrets);
        }
        let mut before = std::mem::take(&mut self.copy);
        let mut records = Vec::with_capacity(state.services.len());
        for record in &state.services {
            let key = key_of(record);
            let entry = if let Some(kept) = before.remove(&key).filter(|kept| kept.record == *record) {
                (kept, None)
            } else {
                let value = serde_json::to_value(record)?;
                let mut own = Vec::new();
                secret_values(&value, &mut own);
                (Copied { record: record.clone(), secrets: own, text: None }, Some(value))
            };
            secrets.extend(entry.0.secrets.iter().cloned());
            records.push((key, entry));
        }
        secrets.sort_unstable();
        secrets.dedup();
        let same_secrets = secrets == self.copy_secrets;
        let mut redactor = Redactor::new(secrets.iter().cloned());
        for (_, (copied, value)) in &mut records {
            if copied.text.is_some() && same_secrets {
                continue;
            }
            let mut value = match value.take() {
                Some(value) => value,
                None => serde_json::to_value(&copied.record)?,
            };
            redactor.json(&mut value);
            copied.text = Some(nested(&serde_json::to_vec_pretty(&value)?));
        }
        redactor.json(&mut head);
        let head = serde_json::to_vec_pretty(&head)?;
        let texts = records.iter().map(|(_, (c, _))| c.text.as_deref().unwrap_or_default());
        // The header always has its empty list; were it missing, the state is rendered whole rather than wrong.
        let state_text = if let Some(text) = splice(&head, texts) {
            text
        } else {
            let mut whole = serde_json::to_value(state)?;
            redactor.json(&mut whole);
            serde_json::to_vec_pretty(&whole)?
        };
        let mut texts: [Vec<u8>; N] = std::array::from_fn(|_| Vec::new());
        for (text, other) in texts.iter_mut().zip(&mut others) {
            redactor.json(other);
            *text = serde_json::to_vec_pretty(other)?;
        }
        let endpoints = self.map.as_mut().expect("rendered above");
        if endpoints.copy.as_ref().is_none_or(|(with, _)| *with != secrets) {
            let mut value = serde_json::to_value(&endpoints.targets)?;
            redactor.json(&mut value);
            endpoints.copy = Some((secrets.clone(), indented(&serde_json::to_vec_pretty(&value)?, b"  ")));
        }
        redactor.json(&mut map_head);
        let map_head = serde_json::to_vec_pretty(&map_head)?;
        let spliced = endpoints.copy.as_ref().and_then(|(_, text)| splice_map(&map_head, text));
        let map_text = if let Some(text) = spliced {
            text
        } else {
            let mut whole = serde_json::to_value(map)?;
            redactor.json(&mut whole);
            serde_json::to_vec_pretty(&whole)?
        };
        self.copy = records.into_iter().map(|(key, (copied, _))| (key, copied)).collect();
        self.copy_secrets = secrets;
        Ok(CopyTexts { state: state_text, map: map_text, others: texts })
    }
}

fn key_of(record: &ServiceRecord) -> Key {
    (record.target.clone(), record.service.clone())
}

/// `state` without its records (their list empty), to render around them.
fn header(state: &RunState) -> RunState {
    RunState {
        schema_version: state.schema_version,
        run_id: state.run_id.clone(),
        command: state.command.clone(),
        targets: state.targets.clone(),
        host: state.host,
        services: Vec::new(),
        failed: state.failed,
        failure: state.failure.clone(),
        created_at: state.created_at.clone(),
        updated_at: state.updated_at.clone(),
        requirement_users: state.requirement_users.clone(),
    }
}

/// `map` without its endpoints (an empty `targets`), to render around them.
fn map_header(map: &RuntimeMap) -> RuntimeMap {
    RuntimeMap { schema_version: map.schema_version, run_id: map.run_id.clone(), targets: Targets::new() }
}

/// The map header's text with `targets` (indented for its place) in its empty `targets` object; none when the
/// header has no such object at its top level.
fn splice_map(header: &[u8], targets: &[u8]) -> Option<Vec<u8>> {
    in_place_of(header, b"\n  \"targets\": {}", targets.len(), |out| {
        out.extend_from_slice(b"\n  \"targets\": ");
        out.extend_from_slice(targets);
    })
}

/// `header` with its first `marker` replaced by what `fill` writes (about `len` bytes); none without the marker.
fn in_place_of(header: &[u8], marker: &[u8], len: usize, fill: impl FnOnce(&mut Vec<u8>)) -> Option<Vec<u8>> {
    let at = header.windows(marker.len()).position(|w| w == marker)?;
    let mut out = Vec::with_capacity(header.len() + len + 8);
    out.extend_from_slice(&header[..at]);
    fill(&mut out);
    out.extend_from_slice(&header[at + marker.len()..]);
    Some(out)
}

/// A record's pretty text as it stands in the document's `services` list: every line after its first indented
/// two levels (a JSON string never holds a raw newline, so every newline is the layout's).
fn nested(text: &[u8]) -> Vec<u8> {
    indented(text, b"    ")
}

/// `text` with every line after its first indented by `indent`.
fn indented(text: &[u8], indent: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 8);
    for &byte in text {
        out.push(byte);
        if byte == b'\n' {
            out.extend_from_slice(indent);
        }
    }
    out
}

/// The header's text with the records' texts in its empty `services` list; none when the header has no such list
/// at its top level.
fn splice<'a>(header: &[u8], records: impl ExactSizeIterator<Item = &'a [u8]> + Clone) -> Option<Vec<u8>> {
    if records.len() == 0 {
        return Some(header.to_vec());
    }
    // Sized once, with room for the final newline the writer adds: a megabyte of state is not copied as it grows.
    let texts: usize = records.clone().map(|text| text.len() + 6).sum();
    in_place_of(header, b"\n  \"services\": []", texts, |out| {
        out.extend_from_slice(b"\n  \"services\": [");
        for (i, text) in records.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"\n    ");
            out.extend_from_slice(text);
        }
        out.extend_from_slice(b"\n  ]");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, pid: u32, env: &serde_json::Value) -> ServiceRecord {
        serde_json::from_value(serde_json::json!({
            "kind": "service", "target": "main", "service": name, "pid": pid, "pid_start_time": 7,
            "port": 8000, "ports": {}, "url": "http://127.0.0.1:8000", "status": "ready",
            "log_path": "/tmp/x.log", "started_at": "2026-12-02T10:00:00Z", "ready_at": null, "restarts": 0,
            "exit_code": null, "failure": null, "probes": [],
            "spec": {
                "name": name, "layer": 0, "cwd": "/repo", "argv": ["server", "--password", "hunter22"],
                "launch": "direct", "env": env, "port": null, "ports": {}, "url": null, "ready": null,
                "depends_on": [], "restart": "no", "stop_grace_secs": 5, "stop_signal": "TERM", "user": null
            }
        }))
        .expect("a record")
    }

    /// What the run copy was before its records' texts were kept: the whole document redacted at once.
    fn redacted_whole(state: &RunState, others: &[Value], known: &[String]) -> Vec<Vec<u8>> {
        let mut values = vec![serde_json::to_value(state).expect("json")];
        values.extend(others.iter().cloned());
        let mut secrets = known.to_vec();
        for value in &values {
            secret_values(value, &mut secrets);
        }
        let mut redactor = Redactor::new(secrets);
        values
            .into_iter()
            .map(|mut value| {
                redactor.json(&mut value);
                serde_json::to_vec_pretty(&value).expect("json")
            })
            .collect()
    }

    /// Save after save — a record added, one changed, one gone, a secret that appears in another record — the
    /// text is the whole document's, for the latest view and for the run copy alike.
    #[test]
    fn the_state_rendered_record_by_record_is_the_whole_documents_text_save_after_save() {
        let plain = serde_json::json!({"MODE": "dev"});
        let url = serde_json::json!({"DATABASE_URL": "postgres://app:s3cretpw@127.0.0.1:5432/app"});
        let note = serde_json::json!({"NOTE": "s3cretpw"});
        let saves = [
            vec![],
            vec![record("api", 10, &plain), record("web", 11, &plain)],
            vec![record("api", 10, &plain), record("web", 12, &plain)],
            vec![record("api", 10, &plain), record("db", 13, &url), record("web", 12, &plain)],
            // web's note is no secret of its own; once db's URL makes it one, web's kept text is redacted again.
            vec![record("web", 12, &note)],
            vec![record("db", 13, &url), record("web", 12, &note)],
            vec![record("web", 12, &plain)],
        ];
        let others = [serde_json::json!({"targets": {"main": {"api": "postgres://u:otherpw1@h/0"}}})];
        let known = vec!["generated-pw".to_owned()];
        let mut rendered = Rendered::default();
        for (i, services) in saves.into_iter().enumerate() {
            let state = crate::state::test_run_state(services);
            let latest = rendered.latest(&state).expect("rendered");
            assert_eq!(
                String::from_utf8_lossy(&latest),
                String::from_utf8_lossy(&serde_json::to_vec_pretty(&state).expect("json"))
            );
            // The map's endpoints: each run's id, the same endpoints twice, then another, then none.
            let endpoints = match i {
                0 | 1 => {
                    serde_json::json!({"main": {"api": {"url": "http://127.0.0.1:8000", "status": "ready"}}})
                }
                2..=4 => serde_json::json!({"main": {
                    "api": {"url": "http://127.0.0.1:8000", "status": "ready"},
                    "db": {"url": "postgres://app:s3cretpw@127.0.0.1:5432/app", "status": "ready"}}}),
                _ => serde_json::json!({}),
            };
            let map: RuntimeMap = serde_json::from_value(
                serde_json::json!({"schema_version": 1, "run_id": format!("run-{i}"), "targets": endpoints}),
            )
            .expect("a runtime map");
            let map_latest = rendered.latest_map(&map).expect("rendered");
            assert_eq!(
                String::from_utf8_lossy(&map_latest),
                String::from_utf8_lossy(&serde_json::to_vec_pretty(&map).expect("json"))
            );
            let CopyTexts { state: copy, map: map_copy, others: [other] } =
                rendered.copy(&state, &map, others.clone(), known.clone()).expect("rendered");
            let mut all = vec![serde_json::to_value(&map).expect("json")];
            all.extend(others.iter().cloned());
            let whole = redacted_whole(&state, &all, &known);
            assert_eq!(String::from_utf8_lossy(&copy), String::from_utf8_lossy(&whole[0]));
            assert_eq!(String::from_utf8_lossy(&map_copy), String::from_utf8_lossy(&whole[1]));
            assert_eq!(other, whole[2]);
            assert!(!(2..=4).contains(&i) || !String::from_utf8_lossy(&map_copy).contains("s3cretpw"));
            let text = String::from_utf8_lossy(&copy);
            let known = state.services.iter().any(|r| r.service == "db");
            assert!(!text.contains("hunter22") && (!known || !text.contains("s3cretpw")), "{text}");
        }
    }
}
