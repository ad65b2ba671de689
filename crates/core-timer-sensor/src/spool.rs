//! The spool: events that were not delivered when the API refused the token,
//! kept in order in one JSON-lines file (`ATTUNE_SENSOR_SPOOL`) for the next
//! start, which sends them before any new event. Written to a temporary file
//! and renamed, so a crash leaves the old spool or the new one, never half.

use std::io::Write;
use std::path::Path;

use crate::api::Event;
use crate::queue::Queue;

/// Writes `events` to `path` (replacing it), or logs why it could not.
pub fn save(path: &Path, events: &[Event]) {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        for e in events {
            serde_json::to_writer(&mut f, e)?;
            f.write_all(b"\n")?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    match write() {
        Ok(()) => {
            tracing::warn!(kept = events.len(), spool = %path.display(), "unsent events kept for the next start")
        }
        Err(e) => {
            tracing::error!(lost = events.len(), spool = %path.display(), "cannot keep unsent events: {e}")
        }
    }
}

/// Queues the events of the spool at `path`, oldest first, and removes it.
pub fn restore(path: &Path, queue: &Queue) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let mut restored = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Event>(line) {
            Ok(e) => {
                queue.push(e);
                restored += 1;
            }
            Err(e) => {
                tracing::warn!(spool = %path.display(), "skipped a malformed spooled event: {e}")
            }
        }
    }
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(spool = %path.display(), "cannot remove the spool after reading it: {e}");
    }
    tracing::info!(restored, "events kept from the last run are sent first");
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
        save(&path, &events);
        let q = Queue::new(10);
        restore(&path, &q);
        assert_eq!(q.pending(), events);
        assert!(!path.exists());
    }
}
