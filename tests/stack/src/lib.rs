//! The end-to-end harness: builds the binaries (once per run, into `target/e2e`,
//! so a nested cargo never waits on the lock of the `cargo test` that runs it),
//! assembles a volume, and starts api, worker and sensor on 127.0.0.1 as real
//! processes. Used by `tests/` and by `benches/load.rs`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use attune_service::{Client, env};
use serde_json::Value;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn host_target() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "aarch64-unknown-linux-gnu"
    } else {
        "x86_64-unknown-linux-gnu"
    }
}

pub fn arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

/// Paths of the built binaries.
#[derive(Debug)]
pub struct Bins {
    pub dir: PathBuf,
    pub static_sensor: PathBuf,
}

impl Bins {
    pub fn get(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Builds the workspace's binaries and the static timer sensor (debug), once.
pub fn bins() -> &'static Bins {
    static DEBUG: OnceLock<Bins> = OnceLock::new();
    DEBUG.get_or_init(|| build(false))
}

/// The same, optimised, for benchmarks.
pub fn release_bins() -> &'static Bins {
    static RELEASE: OnceLock<Bins> = OnceLock::new();
    RELEASE.get_or_init(|| build(true))
}

fn build(release: bool) -> Bins {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = repo().join("target/e2e");
    let profile = if release { "release" } else { "debug" };
    let run = |args: &[&str], static_build: bool| {
        let mut c = Command::new(&cargo);
        c.current_dir(repo())
            .args(args)
            .arg("--target-dir")
            .arg(&target_dir);
        if release {
            c.arg("--release");
        }
        if static_build {
            c.env("RUSTFLAGS", "-C target-feature=+crt-static");
        } else {
            c.env_remove("RUSTFLAGS");
        }
        let status = c.status().expect("cargo runs");
        assert!(status.success(), "cargo {args:?} failed");
    };
    // Straight to stderr (libtest captures only the print macros): without a
    // word and cargo's progress, `cargo test` looks stuck for minutes here.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "stack tests: building the binaries into {} (a first build takes a few minutes)\n",
            target_dir.display()
        )
        .as_bytes(),
    );
    run(&["build", "--workspace", "--bins"], false);
    run(
        &[
            "build",
            "-p",
            "core-timer-sensor",
            "--target",
            host_target(),
        ],
        true,
    );
    Bins {
        dir: target_dir.join(profile),
        static_sensor: target_dir
            .join(host_target())
            .join(profile)
            .join("attune-core-timer-sensor"),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    if path.extension().is_some_and(|e| e == "sh") {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

pub fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A running stack in a temporary directory.
#[derive(Debug)]
pub struct Stack {
    pub tmp: tempfile::TempDir,
    pub api: Client,
    pub url: String,
    pub token: String,
    children: Vec<(String, Child)>,
}

impl Stack {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// `packs-assemble assemble` of `src` (a packs directory) with the static sensor.
    pub fn assemble(tmp: &Path, src: &Path) {
        Stack::assemble_with(bins(), tmp, src);
    }

    fn assemble_with(b: &Bins, tmp: &Path, src: &Path) {
        let bins_tree = tmp.join("bins/core/sensors");
        std::fs::create_dir_all(&bins_tree).unwrap();
        std::fs::copy(&b.static_sensor, bins_tree.join("attune-core-timer-sensor")).unwrap();
        let out = Command::new(b.get("packs-assemble"))
            .args(["-q", "assemble", "--no-sync", "--arch", arch(), "--packs"])
            .arg(src)
            .arg("--binaries")
            .arg(tmp.join("bins"))
            .arg("--out")
            .arg(tmp.join("vol"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "assemble failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Assembles `packs/` (copied, so tests may edit it), writes `dev` files
    /// into packs.dev, and starts api, worker and sensor.
    pub fn start(dev: &[(&str, &str)]) -> Stack {
        Stack::start_with(bins(), dev, 2)
    }

    /// [`Stack::start`] with the given binaries and `worker_concurrency` executions at once.
    pub fn start_with(b: &Bins, dev: &[(&str, &str)], worker_concurrency: usize) -> Stack {
        let tmp = tempfile::tempdir().unwrap();
        copy_tree(&repo().join("packs"), &tmp.path().join("src"));
        let _ = std::fs::remove_file(tmp.path().join("src/core/sensors/attune-core-timer-sensor"));
        Stack::assemble_with(b, tmp.path(), &tmp.path().join("src"));
        std::fs::create_dir_all(tmp.path().join("dev")).unwrap();
        for (rel, text) in dev {
            write(&tmp.path().join("dev").join(rel), text);
        }
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let token = format!("t-{}-{port}", std::process::id());
        let logs = tmp.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let spawn = |name: &str, args: &[&str]| -> (String, Child) {
            let log = std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
            let child = Command::new(b.get(name))
                .args(args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env(env::API_URL, &url)
                .env(env::API_TOKEN, &token)
                .env(env::PACKS_DIR, tmp.path().join("vol"))
                .env(env::PACKS_DEV_DIR, tmp.path().join("dev"))
                .env(env::LOGS_DIR, &logs)
                .env(env::LOG_LEVEL, "debug")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            (name.to_string(), child)
        };
        let mut children = vec![spawn(
            "attune-api",
            &[
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--db",
                ":memory:",
                "--watch-seconds",
                "0.3",
            ],
        )];
        let api = Client::with_timeout(&url, &token, Duration::from_secs(60));
        let up = wait_for(Duration::from_secs(20), || {
            api.get::<Value>("/health").is_ok()
        });
        assert!(up, "api did not become healthy");
        children.push(spawn(
            "attune-worker",
            &["--concurrency", &worker_concurrency.to_string()],
        ));
        children.push(spawn("attune-sensor", &["--poll-seconds", "0.5"]));
        Stack {
            tmp,
            api,
            url,
            token,
            children,
        }
    }

    /// Executions of an action (newest first).
    pub fn executions(&self, action_ref: &str) -> Vec<Value> {
        let v: Value = self
            .api
            .get(&format!(
                "/api/v1/executions?action_ref={action_ref}&page_size=100"
            ))
            .unwrap();
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// Waits for an execution to end and returns it.
    pub fn finished(&self, id: i64) -> Value {
        let mut last = Value::Null;
        let done = wait_for(Duration::from_secs(20), || {
            let v: Value = self.api.get(&format!("/api/v1/executions/{id}")).unwrap();
            last = v["data"].clone();
            !matches!(last["status"].as_str(), Some("requested" | "running"))
        });
        assert!(done, "execution {id} did not finish: {last}");
        last
    }

    /// The logs of every process, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["attune-api", "attune-worker", "attune-sensor"] {
            let text =
                std::fs::read_to_string(self.path(&format!("logs/{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            out.push_str(&format!(
                "--- {name} (last lines)\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        out
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (_, c) in self.children.iter_mut().rev() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for (name, c) in self.children.iter_mut() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && !matches!(c.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !matches!(c.try_wait(), Ok(Some(_))) {
                eprintln!("{name} ignored SIGTERM for 5 s; killing it");
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Waits until `f` holds or `limit` passes; returns whether it held.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
