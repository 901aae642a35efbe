//! Which language runtimes this host can run, found once at start.
//!
//! Python and Node functions run on interpreters installed on the host.
//! Discovery looks at every `python3.N` and `node` on `PATH` and in pyenv's
//! versions folder, keeps real executables (not shell shims, which would add
//! their own start-up time to every cold start) and, for Python, prefers an
//! interpreter that has boto3, since Lambda's Python runtime offers it to
//! handlers. An operator can map any runtime id to an interpreter.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use nimbus_core::{LambdaError, LambdaResult, RuntimeId};

/// The interpreters found on this host, by Lambda runtime id.
#[derive(Debug, Clone, Default)]
pub struct RuntimeCatalog {
    python: BTreeMap<u32, PathBuf>,
    node: BTreeMap<u32, PathBuf>,
    explicit: BTreeMap<String, PathBuf>,
}

/// How to start an environment's first process.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
}

impl RuntimeCatalog {
    /// Looks for interpreters on this host. `overrides` map runtime ids
    /// (`python3.12`) to interpreter paths and win over what is found.
    pub fn discover(overrides: &[(String, PathBuf)]) -> Self {
        let mut cat = Self::default();
        let mut python_candidates: Vec<PathBuf> = Vec::new();
        let mut node_candidates: Vec<PathBuf> = Vec::new();
        let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        let pyenv_root = std::env::var_os("PYENV_ROOT")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")));
        let mut dirs = path_dirs;
        if let Some(root) = pyenv_root
            && let Ok(rd) = std::fs::read_dir(root.join("versions"))
        {
            let mut versions: Vec<PathBuf> = rd.flatten().map(|e| e.path().join("bin")).collect();
            versions.sort();
            dirs.extend(versions);
        }
        dirs.extend(["/usr/local/bin", "/usr/bin"].map(PathBuf::from));
        for dir in &dirs {
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if python_minor(&name).is_some() {
                    python_candidates.push(entry.path());
                } else if name == "node" || name == "nodejs" {
                    node_candidates.push(entry.path());
                }
            }
        }
        let mut python_scored: BTreeMap<u32, (bool, PathBuf)> = BTreeMap::new();
        for cand in python_candidates {
            let Some(real) = real_executable(&cand) else {
                continue;
            };
            let Some(minor) = real
                .file_name()
                .and_then(|n| python_minor(&n.to_string_lossy()))
            else {
                continue;
            };
            let boto = has_boto3(&real, minor);
            match python_scored.get(&minor) {
                Some((had_boto, _)) if *had_boto || !boto => {}
                _ => {
                    python_scored.insert(minor, (boto, real));
                }
            }
        }
        cat.python = python_scored
            .into_iter()
            .map(|(m, (_, p))| (m, p))
            .collect();
        let mut seen = Vec::new();
        for cand in node_candidates {
            let Some(real) = real_executable(&cand) else {
                continue;
            };
            if seen.contains(&real) {
                continue;
            }
            seen.push(real.clone());
            if let Some(major) = node_major(&real) {
                cat.node.entry(major).or_insert(real);
            }
        }
        for (id, path) in overrides {
            cat.explicit.insert(id.clone(), path.clone());
        }
        cat
    }

    /// The runtime ids this host can run, sorted.
    pub fn available(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .python
            .keys()
            .map(|m| format!("python3.{m}"))
            .chain(self.node.keys().map(|m| format!("nodejs{m}.x")))
            .chain(self.explicit.keys().cloned())
            .chain(["provided", "provided.al2", "provided.al2023"].map(String::from))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Checks that `id` can run here, with the error a client should see.
    pub fn check(&self, id: &RuntimeId) -> LambdaResult<()> {
        self.interpreter(id).map(|_| ())
    }

    /// The interpreter for a managed runtime (`None` for `provided*`).
    fn interpreter(&self, id: &RuntimeId) -> LambdaResult<Option<&Path>> {
        let found = match id {
            RuntimeId::Provided { .. } => return Ok(None),
            _ if self.explicit.contains_key(&id.to_string()) => self.explicit.get(&id.to_string()),
            RuntimeId::Python { minor } => self.python.get(minor),
            RuntimeId::Node { major } => self.node.get(major),
        };
        found.map(|p| Some(p.as_path())).ok_or_else(|| {
            LambdaError::InvalidParameterValue(format!(
                "The runtime parameter of {id} is not available on this nimbus host. \
                 Available runtimes: {}. An operator can map {id} to an interpreter with \
                 `nimbus serve --runtime {id}=/path/to/interpreter`.",
                self.available().join(", ")
            ))
        })
    }

    /// The directories holding the interpreters, put first on a function's
    /// `PATH` as Lambda puts `/var/lang/bin` there.
    pub(crate) fn bin_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for p in self
            .explicit
            .values()
            .chain(self.python.values().rev())
            .chain(self.node.values().rev())
        {
            if let Some(d) = p.parent()
                && !dirs.iter().any(|x| x == d)
            {
                dirs.push(d.to_path_buf());
            }
        }
        dirs
    }

    /// The installation prefixes of the interpreters (`.../bin/python3.11`
    /// -> `...`), which a jail must see read-only.
    pub(crate) fn interpreter_roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = Vec::new();
        for p in self
            .explicit
            .values()
            .chain(self.python.values())
            .chain(self.node.values())
        {
            let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            for candidate in [p, &real] {
                if let Some(root) = candidate.parent().and_then(Path::parent)
                    && !roots.iter().any(|r| r == root)
                {
                    roots.push(root.to_path_buf());
                }
            }
        }
        roots
    }

    /// How to start an environment of this runtime. `runtime_dir` is where
    /// the bootstraps are on the host, `runtime_view` and `code_dir` where
    /// the runtime sees the bootstraps and the code.
    pub(crate) fn launch(
        &self,
        id: &RuntimeId,
        runtime_dir: &Path,
        runtime_view: &Path,
        code_dir: &Path,
    ) -> LambdaResult<Launch> {
        Ok(match (id, self.interpreter(id)?) {
            (RuntimeId::Python { .. }, Some(py)) => {
                // CPython never caches the compiled main script; running the
                // bootstrap precompiled (see `precompile_python`) saves a few
                // milliseconds of every cold start.
                let pyc = format!("python/{}", pyc_name(py));
                let script = if runtime_dir.join(&pyc).is_file() {
                    runtime_view.join(pyc)
                } else {
                    runtime_view.join("python/bootstrap.py")
                };
                Launch {
                    program: py.to_path_buf(),
                    args: vec!["-u".into(), script.into()],
                }
            }
            (RuntimeId::Node { .. }, Some(node)) => Launch {
                program: node.to_path_buf(),
                args: vec![runtime_view.join("nodejs/bootstrap.js").into()],
            },
            _ => Launch {
                program: code_dir.join("bootstrap"),
                args: Vec::new(),
            },
        })
    }
}

