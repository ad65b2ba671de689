//! The spool: events not delivered when the sensor stopped (a signal, a
//! refused token, a panic), kept in order in one JSON-lines file
//! (`ATTUNE_SENSOR_SPOOL`, one `POST /api/v1/events` body a line) for the next
//! start, which sends them before any new event. The file stays until its
//! events are delivered (see `Queue::restore` in the queue module), so a crash
//! after a restart loses none of them either.
//!
//! Writing: to a temporary file beside the spool, created new (`O_CREAT |
//! O_EXCL`, so a file or symlink planted at its name is refused, never
//! followed) under a name unique to this process, readable by its owner only,
//! synced, then renamed over the spool: a crash leaves the old spool or the new
//! one, never half.
//!
//! Reading: as bytes, one line at a time, each line parsed on its own and
//! queued at once. A line that is not an event (not UTF-8, not JSON, longer
//! than [`MAX_LINE_BYTES`]) is dropped with a warning naming its line; the
//! others are kept. What is held is one line and the queue (bounded by its
//! capacity), whatever the spool's size. A spool that cannot be read is set
//! aside (`<spool>.unreadable`), never deleted or overwritten as if sent.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::api::Event;

/// A spooled line longer than this (the API's default request body limit, so
/// no event the API takes) is skipped as it is read, without being held.
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// Names tried for the temporary file before giving up.
const TEMP_ATTEMPTS: u32 = 64;

/// Writes `events` to `path` (replacing it, creating its directory), through
/// a temporary file of its own (see the module doc).
pub fn save(path: &Path, events: &[Event]) -> std::io::Result<()> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir
        }
        None => Path::new("."),
    };
    let (tmp, file) = create_temp(dir, path)?;
    let written = (|| {
        let mut out = BufWriter::new(file);
        for e in events {
            serde_json::to_writer(&mut out, e)?;
            out.write_all(b"\n")?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    // The rename itself survives a crash once the directory is synced.
    if written.is_ok()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    written
}

/// Creates a new file beside `path` for [`save`]: `.<name>.<pid>.<n>.tmp`,
/// mode 0600, with `O_CREAT | O_EXCL`, which fails on any existing name,
/// a symlink included (POSIX: it is not followed), so nothing planted there
/// is ever written through; a taken name is skipped for the next.
fn create_temp(dir: &Path, path: &Path) -> std::io::Result<(PathBuf, File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map_or_else(|| "spool".into(), |n| n.to_string_lossy().into_owned());
    for _ in 0..TEMP_ATTEMPTS {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match open_new(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!(
            "{TEMP_ATTEMPTS} temporary names beside {} are taken; remove the `.{name}.*.tmp` files there",
            path.display()
        ),
    ))
}

/// Opens `file` for writing only if this call creates it (never through a link).
fn open_new(file: &Path) -> std::io::Result<File> {
    let mut open = OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    open.open(file)
}

/// At a stop: keeps `events` (oldest first) in the spool at `path` and says
/// how many and where, or says how many are lost and why. With nothing left
/// the spool is left alone: a restored one was removed when its last event
/// was delivered, and one that could not be read is not "sent".
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
        Some(_) if n == 0 => {}
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

/// Hands the events of the spool at `path`, oldest first, to `take` (which
/// queues them ahead of any new one and says how many it took), reading the
/// file one line at a time (see the module doc). The spool knows nothing of
/// the queue: it is a leaf.
pub fn restore(path: &Path, take: impl FnOnce(&mut dyn Iterator<Item = Event>) -> usize) {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            set_aside(path, &format!("cannot open {}: {e}", path.display()));
            return;
        }
    };
    let mut lines = Lines::new(BufReader::new(file), path);
    let restored = take(&mut lines);
    let (skipped, failed, line) = (lines.skipped, lines.failed, lines.line);
    if let Some(e) = failed {
        // The events read before the error are queued, and the rest is not
        // lost: the file is kept aside rather than removed once they are sent.
        set_aside(
            path,
            &format!("cannot read {} past line {line}: {e}", path.display()),
        );
    }
    if restored == 0 {
        if failed.is_none() {
            let _ = std::fs::remove_file(path);
        }
        if skipped > 0 {
            tracing::warn!(skipped, spool = %path.display(), "{} held no event to send ({skipped} lines dropped)", path.display());
        }
        return;
    }
    tracing::info!(restored, skipped, spool = %path.display(), "{restored} events kept from the last run in {} are sent first", path.display());
}

