//! A publish killed at any moment leaves `..data` on a complete generation
//! that `verify` accepts, and the next run completes the job.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::util::{Fixture, SENSOR};

/// Publishes v1 and v2, then stages the v3 change (which also drops v1 by --keep 2).
fn staged() -> (Fixture, Vec<String>) {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let g1 = f.assemble_ok()["generation"].as_str().unwrap().to_string();
    f.write("packs/core/actions/echo.sh", "#!/bin/sh\necho v2\n");
    let g2 = f.assemble_ok()["generation"].as_str().unwrap().to_string();
    f.fresh_sensor("v3");
    f.write("packs/core/actions/new.sh", "#!/bin/sh\n");
    std::fs::remove_file(f.packs().join("core/actions/sleep.sh")).unwrap();
    std::fs::remove_file(f.packs().join("core/actions/sleep.yaml")).unwrap();
    (f, vec![g1, g2])
}

#[test]
fn killed_after_every_filesystem_step_the_volume_stays_valid() {
    // How many steps does the v3 publish take?
    let (probe, _) = staged();
    let steps = probe.assemble_ok()["steps"].as_u64().unwrap();
    assert!(steps > 15, "suspiciously few steps: {steps}");
    let g3 = probe.current_generation().unwrap();

    for n in 1..=steps {
        let (f, before) = staged();
        f.assemble_killed_at(n);
        let current = f.current_generation().unwrap();
        assert!(
            current == before[1] || current == g3,
            "step {n}: ..data points at {current}, neither the old nor the new generation"
        );
        f.assert_verifies();
        // The next run finishes the job and leaves nothing behind.
        let r = f.assemble_ok();
        assert_eq!(r["generation"], g3.as_str(), "step {n}");
        let (code, out, err) = f.verify();
        assert_eq!(code, 0, "step {n}: {out}{err}");
        assert!(out.contains("0 errors, 0 warnings"), "step {n}: {out}{err}");
    }
}

#[test]
fn killed_during_the_first_publish_the_next_run_succeeds() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let steps = {
        let probe = Fixture::new();
        probe.fresh_sensor("v1");
        probe.assemble_ok()["steps"].as_u64().unwrap()
    };
    for n in 1..=steps {
        f.remove_volume();
        f.assemble_killed_at(n);
        f.assemble_ok();
        f.assert_verifies();
    }
}

/// Real SIGKILLs at random moments of a larger publish.
#[test]
fn sigkill_at_random_moments() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    for i in 0..2000 {
        f.write(
            &format!("packs/bulk/files/d{}/f{i}.txt", i % 40),
            format!("file {i}\n").repeat(20),
        );
    }
    f.write(
        "packs/bulk/pack.yaml",
        "ref: bulk\nlabel: Bulk\nversion: 1.0.0\n",
    );
    f.assemble_ok();
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    for round in 0..8 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(5 + (seed >> 33) % 120);
        f.write(&format!("packs/bulk/files/d0/changed{round}.txt"), "x");
        f.fresh_sensor(&format!("v{round}"));
        let mut child = f.spawn_assemble(&[]);
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        let (code, out, err) = f.verify();
        assert_eq!(
            code, 0,
            "round {round} (killed after {delay:?}, seed {seed}): {out}{err}"
        );
    }
    f.assemble_ok();
    let published = std::fs::read(f.published(SENSOR)).unwrap();
    assert!(published.ends_with(b"v7"));
    f.assert_verifies();
}
