//! The spool: events not delivered when the sensor stopped (a signal, a
//! refused token, a panic), kept in order in one JSON-lines file
//! (`ATTUNE_SENSOR_SPOOL`, one `POST /api/v1/events` body a line) for the next
//! start, which sends them before any new event. Written to a temporary file
//! and renamed, so a crash leaves the old spool or the new one, never half;
//! readable by its owner only. The file stays until its events are delivered
//! (see [`crate::queue::Queue::restore`]), so a crash after a restart loses
//! none of them either.

use std::io::Write;
use std::path::Path;

use crate::api::Event;
use crate::queue::Queue;

/// Writes `events` to `path` (replacing it, creating its directory).
pub fn save(path: &Path, events: &[Event]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let mut f = open.open(&tmp)?;
    for e in events {
        serde_json::to_writer(&mut f, e)?;
        f.write_all(b"\n")?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// At a stop: keeps `events` (oldest first) in the spool at `path` and says
/// how many and where, or says how many are lost and why. With nothing left,
/// a spool from the last start (all delivered by now) is removed.
pub fn keep(path: Option<&Path>, events: &[Event]) {
    let n = events.len();
    match path {
        None if n > 0 => tracing::warn!(
            lost = n,
            "{} are lost: set {} to keep them for the next start",
            unsent(n),
            attune_contract::env::SENSOR_SPOOL
        ),
        None => {}
        Some(path) if n == 0 => remove_delivered(path),
        Some(path) => match save(path, events) {
            Ok(()) => tracing::warn!(
                kept = n,
                spool = %path.display(),
                "kept {} in {} (oldest first: {}); the next start sends them first",
                unsent(n),
                path.display(),
                events[0]
            ),
            Err(e) => tracing::error!(
                lost = n,
                spool = %path.display(),
                "cannot keep {} in {}: {e}; they are lost",
                unsent(n),
                path.display()
            ),
        },
    }
}

/// `1 unsent event`, `3 unsent events`, as the log says it.
pub fn unsent(n: usize) -> String {
    format!("{n} unsent event{}", if n == 1 { "" } else { "s" })
}

/// Removes the spool at `path` once its events are delivered.
pub fn remove_delivered(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::info!(spool = %path.display(), "the events kept from the last run are sent; removed {}", path.display())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(spool = %path.display(), "cannot remove {} after sending its events: {e}; the next start sends them again", path.display())
        }
    }
}

/// Queues the events of the spool at `path`, oldest first, ahead of any new one.
pub fn restore(path: &Path, queue: &Queue) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::error!(spool = %path.display(), "cannot read {}: {e}; its events are not sent, and it is replaced at the next stop", path.display());
            return;
        }
    };
    let mut events = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(line) {
            Ok(e) => events.push(e),
            Err(e) => tracing::warn!(
                spool = %path.display(),
                "{}:{}: skipped a malformed spooled event: {e}",
                path.display(),
                i + 1
            ),
        }
    }
    let restored = events.len();
    if restored == 0 {
        let _ = std::fs::remove_file(path);
        return;
    }
    tracing::info!(restored, spool = %path.display(), "{restored} events kept from the last run in {} are sent first", path.display());
    queue.restore(events, path.to_path_buf());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.jsonl");
        let events: Vec<Event> = (0..3)
            .map(|n| Event {
                trigger_ref: "core.intervaltimer".into(),
                payload: json!({"n": n}),
                trigger_instance_id: "rule_1".into(),
            })
            .collect();
        save(&path, &events).unwrap();
        let q = Queue::new(10);
        restore(&path, &q);
        assert_eq!(q.pending(), events);
        assert!(path.exists(), "removed before its events were delivered");
    }

    #[cfg(unix)]
    #[test]
    fn the_spool_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub/s.jsonl");
        save(&path, &[]).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }

    #[test]
    fn keeping_nothing_removes_a_delivered_spool() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.jsonl");
        std::fs::write(&path, "").unwrap();
        keep(Some(&path), &[]);
        assert!(!path.exists());
    }
}
