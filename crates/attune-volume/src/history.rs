//! Kept generations: listing them (`history`) and making one current again
//! after confirming it whole (`rollback`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::audit::{How, audit_pack};
use crate::error::Error;
use crate::manifest::{FORMAT, MANIFEST_NAME, Manifest, root_hash};
use crate::stamps::Stamps;
use crate::store::{Objects, object_id, pack_trees, read_objects};
use crate::volume::{STAMPS_NAME, STORE_DIR, Volume, VolumeLock, generation_name};

/// One kept generation.
#[derive(Debug, Serialize)]
pub struct Generation {
    /// Its directory name, `..<id>`.
    pub name: String,
    /// Whether `..data` points at it.
    pub current: bool,
    /// When it was written (its directory's ctime), seconds since the epoch.
    pub time: i64,
    /// The same, as UTC (`2026-12-01T22:30:00Z`).
    pub time_utc: String,
    /// Its manifest's root hash (`None` when the manifest is unreadable).
    pub root_hash: Option<String>,
    /// Packs added since the generation before it.
    pub added: Vec<String>,
    /// Packs whose contents changed since the generation before it.
    pub changed: Vec<String>,
    /// Packs removed since the generation before it.
    pub removed: Vec<String>,
}

/// The kept generations of `vol`, newest first.
pub fn history(vol: &Volume) -> Result<Vec<Generation>, Error> {
    let current = vol.current()?;
    let gens = crate::gc::generations(vol)?;
    let packs_of = |name: &str| -> BTreeMap<String, String> {
        match read_objects(&vol.root.join(name)) {
            Ok(Objects::Packs(m)) => m
                .into_iter()
                .map(|(p, o)| (p, object_id(&o).to_string()))
                .collect(),
            _ => BTreeMap::new(),
        }
    };
    let mut out = vec![];
    for (k, (ctime, name)) in gens.iter().enumerate() {
        let now = packs_of(name);
        let before = gens
            .get(k + 1)
            .map(|(_, n)| packs_of(n))
            .unwrap_or_default();
        let time = ctime.div_euclid(1_000_000_000);
        out.push(Generation {
            name: name.clone(),
            current: current.as_deref() == Some(name),
            time,
            time_utc: utc(time),
            root_hash: crate::manifest::read_root_hash(&vol.root.join(name).join(MANIFEST_NAME)),
            added: now
                .keys()
                .filter(|p| !before.contains_key(*p))
                .cloned()
                .collect(),
            changed: now
                .iter()
                .filter(|(p, o)| before.get(*p).is_some_and(|b| b != *o))
                .map(|(p, _)| p.clone())
                .collect(),
            removed: before
                .keys()
                .filter(|p| !now.contains_key(*p))
                .cloned()
                .collect(),
        });
    }
    Ok(out)
}

/// What a rollback did.
#[derive(Debug, Serialize)]
pub struct Rollback {
    /// The generation now current.
    pub generation: String,
    /// The one current before.
    pub previous: Option<String>,
    /// Files confirmed.
    pub files: usize,
}

/// Makes the kept generation `target` (default: the newest one older than the
/// current) current, after confirming every entry of it; `Error::Invalid`
/// (nothing changed) when it is damaged. Takes the volume lock (waiting up to
/// `lock_timeout`) and sweeps what interrupted runs left first.
pub fn rollback(
    vol: &Volume,
    lock_timeout: std::time::Duration,
    target: Option<&str>,
) -> Result<Rollback, Error> {
    let lock = vol.lock(lock_timeout)?;
    crate::gc::sweep_leftovers(vol)?;
    roll_back_to(vol, &lock, target)
}

fn roll_back_to(vol: &Volume, _lock: &VolumeLock, target: Option<&str>) -> Result<Rollback, Error> {
    let current = vol.current()?;
    let gens = crate::gc::generations(vol)?;
    let name = match target {
        Some(t) if t.starts_with("..") => t.to_string(),
        Some(t) => generation_name(t),
        None => {
            let at = gens
                .iter()
                .position(|(_, n)| Some(n) == current.as_ref())
                .map_or(0, |i| i + 1);
            gens.get(at).map(|(_, n)| n.clone()).ok_or_else(|| {
                Error::Usage(format!(
                    "{} keeps no generation older than the current one; `packs-assemble history {}` lists what it keeps",
                    vol.root.display(),
                    vol.root.display()
                ))
            })?
        }
    };
    if !gens.iter().any(|(_, n)| *n == name) {
        return Err(Error::Usage(format!(
            "{} keeps no generation `{name}`; `packs-assemble history {}` lists what it keeps",
            vol.root.display(),
            vol.root.display()
        )));
    }
    let dir = vol.root.join(&name);
    let manifest_path = dir.join(MANIFEST_NAME);
    let manifest = Manifest::read(&manifest_path)?;
    let refuse = |why: String| {
        eprintln!("{}: error: {why}", dir.display());
        Error::Invalid {
            count: 1,
            consequence: "nothing was rolled back",
        }
    };
    if manifest.contents.format != FORMAT {
        return Err(refuse(format!(
            "was published by an older packs-assemble (manifest format {}); it cannot be made current again",
            manifest.contents.format
        )));
    }
    if root_hash(&manifest.contents) != manifest.root_hash {
        return Err(refuse(
            "its manifest does not match its root hash: it was edited".into(),
        ));
    }
    let Ok(Objects::Packs(objects)) = read_objects(&dir) else {
        return Err(refuse("its objects list is missing or damaged".into()));
    };
    let packs = pack_trees(&manifest);
    let stamps = Stamps::load(&vol.root.join(STAMPS_NAME));
    let mut records = vec![];
    let mut damaged = vec![];
    // Its own entries first (the pack links above all), with the code that
    // confirms a kept generation before a publish reuses it.
    let chosen: Vec<String> = packs
        .iter()
        .map(|p| objects.get(&p.name).cloned().unwrap_or_default())
        .collect();
    if objects.len() != packs.len() {
        damaged.push("its objects list does not name one object per pack".to_string());
    }
    if let Err(why) = crate::trust::generation_entries(&dir, &packs, &chosen) {
        damaged.push(why);
    }
    for p in &packs {
        let Some(o) = objects.get(&p.name) else {
            damaged.push(format!("{}: no object", p.name));
            continue;
        };
        let a = audit_pack(
            &vol.root.join(STORE_DIR).join(o),
            &manifest,
            p,
            &stamps,
            How::Confirm,
        )?;
        for (i, why) in &a.damaged {
            damaged.push(format!("{}: {why}", manifest.contents.entries[*i].path));
        }
        records.extend(a.confirmed.into_iter().map(|(_, r)| r));
    }
    if !damaged.is_empty() {
        for d in &damaged {
            eprintln!("{}: error: {d}", dir.display());
        }
        return Err(Error::Invalid {
            count: damaged.len(),
            consequence: "nothing was rolled back; assemble its inputs again to repair it",
        });
    }
    let files = manifest
        .contents
        .entries
        .iter()
        .filter(|e| e.sha256.is_some())
        .count();
    crate::publish::commit(vol, &name, &packs)?;
    crate::publish::save_stamps(vol, records)?;
    Ok(Rollback {
        generation: name,
        previous: current,
        files,
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (civil from days, as in
/// Howard Hinnant's algorithm).
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_796_164_200), "2026-12-01T22:30:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    }
}
