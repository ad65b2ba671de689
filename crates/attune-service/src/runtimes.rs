//! Which runtimes this container has: the interpreters a worker or the sensor
//! service finds on the PATH it gives actions and sensors, detected once at
//! startup, as upstream's agent does. A static service runs in any image, so
//! the image decides: `worker-shell` (static bash and busybox) runs shell and
//! native actions, `worker-python` (any image with `python3`) Python ones too.
//!
//! The worker sends the names with every claim, so the API hands it only the
//! executions it can run; what still cannot run (an older API) is failed with
//! [`Runtimes::missing`], which names the runtime, what this image lacks and
//! which worker has it.

use std::path::{Path, PathBuf};
use std::process::Command;

use attune_pack::RunnerType;

/// The `PATH` actions and sensors run with.
pub const RUN_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What one container can run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runtimes {
    /// The shell actions run with (`/bin/bash`, else `/bin/sh`), if any.
    pub shell: Option<PathBuf>,
    /// `python3` and its `MAJOR.MINOR` version, if any.
    pub python: Option<(PathBuf, String)>,
    /// `node`, if any.
    pub node: Option<PathBuf>,
}

/// The first executable file called `name` in `path` (a `PATH` value).
fn find_program(path: &str, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `MAJOR.MINOR` of the Python at `python3`, asked of the interpreter itself.
fn python_version(python3: &Path) -> Option<String> {
    let out = Command::new(python3)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .env_clear()
        .env("PATH", RUN_PATH)
        .output()
        .ok()?;
    let v = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && v.split('.').count() == 2).then_some(v)
}

impl Runtimes {
    /// Detects the runtimes on [`RUN_PATH`].
    pub fn detect() -> Runtimes {
        Runtimes::detect_on(RUN_PATH)
    }

    /// Detects the runtimes on `path`.
    pub fn detect_on(path: &str) -> Runtimes {
        let shell = find_program(path, "bash").or_else(|| find_program(path, "sh"));
        let python = find_program(path, "python3").and_then(|p| python_version(&p).map(|v| (p, v)));
        Runtimes {
            shell,
            python,
            node: find_program(path, "node"),
        }
    }

    /// Whether actions of `runner` can run here (native ones always can: they
    /// are static binaries, checked when the volume was assembled).
    pub fn runs(&self, runner: RunnerType) -> bool {
        match runner {
            RunnerType::Native => true,
            RunnerType::Shell => self.shell.is_some(),
            RunnerType::Python => self.python.is_some(),
            RunnerType::Node => self.node.is_some(),
            RunnerType::Other => false,
        }
    }

    /// The runner types this container runs, as the API names them.
    pub fn names(&self) -> Vec<&'static str> {
        [
            RunnerType::Shell,
            RunnerType::Python,
            RunnerType::Node,
            RunnerType::Native,
        ]
        .into_iter()
        .filter(|r| self.runs(*r))
        .map(RunnerType::as_str)
        .collect()
    }

    /// `PYTHONPATH` for a Python action or sensor of the pack at `pack_dir`:
    /// the pack's `lib` (upstream's python runtime prepends `{pack_dir}/lib`),
    /// then the dependencies built for this Python at assembly
    /// (`lib/python<MAJOR.MINOR>/site-packages`, a virtualenv's layout, so
    /// another Python never imports wheels built for this one).
    pub fn python_path(&self, pack_dir: &Path) -> Option<String> {
        let (_, version) = self.python.as_ref()?;
        let lib = pack_dir.join("lib");
        Some(format!(
            "{}:{}",
            lib.display(),
            lib.join(format!("python{version}"))
                .join("site-packages")
                .display()
        ))
    }

    /// The environment a Python action or sensor of the pack at `pack_dir`
    /// adds to its own: [`Runtimes::python_path`], and no bytecode written
    /// (the volume is read-only).
    pub fn python_env(&self, pack_dir: &Path) -> Vec<(&'static str, String)> {
        let mut env = vec![("PYTHONDONTWRITEBYTECODE", "1".to_string())];
        env.extend(self.python_path(pack_dir).map(|p| ("PYTHONPATH", p)));
        env
    }

    /// Why `what` (an action or sensor ref) of `runner` cannot run here, and
    /// where it can: `None` when it can.
    pub fn missing(&self, what: &str, runner: RunnerType) -> Option<String> {
        if self.runs(runner) {
            return None;
        }
        let (program, worker) = match runner {
            RunnerType::Shell => ("bash or sh", "worker-shell"),
            RunnerType::Python => ("python3", "worker-python"),
            RunnerType::Node => ("node", "a worker whose image has node"),
            _ => {
                return Some(format!(
                    "{what} has a runner type no Attune worker of this project runs (shell, python, node, native); change its `runner_type`"
                ));
            }
        };
        Some(format!(
            "{what} needs the {} runtime, and this container has no {program} on {RUN_PATH} (it runs: {}); run it on a worker whose image has {program} (in the Docker stack: {worker})",
            runner.as_str(),
            self.names().join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn program(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn an_image_without_python_runs_shell_and_native_and_names_the_python_worker() {
        let dir = tempfile::tempdir().unwrap();
        program(dir.path(), "sh", "#!/bin/sh\n");
        let r = Runtimes::detect_on(dir.path().to_str().unwrap());
        assert_eq!(r.names(), ["shell", "native"]);
        let why = r.missing("core.http_request", RunnerType::Python).unwrap();
        assert!(why.contains("needs the python runtime"), "{why}");
        assert!(why.contains("no python3"), "{why}");
        assert!(why.contains("worker-python"), "{why}");
        assert!(r.missing("core.echo", RunnerType::Shell).is_none());
    }

    #[test]
    fn python_is_detected_with_the_version_it_reports() {
        let dir = tempfile::tempdir().unwrap();
        program(dir.path(), "python3", "#!/bin/sh\necho 3.11\n");
        let r = Runtimes::detect_on(dir.path().to_str().unwrap());
        assert_eq!(r.python.as_ref().unwrap().1, "3.11");
        assert_eq!(
            r.python_path(Path::new("/opt/attune/packs/p")).unwrap(),
            "/opt/attune/packs/p/lib:/opt/attune/packs/p/lib/python3.11/site-packages"
        );
    }

    #[test]
    fn a_python3_that_does_not_answer_is_no_python() {
        let dir = tempfile::tempdir().unwrap();
        program(dir.path(), "python3", "#!/bin/sh\nexit 1\n");
        std::fs::write(dir.path().join("node"), "not executable").unwrap();
        let r = Runtimes::detect_on(dir.path().to_str().unwrap());
        assert!(r.python.is_none() && r.node.is_none());
    }
}
