//! Order-preserving parallel map over a slice, for the syscall-bound loops
//! (hashing, linking, copying, deleting) that one core leaves idle.

use crate::error::Error;

/// Threads to use: the available cores, at most 8.
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8)
}

/// `items.iter().map(f).collect()`, with contiguous chunks on several threads
/// (neighbouring paths share directories, so threads rarely contend on one).
/// Returns the first error in item order.
pub fn try_map<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, Error> + Sync,
) -> Result<Vec<R>, Error> {
    if items.len() < 64 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads());
    let f = &f;
    let parts: Vec<Result<Vec<R>, Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(f).collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker thread panicked"))
            .collect()
    });
    let mut out = Vec::with_capacity(items.len());
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_reports_the_first_error() {
        let items: Vec<u32> = (0..1000).collect();
        let doubled = try_map(&items, |i| Ok(i * 2)).unwrap();
        assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        let err = try_map(&items, |i| {
            if *i >= 700 {
                Err(Error::Environment(format!("item {i}")))
            } else {
                Ok(*i)
            }
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "item 700");
    }
}