/// Renames the spool at `path`, which cannot be read, to `<path>.unreadable`,
/// so that neither the removal of a delivered spool nor the next stop's
/// spool destroys what is in it.
fn set_aside(path: &Path, why: &str) {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".unreadable");
    let aside = PathBuf::from(aside);
    match std::fs::rename(path, &aside) {
        Ok(()) => {
            tracing::error!(spool = %path.display(), "{why}; its events that could not be read are not sent; moved it to {} for you to inspect", aside.display())
        }
        Err(e) => {
            tracing::error!(spool = %path.display(), "{why}; its events that could not be read are not sent, and it cannot be moved aside to {} ({e}): the next stop with unsent events replaces it", aside.display())
        }
    }
}

/// The events of a spool, read one line at a time; a line that is not an
/// event is logged and skipped. Ends at the end of the file or at a read
/// error (kept in `failed`).
#[derive(Debug)]
pub struct Lines<'a, R> {
    reader: R,
    path: &'a Path,
    /// The current line (without its newline); at most [`MAX_LINE_BYTES`].
    buf: Vec<u8>,
    /// Lines read so far.
    line: usize,
    /// Lines dropped.
    pub skipped: usize,
    /// The read error that ended the lines, if one did.
    pub failed: Option<std::io::ErrorKind>,
}

impl<'a, R: BufRead> Lines<'a, R> {
    /// The events of the spool `reader`, whose file is `path` (for the log).
    pub fn new(reader: R, path: &'a Path) -> Self {
        Lines {
            reader,
            path,
            buf: Vec::new(),
            line: 0,
            skipped: 0,
            failed: None,
        }
    }

    /// The bytes held for the current line.
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }

    /// Reads the next line into `buf`: `Some(true)` when it is whole,
    /// `Some(false)` when it is longer than [`MAX_LINE_BYTES`] (its bytes past
    /// the limit are read and dropped, never held), `None` at the end.
    fn read_line(&mut self) -> std::io::Result<Option<bool>> {
        self.buf.clear();
        let (mut any, mut whole) = (false, true);
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                return Ok(any.then_some(whole));
            }
            any = true;
            let newline = chunk.iter().position(|b| *b == b'\n');
            let part = &chunk[..newline.unwrap_or(chunk.len())];
            if whole && self.buf.len() + part.len() > MAX_LINE_BYTES {
                whole = false;
                self.buf = Vec::new();
            }
            if whole {
                self.buf.extend_from_slice(part);
            }
            let used = newline.map_or(chunk.len(), |i| i + 1);
            self.reader.consume(used);
            if newline.is_some() {
                return Ok(Some(whole));
            }
        }
    }
}

