//! A pack summarised to what checks across files and packs consult: refs,
//! runner types, entry points and the refs that sensors and rules name. The
//! load cache keeps summaries (a few dozen bytes a component) instead of whole
//! components, so that a warm load reads back only what a publish needs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{Action, Loaded, Pack, Rule, RunnerType, Sensor, Trigger};
use crate::native::{ComponentKind, EntryPoint};

/// What the checks beyond one file need of a component.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Brief {
    /// Its ref (a rule's, qualified).
    #[serde(rename = "r")]
    pub component_ref: String,
    /// How it is started (actions and sensors).
    #[serde(rename = "t", default)]
    pub runner_type: RunnerType,
    /// Whether it is enabled.
    #[serde(rename = "e")]
    pub enabled: bool,
    /// The file it runs as written (an action's workflow file or entry point,
    /// a sensor's entry point), relative to its component directory; empty
    /// for triggers and rules.
    #[serde(rename = "p", default, skip_serializing_if = "String::is_empty")]
    pub entry: String,
    /// The refs it names: a sensor's trigger types; a rule's trigger, then its action.
    #[serde(rename = "x", default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<String>,
}

impl Brief {
    pub(crate) fn of_action(a: &Action) -> Brief {
        Brief {
            component_ref: a.action_ref.clone(),
            runner_type: a.runner_type,
            enabled: a.enabled,
            entry: a
                .workflow_file
                .as_deref()
                .unwrap_or(&a.entry_point)
                .to_string(),
            refs: vec![],
        }
    }

    pub(crate) fn of_sensor(s: &Sensor) -> Brief {
        Brief {
            component_ref: s.sensor_ref.clone(),
            runner_type: s.runner_type,
            enabled: s.enabled,
            entry: s.entry_point.clone(),
            refs: s.trigger_types.clone(),
        }
    }

    pub(crate) fn of_trigger(t: &Trigger) -> Brief {
        Brief {
            component_ref: t.trigger_ref.clone(),
            runner_type: RunnerType::default(),
            enabled: t.enabled,
            entry: String::new(),
            refs: vec![],
        }
    }

    pub(crate) fn of_rule(r: &Rule) -> Brief {
        Brief {
            component_ref: r.rule_ref.clone(),
            runner_type: RunnerType::default(),
            enabled: r.enabled,
            entry: String::new(),
            refs: vec![r.trigger_ref.clone(), r.action_ref.clone()],
        }
    }
}

/// A pack, loaded and validated, summarised (see [`Brief`]); what
/// [`load_pack_summary_cached`](crate::load_pack_summary_cached) gives and
/// [`references_of`](crate::references_of) checks.
#[derive(Clone, Debug, PartialEq)]
pub struct PackSummary {
    /// The pack directory.
    pub dir: PathBuf,
    /// The pack's ref (`pack.yaml`'s `ref`).
    pub pack_ref: String,
    /// `actions/*.yaml`, sorted by file name.
    pub actions: Vec<Loaded<Brief>>,
    /// `sensors/*.yaml`, sorted by file name.
    pub sensors: Vec<Loaded<Brief>>,
    /// `triggers/*.yaml`, sorted by file name.
    pub triggers: Vec<Loaded<Brief>>,
    /// `rules/*.yaml`, sorted by file name.
    pub rules: Vec<Loaded<Brief>>,
}

fn briefs<T>(all: &[Loaded<T>], of: fn(&T) -> Brief) -> Vec<Loaded<Brief>> {
    all.iter()
        .map(|l| Loaded {
            file: l.file.clone(),
            spec: of(&l.spec),
        })
        .collect()
}

impl Pack {
    /// The pack summarised: exactly what [`load_pack_summary_cached`](crate::load_pack_summary_cached) gives.
    pub fn summary(&self) -> PackSummary {
        PackSummary {
            dir: self.dir.clone(),
            pack_ref: self.meta.pack_ref.clone(),
            actions: briefs(&self.actions, Brief::of_action),
            sensors: briefs(&self.sensors, Brief::of_sensor),
            triggers: briefs(&self.triggers, Brief::of_trigger),
            rules: briefs(&self.rules, Brief::of_rule),
        }
    }

    /// Every entry point of the pack's actions and sensors.
    pub fn entry_points(&self) -> Vec<EntryPoint> {
        self.summary().entry_points()
    }
}

impl PackSummary {
    /// Every entry point of the pack's actions and sensors.
    pub fn entry_points(&self) -> Vec<EntryPoint> {
        let of = |kind: ComponentKind| {
            move |l: &Loaded<Brief>| EntryPoint {
                component: l.spec.component_ref.clone(),
                kind,
                runner: l.spec.runner_type,
                enabled: l.spec.enabled,
                path: component_path(kind.dir(), &l.spec.entry),
                declared_in: l.file.clone(),
            }
        };
        let actions = self.actions.iter().map(of(ComponentKind::Action));
        let sensors = self.sensors.iter().map(of(ComponentKind::Sensor));
        actions.chain(sensors).collect()
    }
}

/// `dir/entry` with `.` components dropped (`./run.sh` names `run.sh`).
fn component_path(dir: &str, entry: &str) -> PathBuf {
    Path::new(dir).join(entry).components().collect()
}
