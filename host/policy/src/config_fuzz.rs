//! Seeded fuzz tests of the binding rules an operator or the admin API sends as JSON
//! (`BindingSpec`, `PluginsConfig`, `DryRunRequest`): any document parses to a value or to an
//! error; a parsed value checks to a value or to an error naming the problem; a binding that passes
//! its check serialises and parses back to the same binding, which passes again.
//!
//! Budgets and replay: `ferrymq_fuzzgen` (`FERRYMQ_FUZZ_SEED`, `FERRYMQ_FUZZ_CASES`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ferrymq_fuzzgen::{Rng, cases, json, json_fields, json_string, mutate_text};
use serde_json::{Map, Value, json};

use crate::config::PluginsConfig;
use crate::dry_run::DryRunRequest;
use crate::registry::BindingSpec;

const SPEC_KEYS: [&str; 10] =
    ["name", "plugin", "version", "kind", "topic", "group", "policy", "params", "http_allowlist", "limits"];
const LIMIT_KEYS: [&str; 6] =
    ["memory_bytes_max", "call_ms_max", "output_bytes_max", "instances_max", "failures_max", "log_lines_per_s_max"];

/// A name as the rules see one: valid, or broken in one of the ways names break.
fn name(rng: &mut Rng) -> Value {
    let name = match rng.below(5) {
        0 => rng.text(12),
        1 => (*rng.pick(&["", "a b", "%RETRY%g", "x".repeat(300).as_str(), "tax/p", "é"])).to_owned(),
        _ => rng.word(16),
    };
    Value::String(name)
}

fn number(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => json!(rng.edge_u64()),
        1 => json!(rng.edge_i64()),
        2 => json!(rng.below(100)),
        _ => json!(-1.5),
    }
}

/// A binding close to a valid one, so that the checks after parsing run too: its names may be
/// anything, and one time in three so may the type of any field.
fn spec(rng: &mut Rng) -> Value {
    let wild = rng.one_in(3);
    let mut fields = Map::new();
    fields.insert("name".into(), name(rng));
    fields.insert("plugin".into(), json!(format!("{}/{}", rng.word(6), rng.word(6))));
    fields.insert("version".into(), if wild && rng.bool() { number(rng) } else { json!(1 + rng.below(5)) });
    let kind = if wild { *rng.pick(&["filter", "Route", "lite"]) } else { *rng.pick(&["filter", "route", "tx-check"]) };
    fields.insert("kind".into(), json!(kind));
    fields.insert("topic".into(), name(rng));
    if kind == "filter" || rng.one_in(4) {
        fields.insert("group".into(), name(rng));
    }
    if rng.bool() {
        let policies = ["fail-open", "fail-closed", "dead-letter", "open"];
        fields.insert("policy".into(), json!(*rng.pick(&policies[..if wild { 4 } else { 3 }])));
    }
    if rng.bool() {
        let params: Map<String, Value> = (0..rng.size(4))
            .map(|_| {
                let key = if rng.one_in(4) { format!("ferrymq.{}", rng.word(4)) } else { rng.word(8) };
                (key, if wild && rng.bool() { number(rng) } else { json!(rng.text(10)) })
            })
            .collect();
        fields.insert("params".into(), Value::Object(params));
    }
    if rng.bool() {
        let hosts: Vec<Value> = (0..rng.size(3))
            .map(|_| json!(*rng.pick(&["bank.example", "bank.example:8443", "", "a b", "u@h", "h/p"])))
            .collect();
        fields.insert("http_allowlist".into(), Value::Array(hosts));
    }
    if rng.bool() {
        let mut limits = Map::new();
        for key in LIMIT_KEYS {
            if rng.bool() {
                let value = if wild && rng.bool() { number(rng) } else { json!(rng.below(1 << 20)) };
                limits.insert(key.to_owned(), value);
            }
        }
        fields.insert("limits".into(), Value::Object(limits));
    }
    if wild && rng.bool() {
        fields.insert(rng.word(6), json!(true));
    }
    Value::Object(fields)
}

/// A document for the parsers: a near-valid binding, one mutated as text, or JSON of any shape whose
/// keys are the ones the parsers know.
fn document(rng: &mut Rng, keys: &[&str]) -> String {
    let near = spec(rng).to_string();
    match rng.below(8) {
        0..=3 => near,
        4 | 5 => {
            let string = json_string(&rng.text(8));
            mutate_text(rng, &near, &[&string, "{", "}", "[1,", "\"kind\":", "null"])
        }
        6 => json_fields(rng, keys, 2),
        _ => json(rng, keys, 3),
    }
}

#[test]
fn bindings_from_any_json_are_refused_or_checked_and_survive_a_round_trip() {
    let mut keys: Vec<&str> = SPEC_KEYS.to_vec();
    keys.extend(LIMIT_KEYS);
    cases!(30_000, |rng| {
        let doc = document(rng, &keys);
        let Ok(spec) = serde_json::from_str::<BindingSpec>(&doc) else { return };
        if let Err(reason) = spec.check() {
            assert!(!reason.is_empty());
            return;
        }
        let again: BindingSpec = serde_json::from_str(&serde_json::to_string(&spec).expect("serialises"))
            .unwrap_or_else(|e| panic!("{doc}: a checked binding does not parse back: {e}"));
        assert_eq!(again, spec, "{doc}");
        assert_eq!(again.check(), Ok(()));
    });
}

#[test]
fn plugin_settings_and_dry_runs_from_any_json_parse_and_validate_or_fail_cleanly() {
    let mut keys = vec![
        "instances_max",
        "workers",
        "worker_nice",
        "cache_dir",
        "filter_history_max",
        "upload_bytes_max",
        "compile_ms_max",
        "compile_memory_bytes_max",
        "bindings",
        "component",
        "last",
        "from_ms",
        "to_ms",
        "binding",
    ];
    keys.extend(SPEC_KEYS);
    keys.extend(LIMIT_KEYS);
    cases!(20_000, |rng| {
        let doc = if rng.bool() {
            let mut binding = spec(rng);
            if let Value::Object(fields) = &mut binding {
                fields.remove("plugin");
                fields.remove("version");
                fields.insert("component".into(), json!(format!("{}.wasm", rng.word(6))));
            }
            let settings = json!({ "instances_max": number(rng), "bindings": [binding] }).to_string();
            if rng.bool() { settings } else { mutate_text(rng, &settings, &[]) }
        } else {
            document(rng, &keys)
        };
        if let Ok(config) = serde_json::from_str::<PluginsConfig>(&doc)
            && let Err(reason) = config.validate()
        {
            assert!(!reason.is_empty());
        }
        let _ = serde_json::from_str::<DryRunRequest>(&doc);
    });
}
