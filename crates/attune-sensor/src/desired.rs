//! What should run: every enabled sensor of the packs (packs.dev overriding the
//! volume), each with `ATTUNE_SENSOR_TRIGGERS` built from the enabled rules of
//! its trigger types.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use attune_pack::{RunnerType, find_packs, load_pack};
use attune_service::{ApiError, Client};
use serde_json::{Value, json};

/// One sensor to run.
#[derive(Clone, Debug, PartialEq)]
pub struct SensorSpec {
    /// `<pack>.<name>`.
    pub sensor_ref: String,
    /// The entry point.
    pub path: PathBuf,
    /// Its pack's directory (a Python sensor's `PYTHONPATH` starts there).
    pub pack_dir: PathBuf,
    /// How to start it.
    pub runner: RunnerType,
    /// Its trigger types.
    pub trigger_types: Vec<String>,
}

/// The enabled sensors of both directories, by ref (a dev pack overrides the volume's).
pub fn sensors(packs_dir: &Path, dev_dir: &Path) -> BTreeMap<String, SensorSpec> {
    let mut packs = BTreeMap::new();
    for dir in [packs_dir, dev_dir] {
        for path in find_packs(dir).unwrap_or_default() {
            if let Some(pack) = load_pack(&path).pack {
                packs.insert(pack.meta.pack_ref.clone(), pack);
            }
        }
    }
    let mut out = BTreeMap::new();
    for pack in packs.values().filter(|p| p.meta.enabled) {
        for s in pack.sensors.iter().filter(|s| s.spec.enabled) {
            out.insert(
                s.spec.sensor_ref.clone(),
                SensorSpec {
                    sensor_ref: s.spec.sensor_ref.clone(),
                    path: pack.dir.join("sensors").join(&s.spec.entry_point),
                    pack_dir: pack.dir.clone(),
                    runner: s.spec.runner_type,
                    trigger_types: s.spec.trigger_types.clone(),
                },
            );
        }
    }
    out
}

/// `ATTUNE_SENSOR_TRIGGERS` for a sensor, in upstream's sensor manager's
/// shape: `[{id: <rule id, integer>, ref: <rule ref>, config: <trigger
/// params>}]` of the enabled rules of its trigger types, following pagination.
pub fn triggers(api: &Client, spec: &SensorSpec) -> Result<String, ApiError> {
    let mut out = vec![];
    for t in &spec.trigger_types {
        for page in 1.. {
            let v: Value = api.get(&format!(
                "/api/v1/rules?trigger_ref={t}&enabled=true&page={page}&page_size=100"
            ))?;
            for rule in v["items"].as_array().into_iter().flatten() {
                out.push(
                    json!({"id": rule["id"], "ref": rule["ref"], "config": rule["trigger_params"]}),
                );
            }
            if !v
                .pointer("/pagination/has_next")
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                break;
            }
        }
    }
    Ok(Value::Array(out).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_sensor_overrides_and_disabled_ones_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = tmp.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("vol/p/pack.yaml", "ref: p\nlabel: P\nversion: 1.0.0\n");
        write(
            "vol/p/sensors/a.yaml",
            "ref: p.a\nlabel: A\nrunner_type: native\nentry_point: a-bin\ntrigger_types: [p.t]\n",
        );
        write(
            "vol/p/sensors/b.yaml",
            "ref: p.b\nlabel: B\nenabled: false\nrunner_type: native\nentry_point: b-bin\ntrigger_types: [p.t]\n",
        );
        write("dev/p/pack.yaml", "ref: p\nlabel: P dev\nversion: 1.0.1\n");
        write(
            "dev/p/sensors/a.yaml",
            "ref: p.a\nlabel: A\nrunner_type: shell\nentry_point: a.sh\ntrigger_types: [p.t]\n",
        );
        let s = sensors(&tmp.path().join("vol"), &tmp.path().join("dev"));
        assert_eq!(s.keys().collect::<Vec<_>>(), ["p.a"]);
        assert_eq!(s["p.a"].runner, RunnerType::Shell);
        assert!(s["p.a"].path.ends_with("dev/p/sensors/a.sh"));
    }
}