/// Python 3.8 is the oldest our bootstrap supports (and older than any
/// runtime Lambda still offers).
const PYTHON_MIN_MINOR: u32 = 8;

/// The file name of the bootstrap compiled for one interpreter: the
/// interpreter's canonical path is hashed in, since bytecode is specific to
/// a Python version.
fn pyc_name(python: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    python.hash(&mut h);
    format!("bootstrap-{:016x}.pyc", h.finish())
}

impl RuntimeCatalog {
    /// Compiles the Python bootstrap once for each interpreter found, into
    /// `<runtime_dir>/python/`. Environments started before it finishes
    /// run the source instead.
    pub(crate) fn precompile_python(&self, runtime_dir: &Path) {
        let src = runtime_dir.join("python/bootstrap.py");
        for py in self.python.values().chain(self.explicit.values()) {
            let dst = runtime_dir.join(format!("python/{}", pyc_name(py)));
            let tmp = dst.with_extension("tmp");
            let code = "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)";
            let ok = std::process::Command::new(py)
                .args(["-c", code])
                .arg(&src)
                .arg(&tmp)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                let _ = std::fs::rename(&tmp, &dst);
            } else {
                let _ = std::fs::remove_file(&tmp);
                let _ = std::fs::remove_file(&dst);
            }
        }
    }
}

fn python_minor(name: &str) -> Option<u32> {
    name.strip_prefix("python3.")?
        .parse()
        .ok()
        .filter(|m| *m >= PYTHON_MIN_MINOR)
}

/// The canonical path of `p` if it is an ELF executable (not a script shim).
fn real_executable(p: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let real = std::fs::canonicalize(p).ok()?;
    let mut magic = [0u8; 4];
    std::fs::File::open(&real)
        .ok()?
        .read_exact(&mut magic)
        .ok()?;
    (magic == *b"\x7fELF").then_some(real)
}

fn has_boto3(python: &Path, minor: u32) -> bool {
    let Some(prefix) = python.parent().and_then(Path::parent) else {
        return false;
    };
    [
        prefix.join(format!("lib/python3.{minor}/site-packages/boto3")),
        prefix.join(format!("local/lib/python3.{minor}/dist-packages/boto3")),
        prefix.join("lib/python3/dist-packages/boto3"),
    ]
    .iter()
    .any(|p| p.is_dir())
}

fn node_major(node: &Path) -> Option<u32> {
    let out = std::process::Command::new(node)
        .arg("--version")
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout);
    v.trim().strip_prefix('v')?.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_runtime_names_what_is_available() {
        let cat = RuntimeCatalog::default();
        let err = cat
            .check(&RuntimeId::parse("python3.99").unwrap())
            .unwrap_err();
        assert_eq!(err.code(), "InvalidParameterValueException");
        assert!(err.to_string().contains("provided.al2023"), "{err}");
        assert!(
            cat.check(&RuntimeId::parse("provided.al2023").unwrap())
                .is_ok()
        );
    }

    #[test]
    fn overrides_map_ids_to_interpreters() {
        let cat = RuntimeCatalog::discover(&[("python3.99".into(), "/bin/true".into())]);
        assert!(cat.available().contains(&"python3.99".to_string()));
        let launch = cat
            .launch(
                &RuntimeId::parse("python3.99").unwrap(),
                Path::new("/rt"),
                Path::new("/var/runtime"),
                Path::new("/code"),
            )
            .unwrap();
        assert_eq!(launch.program, Path::new("/bin/true"));
        // The bootstrap is named as the runtime sees it (inside a jail).
        assert_eq!(
            launch.args.last().map(PathBuf::from),
            Some(PathBuf::from("/var/runtime/python/bootstrap.py"))
        );
    }
}