impl<R: BufRead> Iterator for Lines<'_, R> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            let whole = match self.read_line() {
                Ok(Some(whole)) => whole,
                Ok(None) => return None,
                Err(e) => {
                    self.failed = Some(e.kind());
                    tracing::error!(spool = %self.path.display(), "{}:{}: cannot read: {e}", self.path.display(), self.line + 1);
                    return None;
                }
            };
            self.line += 1;
            let (path, line) = (self.path.display(), self.line);
            if !whole {
                self.skipped += 1;
                tracing::warn!(spool = %path, "{path}:{line}: dropped a spooled line longer than {MAX_LINE_BYTES} bytes; it is no event the API takes");
                continue;
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Event>(&self.buf) {
                Ok(e) => return Some(e),
                Err(e) => {
                    self.skipped += 1;
                    tracing::warn!(spool = %path, "{path}:{line}: dropped a malformed spooled event (the other lines are kept): {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Queue;
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
        restore(&path, |e| q.restore(e, path.clone()));
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

    fn event(n: u64) -> Event {
        Event {
            trigger_ref: "core.intervaltimer".into(),
            payload: json!({"n": n}),
            trigger_instance_id: "rule_1".into(),
        }
    }

    fn line(e: &Event) -> Vec<u8> {
        let mut l = serde_json::to_vec(e).unwrap();
        l.push(b'\n');
        l
    }

    /// One byte that is not UTF-8 made the whole spool unreadable as a
    /// string; nothing was queued and the stop then deleted the file as sent.
    /// Only that line is dropped; the others are sent, or kept at the stop.
    #[test]
    fn a_byte_not_utf8_drops_its_line_and_keeps_the_others_across_a_stop() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.jsonl");
        let mut bad = line(&event(1));
        bad[5] = 0xff;
        std::fs::write(&path, [line(&event(0)), bad, line(&event(2))].concat()).unwrap();
        let q = Queue::new(10);
        restore(&path, |e| q.restore(e, path.clone()));
        assert_eq!(q.pending(), [event(0), event(2)]);
        // The sensor stops before any is delivered: both are kept.
        keep(Some(&path), &q.drain());
        let kept = std::fs::read(&path).expect("the spool was deleted as sent");
        assert_eq!(kept, [line(&event(0)), line(&event(2))].concat());
    }

    /// The temporary file had a fixed name (`<spool>.tmp`) and was opened
    /// following links: a symlink planted there had its target overwritten.
    #[cfg(unix)]
    #[test]
    fn save_does_not_follow_a_symlink_planted_at_the_temporary_name() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.jsonl");
        let target = tmp.path().join("victim");
        std::fs::write(&target, "precious").unwrap();
        std::os::unix::fs::symlink(&target, path.with_extension("tmp")).unwrap();
        save(&path, &[event(0)]).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        assert_eq!(std::fs::read(&path).unwrap(), line(&event(0)));
    }

    /// The spool was read whole (a 116 MB spool peaked at 535 MB): a line
    /// longer than any event the API takes is skipped as it is read, never
    /// held, and the lines after it are restored.
    #[test]
    fn a_line_past_the_line_limit_is_skipped_not_held() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.jsonl");
        let mut huge = event(1);
        huge.payload = json!({"n": 1, "pad": "x".repeat(MAX_LINE_BYTES)});
        std::fs::write(
            &path,
            [line(&event(0)), line(&huge), line(&event(2))].concat(),
        )
        .unwrap();
        let q = Queue::new(10);
        restore(&path, |e| q.restore(e, path.clone()));
        let ns: Vec<_> = q.pending().iter().map(|e| e.payload["n"].clone()).collect();
        assert_eq!(ns, [json!(0), json!(2)]);
    }

    /// A 116 MB spool peaked at 535 MB: it was read whole into a string,
    /// parsed whole into a list, then queued. Restoring now holds one line
    /// and the queue: each event is read only once the one before is
    /// queued, and the queue keeps its capacity, whatever the spool's size.
    #[test]
    fn restoring_holds_one_line_and_the_queue_whatever_the_spool_size() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.jsonl");
        let mut out = BufWriter::new(File::create(&path).unwrap());
        for n in 0..20_000 {
            out.write_all(&line(&event(n))).unwrap();
            if n == 10 {
                // A line of three times the limit, without a newline for long.
                out.write_all(&vec![b'x'; 3 * MAX_LINE_BYTES]).unwrap();
                out.write_all(b"\n").unwrap();
            }
        }
        out.flush().unwrap();
        drop(out);
        let q = Queue::new(16);
        let mut lines = Lines::new(BufReader::new(File::open(&path).unwrap()), &path);
        let (mut taken, mut most_held) = (0usize, 0usize);
        let events = std::iter::from_fn(|| {
            assert_eq!(q.len(), taken.min(16), "read ahead of the queue");
            let e = lines.next();
            most_held = most_held.max(lines.held());
            taken += usize::from(e.is_some());
            e
        });
        assert_eq!(q.restore(events, path.clone()), 20_000);
        assert!(
            most_held <= 2 * MAX_LINE_BYTES,
            "held {most_held} bytes for a line"
        );
        let ns: Vec<u64> = q
            .pending()
            .iter()
            .map(|e| e.payload["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, (19_984..20_000).collect::<Vec<_>>());
        assert_eq!(lines.skipped, 1);
    }

    /// A spool that cannot be read was removed at the next stop as if its
    /// events were sent; it is moved aside, and kept.
    #[cfg(unix)]
    #[test]
    fn a_spool_that_cannot_be_read_is_set_aside_not_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.jsonl");
        // A directory: it opens, and reading it fails.
        std::fs::create_dir(&path).unwrap();
        let q = Queue::new(10);
        restore(&path, |e| q.restore(e, path.clone()));
        keep(Some(&path), &q.drain());
        assert!(tmp.path().join("s.jsonl.unreadable").is_dir());
    }

    /// An empty spool holds nothing to send: removed at its restore.
    #[test]
    fn an_empty_spool_is_removed_at_its_restore() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.jsonl");
        std::fs::write(&path, "\n").unwrap();
        let q = Queue::new(10);
        restore(&path, |e| q.restore(e, path.clone()));
        assert!(!path.exists());
    }
}
