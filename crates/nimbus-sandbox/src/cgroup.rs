//! One control group per execution environment: memory, CPU and process
//! limits, peak memory, OOM kills, CPU time, freezing and a kill that
//! leaves nothing behind.
//!
//! [`CgroupRoot::detect`] works out the host's layout once, at startup:
//!
//! * **cgroup v2** (unified): `/sys/fs/cgroup` is a `cgroup2` mount (or it
//!   holds `cgroup.controllers`). Our parent is `<server's cgroup>/<prefix>`,
//!   with `+memory +pids +cpu` enabled in the `cgroup.subtree_control` of
//!   both levels. Because v2 forbids enabling controllers for the children
//!   of a cgroup that holds processes, that only works when the server's
//!   cgroup is already delegated with them enabled; otherwise we use
//!   `<mount root>/<prefix>`, and as a last resort move the processes of the
//!   server's cgroup into a sibling leaf `<prefix>-server` (what container
//!   init systems do) and try again.
//! * **cgroup v1** (legacy, or the "hybrid" layout where `/sys/fs/cgroup` is
//!   a tmpfs holding one mount per hierarchy): every hierarchy we use
//!   (`memory` required; `pids`, `cpu`, `cpuacct`, `freezer` when mounted,
//!   co-mounted ones such as `cpu,cpuacct` handled) gets a `<prefix>`
//!   directory under the server's own cgroup in that hierarchy, or under the
//!   hierarchy's root when the former is not writable. Mount points come
//!   from `/proc/self/mountinfo`, our position from `/proc/self/cgroup`.
//!
//! [`CgroupRoot::create`] then makes one leaf per sandbox, `<parent>/<name>`
//! in every hierarchy, with its [`Limits`] applied; dropping the [`Cgroup`]
//! kills whatever still runs in it and removes the directories.
//!
//! Everything here is plain file I/O on cgroupfs and needs root (or a
//! delegated subtree). None of it needs `unsafe`.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Where cgroup filesystems are conventionally mounted.
const CGROUP_MOUNT: &str = "/sys/fs/cgroup";
/// The CFS period we use for CPU quotas, in microseconds (the kernel default).
const CFS_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota we set, in microseconds (the kernel accepts 1000).
const MIN_CFS_QUOTA_US: u64 = 1_000;
/// How long [`Cgroup::freeze`] waits for every task to stop.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`Cgroup::kill_all`] keeps signalling before giving up.
const KILL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long dropping a [`Cgroup`] retries `rmdir` while tasks finish exiting.
const RMDIR_TIMEOUT: Duration = Duration::from_secs(2);

/// Resource limits of one sandbox. Zero in any field means "no limit".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory (RAM; swap is not allowed on top of it), in bytes.
    pub memory_bytes: u64,
    /// CPU in thousandths of a CPU: 1000 is one vCPU, 500 half of one. It
    /// becomes a CFS bandwidth quota and a proportional share/weight.
    pub cpu_millis: u32,
    /// Maximum number of tasks (processes and threads).
    pub pids: u32,
}

/// Lambda's CPU allocation for a memory size: CPU is proportional to memory,
/// with 1,769 MB getting one full vCPU. Never less than 64 millis (so a
/// 128 MB function gets 72, not a starved sliver).
pub fn cpu_millis_for_memory(memory_mb: u32) -> u32 {
    let millis = u64::from(memory_mb) * 1000 / 1769;
    u32::try_from(millis).unwrap_or(u32::MAX).max(64)
}

/// Which cgroup interface the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy per-controller hierarchies (including the "hybrid" layout).
    V1,
    /// The unified hierarchy.
    V2,
}

/// The directory that carries each controller's files: one per hierarchy
/// on v1 (several may coincide when controllers are co-mounted), the same
/// directory for all of them on v2. `None`: the controller is unavailable
/// and its limits and readings are skipped.
#[derive(Debug, Clone)]
struct Dirs {
    memory: PathBuf,
    pids: Option<PathBuf>,
    cpu: Option<PathBuf>,
    /// v1 `cpuacct.usage`; v2 `cpu.stat` (always present).
    cpuacct: Option<PathBuf>,
    /// v1 `freezer.state`; v2 `cgroup.freeze`.
    freezer: Option<PathBuf>,
}

impl Dirs {
    /// Every distinct directory, memory's first.
    fn unique(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = vec![&self.memory];
        for dir in [&self.pids, &self.cpu, &self.cpuacct, &self.freezer]
            .into_iter()
            .flatten()
        {
            if !out.contains(&dir.as_path()) {
                out.push(dir);
            }
        }
        out
    }

    fn join(&self, name: &str) -> Dirs {
        let j = |d: &Option<PathBuf>| d.as_ref().map(|d| d.join(name));
        Dirs {
            memory: self.memory.join(name),
            pids: j(&self.pids),
            cpu: j(&self.cpu),
            cpuacct: j(&self.cpuacct),
            freezer: j(&self.freezer),
        }
    }
}

/// The host's cgroup layout and our parent directories (`…/<prefix>`), under
/// which every sandbox gets its leaf.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    version: CgroupVersion,
    dirs: Dirs,
}

impl CgroupRoot {
    /// Detects the layout and creates (or reuses) the `<prefix>` parent
    /// directories. `prefix` must be one path component and should be unique
    /// to this server instance: [`cleanup_stale`](Self::cleanup_stale) treats
    /// everything under it as ours.
    pub fn detect(prefix: &str) -> io::Result<CgroupRoot> {
        check_name(prefix)?;
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        let mounts = parse_mountinfo(&mountinfo);
        let memberships = parse_proc_cgroup(&fs::read_to_string("/proc/self/cgroup")?);

        if unified_at(Path::new(CGROUP_MOUNT)) {
            let root = mounts
                .iter()
                .rev()
                .find(|m| m.fstype == "cgroup2" && m.mount_point == Path::new(CGROUP_MOUNT))
                .map_or("/", |m| m.root.as_str());
            return Self::detect_v2(Path::new(CGROUP_MOUNT), root, &memberships, prefix);
        }
        if v1_mount(&mounts, "memory").is_some() {
            return Self::detect_v1(&mounts, &memberships, prefix);
        }
        // No v1 memory hierarchy: a v2 mount elsewhere that has the memory
        // controller (hybrid layouts that moved controllers to v2).
        for m in mounts.iter().filter(|m| m.fstype == "cgroup2") {
            if read_words(&m.mount_point.join("cgroup.controllers")).contains("memory") {
                return Self::detect_v2(&m.mount_point, &m.root, &memberships, prefix);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no cgroup memory controller: neither a cgroup v2 hierarchy with \
             `memory` nor a cgroup v1 `memory` hierarchy is mounted",
        ))
    }

    fn detect_v1(
        mounts: &[Mount],
        memberships: &[Membership],
        prefix: &str,
    ) -> io::Result<CgroupRoot> {
        // Parents already chosen, by mount point (co-mounted controllers).
        let mut chosen: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut parent_for = |controller: &str| -> io::Result<Option<PathBuf>> {
            let Some(mount) = v1_mount(mounts, controller) else {
                return Ok(None);
            };
            if let Some((_, parent)) = chosen.iter().find(|(mp, _)| *mp == mount.mount_point) {
                return Ok(Some(parent.clone()));
            }
            let ours = memberships
                .iter()
                .find(|m| m.controllers.iter().any(|c| c == controller))
                .map(|m| resolve(mount, &m.path))
                .unwrap_or_else(|| mount.mount_point.clone());
            let mut last_err = None;
            for candidate in dedup([ours.join(prefix), mount.mount_point.join(prefix)]) {
                match mkdir_v1(&candidate) {
                    Ok(()) => {
                        chosen.push((mount.mount_point.clone(), candidate.clone()));
                        return Ok(Some(candidate));
                    }
                    Err(e) => {
                        tracing::debug!("cgroup parent {} not usable: {e}", candidate.display());
                        last_err = Some(e);
                    }
                }
            }
            Err(last_err.unwrap_or_else(|| io::Error::other("no candidate")))
        };
        let memory = parent_for("memory")?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "no cgroup v1 memory hierarchy")
        })?;
        let mut optional = |controller: &str| match parent_for(controller) {
            Ok(Some(dir)) => Some(dir),
            Ok(None) => {
                tracing::warn!(
                    "cgroup v1 `{controller}` hierarchy not mounted; its limits are off"
                );
                None
            }
            Err(e) => {
                tracing::warn!(
                    "cgroup v1 `{controller}` hierarchy not usable ({e}); its limits are off"
                );
                None
            }
        };
        let dirs = Dirs {
            memory,
            pids: optional("pids"),
            cpu: optional("cpu"),
            cpuacct: optional("cpuacct"),
            freezer: optional("freezer"),
        };
        tracing::info!(?dirs, "cgroup v1 parents ready");
        Ok(CgroupRoot {
            version: CgroupVersion::V1,
            dirs,
        })
    }

    fn detect_v2(
        mount_point: &Path,
        mount_root: &str,
        memberships: &[Membership],
        prefix: &str,
    ) -> io::Result<CgroupRoot> {
        let fake_mount = Mount {
            root: mount_root.to_string(),
            mount_point: mount_point.to_path_buf(),
            fstype: "cgroup2".into(),
            super_options: Vec::new(),
        };
        let ours = memberships
            .iter()
            .find(|m| m.hierarchy == "0" && m.controllers.is_empty())
            .map(|m| resolve(&fake_mount, &m.path))
            .unwrap_or_else(|| mount_point.to_path_buf());

        let mut errors = Vec::new();
        let mut busy = false;
        for base in dedup([ours.clone(), mount_point.to_path_buf()]) {
            match v2_parent(&base, prefix) {
                Ok(root) => return Ok(root),
                Err(e) => {
                    busy |= base == ours && e.kind() == io::ErrorKind::ResourceBusy;
                    errors.push(format!("{}: {e}", base.display()));
                }
            }
        }
        if busy {
            // Our cgroup holds processes, so v2 will not enable controllers
            // for its children: move them into a leaf of their own.
            let leaf = ours.join(format!("{prefix}-server"));
            tracing::warn!(
                "moving the processes of {} into {} to delegate cgroup controllers",
                ours.display(),
                leaf.display()
            );
            mkdir_ok_if_exists(&leaf)?;
            for pid in read_pids(&ours.join("cgroup.procs")) {
                if let Err(e) = write_file(&leaf.join("cgroup.procs"), &pid.to_string()) {
                    tracing::debug!("could not move {pid}: {e}");
                }
            }
            match v2_parent(&ours, prefix) {
                Ok(root) => return Ok(root),
                Err(e) => errors.push(format!("{} after moving: {e}", ours.display())),
            }
        }
        Err(io::Error::other(format!(
            "no usable cgroup v2 parent: {}",
            errors.join("; ")
        )))
    }

    /// The interface in use.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Creates the leaf cgroup `name` (one path component, not in use) and
    /// applies `limits`. On error nothing is left behind.
    pub fn create(&self, name: &str, limits: &Limits) -> io::Result<Cgroup> {
        check_name(name)?;
        let dirs = self.dirs.join(name);
        let mut cgroup = Cgroup {
            version: self.version,
            dirs,
            owned: Vec::new(),
            peak: None,
        };
        for dir in cgroup.dirs.unique() {
            let dir = dir.to_path_buf();
            // A leaf must be new: an existing one belongs to someone else
            // (or to a previous run; see `cleanup_stale`).
            fs::create_dir(&dir).map_err(|e| with_path(e, &dir))?;
            cgroup.owned.push(dir.clone());
            if self.version == CgroupVersion::V1 {
                fill_cpuset(&dir)?;
            }
        }
        cgroup.apply(limits)?;
        Ok(cgroup)
    }

    /// Ends every sandbox under this root and removes the root's own
    /// directories (server shutdown).
    pub fn remove(&self) -> io::Result<()> {
        self.cleanup_stale()?;
        for dir in self.dirs.unique() {
            match fs::remove_dir(dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(with_path(e, dir)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes the leaves a previous run of the server left behind (after a
    /// crash, say): kills their processes, then removes their directories.
    /// Call it once at startup, before creating any sandbox.
    pub fn cleanup_stale(&self) -> io::Result<()> {
        let mut names = BTreeSet::new();
        for parent in self.dirs.unique() {
            for entry in fs::read_dir(parent)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    names.insert(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        for name in names {
            let dirs = self.dirs.join(&name);
            let owned = dirs
                .unique()
                .into_iter()
                .filter(|d| d.is_dir())
                .map(Path::to_path_buf)
                .collect();
            tracing::info!("removing stale cgroup {name}");
            // Dropping kills and removes.
            drop(Cgroup {
                version: self.version,
                dirs,
                owned,
                peak: None,
            });
        }
        Ok(())
    }
}

/// Tries `base/<prefix>` as the v2 parent: enables our controllers for
/// `base`'s children and for the parent's.
fn v2_parent(base: &Path, prefix: &str) -> io::Result<CgroupRoot> {
    let available = read_words(&base.join("cgroup.controllers"));
    if !available.contains("memory") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the memory controller is not available here",
        ));
    }
    let wanted: Vec<&str> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| available.contains(*c))
        .collect();
    enable_controllers(base, &wanted)?;
    let parent = base.join(prefix);
    mkdir_ok_if_exists(&parent)?;
    enable_controllers(&parent, &wanted)?;
    let enabled = read_words(&parent.join("cgroup.subtree_control"));
    let has = |c: &str| enabled.contains(c).then(|| parent.clone());
    let dirs = Dirs {
        memory: parent.clone(),
        pids: has("pids"),
        cpu: has("cpu"),
        cpuacct: Some(parent.clone()),
        freezer: parent
            .join("cgroup.freeze")
            .exists()
            .then(|| parent.clone()),
    };
    for missing in ["pids", "cpu"]
        .into_iter()
        .filter(|c| !enabled.contains(*c))
    {
        tracing::warn!("cgroup v2 `{missing}` controller not available; its limits are off");
    }
    tracing::info!(?dirs, "cgroup v2 parent ready");
    Ok(CgroupRoot {
        version: CgroupVersion::V2,
        dirs,
    })
}

/// Adds each of `controllers` missing from `dir/cgroup.subtree_control`.
fn enable_controllers(dir: &Path, controllers: &[&str]) -> io::Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = read_words(&file);
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !enabled.contains(**c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write_file(&file, &missing.join(" "))
}

/// One sandbox's cgroup (a leaf directory in each hierarchy). Dropping it
/// kills everything in it and removes the directories; that blocks for as
/// long as the processes take to exit (normally a few milliseconds, at most
/// a few seconds), so async callers may want to drop it on a blocking thread.
#[derive(Debug)]
pub struct Cgroup {
    version: CgroupVersion,
    dirs: Dirs,
    /// The directories we created and remove on drop.
    owned: Vec<PathBuf>,
    /// v2 `memory.peak`, kept open: since Linux 6.12 a write resets the
    /// peak for reads through the same descriptor only.
    peak: Option<PeakFile>,
}

#[derive(Debug)]
struct PeakFile {
    file: File,
    resettable: bool,
}

impl Cgroup {
    /// The leaf's memory directory (the only directory on v2).
    pub fn path(&self) -> &Path {
        &self.dirs.memory
    }

    fn apply(&mut self, limits: &Limits) -> io::Result<()> {
        self.set_memory_limit(limits.memory_bytes)?;
        match self.version {
            CgroupVersion::V1 => {}
            CgroupVersion::V2 => {
                let dir = &self.dirs.memory;
                // RAM only, like Lambda: no swap on top of memory.max.
                write_if_present(&dir.join("memory.swap.max"), "0")?;
                // An OOM kill takes the whole sandbox, not just its largest
                // process: a half-killed environment is of no use.
                write_if_present(&dir.join("memory.oom.group"), "1")?;
                let peak = dir.join("memory.peak");
                self.peak = match OpenOptions::new().read(true).write(true).open(&peak) {
                    Ok(file) => Some(PeakFile {
                        file,
                        resettable: true,
                    }),
                    Err(_) => File::open(&peak).ok().map(|file| PeakFile {
                        file,
                        resettable: false,
                    }),
                };
            }
        }
        self.set_cpu_limit(limits.cpu_millis)?;
        if let Some(pids) = &self.dirs.pids {
            write_file(&pids.join("pids.max"), &pids_max(limits.pids))?;
        }
        Ok(())
    }

    /// Sets the CPU the cgroup may use, in thousandths of a CPU (0: no
    /// limit): a CFS bandwidth quota plus a proportional share/weight. Also
    /// usable on a live cgroup (nimbus lifts the limit during init, as
    /// Lambda boosts CPU while a function initialises).
    pub fn set_cpu_limit(&self, millis: u32) -> io::Result<()> {
        let Some(cpu) = &self.dirs.cpu else {
            return Ok(());
        };
        match self.version {
            CgroupVersion::V1 => {
                write_file(&cpu.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                write_file(
                    &cpu.join("cpu.cfs_quota_us"),
                    &cfs_quota_us(millis).map_or("-1".into(), |q| q.to_string()),
                )?;
                write_file(&cpu.join("cpu.shares"), &v1_cpu_shares(millis).to_string())
            }
            CgroupVersion::V2 => {
                write_file(&cpu.join("cpu.max"), &v2_cpu_max(millis))?;
                write_file(&cpu.join("cpu.weight"), &v2_cpu_weight(millis).to_string())
            }
        }
    }

    /// The `cgroup.procs` files of every hierarchy. A process joins the
    /// sandbox by writing its pid, or `0` for itself, to each. A child can
    /// enroll itself before it execs (open these in the parent, write `0`
    /// from `pre_exec`), so that nothing it allocates is charged elsewhere.
    pub fn procs_paths(&self) -> Vec<PathBuf> {
        self.dirs
            .unique()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Moves process `pid` (all its threads) into this cgroup in every
    /// hierarchy. On v1 memory already charged stays with the old cgroup.
    pub fn add_pid(&self, pid: u32) -> io::Result<()> {
        for procs in self.procs_paths() {
            write_file(&procs, &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in the cgroup (the union over the hierarchies).
    pub fn pids(&self) -> Vec<u32> {
        let mut all = BTreeSet::new();
        for procs in self.procs_paths() {
            all.extend(read_pids(&procs));
        }
        all.into_iter().collect()
    }

    /// Sets the memory limit (0: none); works on a live cgroup too (lowering
    /// it below current usage makes the kernel reclaim, and fails with
    /// `EBUSY` if it cannot). On v1 the memory+swap limit follows, so swap
    /// cannot stretch the limit; on v2 `memory.swap.max` is 0 from creation.
    pub fn set_memory_limit(&self, bytes: u64) -> io::Result<()> {
        let dir = &self.dirs.memory;
        match self.version {
            CgroupVersion::V1 => {
                let value = v1_memory_limit(bytes);
                let mem = dir.join("memory.limit_in_bytes");
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                if !memsw.exists() {
                    // No swap accounting: keep this cgroup out of swap.
                    let _ = write_file(&dir.join("memory.swappiness"), "0");
                    return write_file(&mem, &value);
                }
                // The kernel keeps memsw >= memory: lowering goes memory
                // first, raising memsw first.
                match write_file(&mem, &value) {
                    Ok(()) => write_file(&memsw, &value),
                    Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                        write_file(&memsw, &value)?;
                        write_file(&mem, &value)
                    }
                    Err(e) => Err(e),
                }
            }
            CgroupVersion::V2 => write_file(&dir.join("memory.max"), &v2_max(bytes)),
        }
    }

    /// Current memory usage, in bytes (page cache included).
    pub fn memory_bytes(&self) -> Option<u64> {
        let file = match self.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        };
        read_u64(&self.dirs.memory.join(file))
    }

    /// The highest memory usage since creation or the last
    /// [`reset_peak`](Self::reset_peak), in bytes. v1:
    /// `memory.max_usage_in_bytes`; v2: `memory.peak` (Linux 5.19+), or
    /// before that only the *current* usage (`memory.current`).
    pub fn peak_memory_bytes(&self) -> Option<u64> {
        match self.version {
            CgroupVersion::V1 => read_u64(&self.dirs.memory.join("memory.max_usage_in_bytes")),
            CgroupVersion::V2 => match &self.peak {
                Some(peak) => {
                    let mut buf = [0u8; 32];
                    let n = peak.file.read_at(&mut buf, 0).ok()?;
                    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
                }
                None => read_u64(&self.dirs.memory.join("memory.current")),
            },
        }
    }

    /// Starts a new peak measurement (between invocations of a warm
    /// environment), from the current usage. v1: writes 0 to
    /// `memory.max_usage_in_bytes`. v2 on Linux 6.12+: writes to our open
    /// `memory.peak` descriptor, which resets the peak as this `Cgroup` reads
    /// it. v2 before 6.12: not possible, a no-op (the peak stays the
    /// lifetime peak of the cgroup).
    pub fn reset_peak(&self) {
        let result = match self.version {
            CgroupVersion::V1 => {
                let dir = &self.dirs.memory;
                let _ = write_if_present(&dir.join("memory.memsw.max_usage_in_bytes"), "0");
                write_file(&dir.join("memory.max_usage_in_bytes"), "0")
            }
            CgroupVersion::V2 => match &self.peak {
                Some(peak) if peak.resettable => (&peak.file).write_all(b"reset"),
                _ => Ok(()),
            },
        };
        if let Err(e) = result {
            tracing::warn!(cgroup = %self.path().display(), "resetting peak memory: {e}");
        }
    }

    /// How many processes the kernel's OOM killer has killed in this cgroup
    /// (v1 `memory.oom_control`, Linux 4.13+; v2 `memory.events`). 0 when
    /// the kernel does not count them.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = match self.version {
            CgroupVersion::V1 => ("memory.oom_control", "oom_kill"),
            CgroupVersion::V2 => ("memory.events", "oom_kill"),
        };
        fs::read_to_string(self.dirs.memory.join(file))
            .ok()
            .and_then(|text| keyed_value(&text, key))
            .unwrap_or(0)
    }

    /// CPU time consumed by the cgroup's tasks so far, in nanoseconds (v1
    /// `cpuacct.usage`; v2 `cpu.stat` `usage_usec`).
    pub fn cpu_usage_ns(&self) -> Option<u64> {
        let dir = self.dirs.cpuacct.as_ref()?;
        match self.version {
            CgroupVersion::V1 => read_u64(&dir.join("cpuacct.usage")),
            CgroupVersion::V2 => {
                let text = fs::read_to_string(dir.join("cpu.stat")).ok()?;
                keyed_value(&text, "usage_usec").map(|us| us.saturating_mul(1000))
            }
        }
    }

    /// Stops every task in the cgroup and waits (up to 2 s) until all are
    /// stopped; on timeout it thaws again and fails with `TimedOut`.
    /// Frozen tasks use no CPU but keep their memory.
    pub fn freeze(&self) -> io::Result<()> {
        let dir = self.freezer_dir()?;
        match self.version {
            CgroupVersion::V1 => write_file(&dir.join("freezer.state"), "FROZEN")?,
            CgroupVersion::V2 => write_file(&dir.join("cgroup.freeze"), "1")?,
        }
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        let mut pause = Duration::from_micros(100);
        loop {
            let frozen = match self.version {
                CgroupVersion::V1 => {
                    fs::read_to_string(dir.join("freezer.state"))?.trim() == "FROZEN"
                }
                CgroupVersion::V2 => {
                    keyed_value(&fs::read_to_string(dir.join("cgroup.events"))?, "frozen")
                        == Some(1)
                }
            };
            if frozen {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.thaw();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("cgroup {} did not freeze", self.path().display()),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// Lets the tasks of a frozen cgroup run again.
    pub fn thaw(&self) -> io::Result<()> {
        let dir = self.freezer_dir()?;
        match self.version {
            CgroupVersion::V1 => write_file(&dir.join("freezer.state"), "THAWED"),
            CgroupVersion::V2 => write_file(&dir.join("cgroup.freeze"), "0"),
        }
    }

    fn freezer_dir(&self) -> io::Result<&Path> {
        self.dirs.freezer.as_deref().ok_or_else(|| {
            io::Error::new(io::ErrorKind::Unsupported, "no cgroup freezer on this host")
        })
    }

    /// SIGKILLs every task in the cgroup, frozen or not, and waits (up to
    /// 2 s) until the cgroup is empty. v2 with `cgroup.kill` (Linux 5.14+)
    /// lets the kernel do it atomically; otherwise we signal every listed pid
    /// (then thaw, so frozen tasks wake up to their pending SIGKILL and die)
    /// until none is left, which also catches processes forked meanwhile.
    pub fn kill_all(&self) {
        let cgroup_kill = self.dirs.memory.join("cgroup.kill");
        if self.version == CgroupVersion::V2 && cgroup_kill.exists() {
            if let Err(e) = write_file(&cgroup_kill, "1") {
                tracing::warn!("{e}");
            }
        }
        let deadline = Instant::now() + KILL_TIMEOUT;
        let mut pause = Duration::from_micros(200);
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in &pids {
                let Ok(raw) = i32::try_from(*pid) else {
                    continue;
                };
                match kill(Pid::from_raw(raw), Signal::SIGKILL) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(e) => tracing::warn!(pid, "kill: {e}"),
                }
            }
            if self.dirs.freezer.is_some() {
                let _ = self.thaw();
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    cgroup = %self.path().display(),
                    ?pids,
                    "processes survived SIGKILL"
                );
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.peak = None;
        if self.owned.is_empty() {
            return;
        }
        self.kill_all();
        for dir in &self.owned {
            let deadline = Instant::now() + RMDIR_TIMEOUT;
            let mut pause = Duration::from_micros(200);
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.kind() == io::ErrorKind::ResourceBusy && Instant::now() < deadline =>
                    {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(20));
                    }
                    Err(e) => {
                        tracing::warn!("removing cgroup {}: {e}", dir.display());
                        break;
                    }
                }
            }
        }
    }
}

// ---- values -------------------------------------------------------------

/// v1 `cpu.cfs_quota_us` for `millis` (`None`: unlimited).
fn cfs_quota_us(millis: u32) -> Option<u64> {
    (millis > 0).then(|| (CFS_PERIOD_US * u64::from(millis) / 1000).max(MIN_CFS_QUOTA_US))
}

/// v1 `cpu.shares`: 1024 per CPU, within the kernel's 2..=262144.
fn v1_cpu_shares(millis: u32) -> u64 {
    if millis == 0 {
        return 1024;
    }
    (u64::from(millis) * 1024 / 1000).clamp(2, 262_144)
}

/// v2 `cpu.max`: `"<quota> <period>"` or `"max <period>"`.
fn v2_cpu_max(millis: u32) -> String {
    match cfs_quota_us(millis) {
        Some(quota) => format!("{quota} {CFS_PERIOD_US}"),
        None => format!("max {CFS_PERIOD_US}"),
    }
}

/// v2 `cpu.weight`: 100 (the default) per CPU, within 1..=10000.
fn v2_cpu_weight(millis: u32) -> u64 {
    if millis == 0 {
        return 100;
    }
    (u64::from(millis) / 10).clamp(1, 10_000)
}

/// v1 `memory.limit_in_bytes` (`-1`: unlimited).
fn v1_memory_limit(bytes: u64) -> String {
    if bytes == 0 {
        "-1".into()
    } else {
        bytes.to_string()
    }
}

/// v2 `memory.max` and similar: a number, or `max` for 0.
fn v2_max(value: u64) -> String {
    if value == 0 {
        "max".into()
    } else {
        value.to_string()
    }
}

/// `pids.max` (both versions): a number, or `max` for 0.
fn pids_max(pids: u32) -> String {
    v2_max(u64::from(pids))
}

/// The value of `key` in a flat-keyed file (`"oom_kill 3\n..."`).
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == key).then_some(())?;
        words.next()?.parse().ok()
    })
}

// ---- layout -------------------------------------------------------------

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// The mounted filesystem's own path shown here (`/` for a whole cgroup
    /// hierarchy; a subpath for bind mounts).
    root: String,
    mount_point: PathBuf,
    fstype: String,
    super_options: Vec<String>,
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?.to_string();
            let _source = right.next()?;
            let super_options = right
                .next()
                .unwrap_or("")
                .split(',')
                .map(str::to_string)
                .collect();
            Some(Mount {
                root: unescape_octal(left.get(3)?),
                mount_point: PathBuf::from(unescape_octal(left.get(4)?)),
                fstype,
                super_options,
            })
        })
        .collect()
}

/// Undoes mountinfo's `\040`-style escapes.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/self/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Membership {
    hierarchy: String,
    /// Empty for the v2 line (`0::/path`); v1 named hierarchies keep their
    /// `name=` entry.
    controllers: Vec<String>,
    path: String,
}

fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy = parts.next()?.to_string();
            let controllers = parts
                .next()?
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            let path = parts.next()?.to_string();
            Some(Membership {
                hierarchy,
                controllers,
                path,
            })
        })
        .collect()
}

/// The v1 hierarchy carrying `controller`.
fn v1_mount<'a>(mounts: &'a [Mount], controller: &str) -> Option<&'a Mount> {
    mounts
        .iter()
        .find(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == controller))
}

/// The directory of cgroup `path` (as `/proc/self/cgroup` shows it) under
/// `mount`, or the mount point when that cgroup is not visible there.
fn resolve(mount: &Mount, path: &str) -> PathBuf {
    let root = mount.root.trim_end_matches('/');
    let Some(rest) = path.strip_prefix(root) else {
        return mount.mount_point.clone();
    };
    if !(rest.is_empty() || rest.starts_with('/')) || rest.ends_with(" (deleted)") {
        return mount.mount_point.clone();
    }
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(rest)
    }
}

/// Whether `dir` is the root of a cgroup2 mount.
fn unified_at(dir: &Path) -> bool {
    let magic = nix::sys::statfs::statfs(dir)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    magic || dir.join("cgroup.controllers").exists()
}

fn dedup<const N: usize>(paths: [PathBuf; N]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::with_capacity(N);
    for p in paths {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid cgroup name {name:?}"),
        ));
    }
    Ok(())
}

// ---- file helpers -------------------------------------------------------

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Writes `value` in one `write(2)` to an existing cgroup file.
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| with_path(e, path))
}

/// Like [`write_file`], but a file the kernel does not offer is fine.
fn write_if_present(path: &Path, value: &str) -> io::Result<()> {
    match write_file(path, value) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_words(path: &Path) -> BTreeSet<String> {
    fs::read_to_string(path)
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

fn read_pids(path: &Path) -> Vec<u32> {
    fs::read_to_string(path)
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn mkdir_ok_if_exists(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(with_path(e, dir)),
        _ => Ok(()),
    }
}

/// Creates a v1 parent directory (an existing one is fine).
fn mkdir_v1(dir: &Path) -> io::Result<()> {
    mkdir_ok_if_exists(dir)?;
    fill_cpuset(dir)
}

/// In a v1 hierarchy that carries `cpuset`, a new cgroup starts with no CPUs
/// or memory nodes and refuses tasks: copy them from the parent.
fn fill_cpuset(dir: &Path) -> io::Result<()> {
    let parent = dir.parent().unwrap_or(dir);
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        if own.exists() && fs::read_to_string(&own)?.trim().is_empty() {
            write_file(&own, fs::read_to_string(parent.join(file))?.trim())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command, ExitStatus, Stdio};

    const MIB: u64 = 1024 * 1024;

    // ---- pure parts (any host) ------------------------------------------

    #[test]
    fn lambda_cpu_ratio() {
        assert_eq!(cpu_millis_for_memory(1769), 1000);
        assert_eq!(cpu_millis_for_memory(3538), 2000);
        assert_eq!(cpu_millis_for_memory(10240), 5788);
        assert_eq!(cpu_millis_for_memory(512), 289);
        assert_eq!(cpu_millis_for_memory(128), 72);
        assert_eq!(cpu_millis_for_memory(64), 64);
        assert_eq!(cpu_millis_for_memory(0), 64);
        assert_eq!(cpu_millis_for_memory(u32::MAX), 2_427_906_893);
    }

    #[test]
    fn cpu_values() {
        assert_eq!(cfs_quota_us(0), None);
        assert_eq!(cfs_quota_us(1000), Some(100_000));
        assert_eq!(cfs_quota_us(250), Some(25_000));
        assert_eq!(cfs_quota_us(5788), Some(578_800));
        assert_eq!(cfs_quota_us(1), Some(1_000), "kernel minimum");
        assert_eq!(v2_cpu_max(0), "max 100000");
        assert_eq!(v2_cpu_max(500), "50000 100000");
        assert_eq!(v2_cpu_max(2000), "200000 100000");
        assert_eq!(v1_cpu_shares(0), 1024);
        assert_eq!(v1_cpu_shares(1000), 1024);
        assert_eq!(v1_cpu_shares(72), 73);
        assert_eq!(v1_cpu_shares(1), 2);
        assert_eq!(v1_cpu_shares(u32::MAX), 262_144);
        assert_eq!(v2_cpu_weight(0), 100);
        assert_eq!(v2_cpu_weight(1000), 100);
        assert_eq!(v2_cpu_weight(72), 7);
        assert_eq!(v2_cpu_weight(5), 1);
        assert_eq!(v2_cpu_weight(u32::MAX), 10_000);
    }

    #[test]
    fn memory_and_pids_values() {
        assert_eq!(v1_memory_limit(0), "-1");
        assert_eq!(v1_memory_limit(128 * MIB), "134217728");
        assert_eq!(v2_max(0), "max");
        assert_eq!(v2_max(128 * MIB), "134217728");
        assert_eq!(pids_max(0), "max");
        assert_eq!(pids_max(64), "64");
    }

    #[test]
    fn keyed_files() {
        let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 1\n";
        assert_eq!(keyed_value(events, "oom_kill"), Some(1));
        assert_eq!(keyed_value(events, "oom"), Some(2));
        assert_eq!(keyed_value(events, "oom_group"), None);
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(oom_control, "oom_kill"), Some(3));
        let stat = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n";
        assert_eq!(keyed_value(stat, "usage_usec"), Some(1_234_567));
        assert_eq!(keyed_value("populated 1\nfrozen 1\n", "frozen"), Some(1));
        assert_eq!(keyed_value("", "frozen"), None);
    }

    #[test]
    fn mountinfo_hybrid_and_unified() {
        let text = "\
25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
35 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw shared:15 - cgroup cgroup rw,cpu,cpuacct
36 31 0:31 / /sys/fs/cgroup/memory rw shared:16 - cgroup cgroup rw,memory
37 31 0:32 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw,nsdelegate
38 31 0:33 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
39 30 0:34 / /mnt/with\\040space rw - ext4 /dev/sda1 rw
";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 7);
        let cpu = v1_mount(&mounts, "cpu").unwrap();
        assert_eq!(cpu.mount_point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(v1_mount(&mounts, "cpuacct").unwrap(), cpu);
        assert!(v1_mount(&mounts, "freezer").is_none());
        assert_eq!(mounts[4].fstype, "cgroup2");
        assert_eq!(mounts[6].mount_point, Path::new("/mnt/with space"));

        let pids = v1_mount(&mounts, "pids").unwrap();
        assert_eq!(
            resolve(pids, "/docker/abc/nested"),
            Path::new("/sys/fs/cgroup/pids/nested")
        );
        assert_eq!(
            resolve(pids, "/docker/abc"),
            Path::new("/sys/fs/cgroup/pids")
        );
        assert_eq!(
            resolve(pids, "/elsewhere"),
            Path::new("/sys/fs/cgroup/pids")
        );
        assert_eq!(
            resolve(pids, "/docker/abcdef"),
            Path::new("/sys/fs/cgroup/pids")
        );
        let memory = v1_mount(&mounts, "memory").unwrap();
        assert_eq!(
            resolve(memory, "/process_api/65b1"),
            Path::new("/sys/fs/cgroup/memory/process_api/65b1")
        );
        assert_eq!(resolve(memory, "/"), Path::new("/sys/fs/cgroup/memory"));
    }

    #[test]
    fn proc_cgroup_lines() {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/65b1\n2:cpu,cpuacct:/a\n0::/\n";
        let m = parse_proc_cgroup(v1);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].controllers, ["memory"]);
        assert_eq!(m[1].path, "/process_api/65b1");
        assert_eq!(m[2].controllers, ["cpu", "cpuacct"]);
        assert_eq!(m[3].hierarchy, "0");
        assert!(m[3].controllers.is_empty());
        let v2 = parse_proc_cgroup("0::/system.slice/nimbus.service\n");
        assert_eq!(v2[0].path, "/system.slice/nimbus.service");
    }

    #[test]
    fn names_are_single_components() {
        for bad in ["", ".", "..", "a/b", "/a", "a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("fn-abc.1_2").unwrap();
    }

    #[test]
    fn dirs_dedup_comounted() {
        let p = PathBuf::from;
        let dirs = Dirs {
            memory: p("/m/n"),
            pids: None,
            cpu: Some(p("/c/n")),
            cpuacct: Some(p("/c/n")),
            freezer: Some(p("/f/n")),
        };
        assert_eq!(
            dirs.unique(),
            [Path::new("/m/n"), Path::new("/c/n"), Path::new("/f/n")]
        );
        let leaf = dirs.join("x");
        assert_eq!(leaf.cpuacct, Some(p("/c/n/x")));
        assert_eq!(leaf.pids, None);
    }

    // ---- on real cgroups (root; NIMBUS_PRIVILEGED_TESTS=1) ----------------

    fn privileged(test: &str) -> bool {
        if std::env::var_os("NIMBUS_PRIVILEGED_TESTS").is_some_and(|v| v == "1") {
            return true;
        }
        eprintln!("skipping {test}: set NIMBUS_PRIVILEGED_TESTS=1 (needs root and cgroups)");
        false
    }

    /// A root with a prefix of its own (tests run in parallel, and other
    /// test processes may be running), whose parent dirs go at the end.
    struct TestRoot(CgroupRoot);

    impl TestRoot {
        fn new(test: &str) -> TestRoot {
            let prefix = format!("nimbus-test-{}-{test}", std::process::id());
            TestRoot(CgroupRoot::detect(&prefix).expect("detect"))
        }
    }

    impl std::ops::Deref for TestRoot {
        type Target = CgroupRoot;
        fn deref(&self) -> &CgroupRoot {
            &self.0
        }
    }

    impl Drop for TestRoot {
        fn drop(&mut self) {
            for dir in self.0.dirs.unique() {
                let _ = fs::remove_dir(dir);
            }
        }
    }

    /// Runs `script` under `sh` after it has enrolled itself in `cgroup`.
    fn spawn_in(cgroup: &Cgroup, script: &str) -> Child {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "for f; do echo 0 > \"$f\" || exit 99; done; {script}"
            ))
            .arg("sh")
            .args(cgroup.procs_paths())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sh")
    }

    fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `cgroup` holds `n` processes (the child enrolled itself).
    fn wait_for_pids(cgroup: &Cgroup, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while cgroup.pids().len() < n {
            assert!(Instant::now() < deadline, "child never joined the cgroup");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stderr_of(child: &mut Child) -> String {
        let mut s = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = io::Read::read_to_string(&mut e, &mut s);
        }
        s
    }

    #[test]
    fn detect_reports_this_host() {
        if !privileged("detect_reports_this_host") {
            return;
        }
        let t = Instant::now();
        let root = TestRoot::new("detect");
        eprintln!("detect took {:?}", t.elapsed());
        eprintln!("{:?}: {:#?}", root.version(), root.dirs);
        for dir in root.dirs.unique() {
            assert!(dir.is_dir(), "{}", dir.display());
        }
        // Detecting again reuses the directories.
        let again =
            CgroupRoot::detect(root.dirs.memory.file_name().unwrap().to_str().unwrap()).unwrap();
        assert_eq!(again.dirs.memory, root.dirs.memory);
    }

    #[test]
    fn memory_limit_oom_kills() {
        if !privileged("memory_limit_oom_kills") {
            return;
        }
        let root = TestRoot::new("oom");
        let limits = Limits {
            memory_bytes: 64 * MIB,
            cpu_millis: 1000,
            pids: 64,
        };
        let cg = root.create("oom", &limits).unwrap();
        assert_eq!(cg.oom_kills(), 0);
        let mut child = spawn_in(
            &cg,
            "exec python3 -c 'b = bytearray(200 * 1024 * 1024); print(len(b))'",
        );
        let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("child hung");
        let peak = cg.peak_memory_bytes().unwrap();
        eprintln!(
            "status {status:?}, oom_kills {}, peak {} MiB",
            cg.oom_kills(),
            peak / MIB
        );
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{}",
            stderr_of(&mut child)
        );
        assert!(cg.oom_kills() >= 1);
        assert!(peak > 56 * MIB && peak <= 64 * MIB + MIB, "peak {peak}");

        cg.reset_peak();
        let after = cg.peak_memory_bytes().unwrap();
        assert!(after < 16 * MIB, "peak after reset {after}");

        // Raising the limit on the live cgroup lets the same program finish.
        cg.set_memory_limit(300 * MIB).unwrap();
        let mut child = spawn_in(
            &cg,
            "exec python3 -c 'b = bytearray(200 * 1024 * 1024); print(len(b))'",
        );
        let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("child hung");
        assert!(status.success(), "{status:?}: {}", stderr_of(&mut child));
        let peak = cg.peak_memory_bytes().unwrap();
        assert!(peak >= 200 * MIB, "peak {peak}");
        // And lowering it again works too (memory first, then memory+swap).
        cg.set_memory_limit(32 * MIB).unwrap();
    }

    #[test]
    fn pids_limit_stops_forks() {
        if !privileged("pids_limit_stops_forks") {
            return;
        }
        let root = TestRoot::new("pids");
        let limits = Limits {
            memory_bytes: 256 * MIB,
            cpu_millis: 1000,
            pids: 10,
        };
        let cg = root.create("pids", &limits).unwrap();
        let Some(pids_dir) = cg.dirs.pids.clone() else {
            eprintln!("no pids controller on this host");
            return;
        };
        let mut child = spawn_in(&cg, "for i in $(seq 50); do sleep 30 & done; wait");
        let status = wait_timeout(&mut child, Duration::from_secs(20));
        let current = read_u64(&pids_dir.join("pids.current")).unwrap();
        let events = fs::read_to_string(pids_dir.join("pids.events")).unwrap();
        let refused = keyed_value(&events, "max").unwrap();
        eprintln!("status {status:?}, pids.current {current}, refused forks {refused}");
        assert!(current <= 10);
        assert!(refused >= 1);
        // The host can still fork.
        assert!(Command::new("true").status().unwrap().success());
        // The sleeps that did start hold the stderr pipe open: kill them
        // before reading it.
        drop(cg);
        let _ = child.kill();
        let status = status.unwrap_or_else(|| child.wait().unwrap());
        assert!(!status.success());
        let stderr = stderr_of(&mut child);
        eprintln!("shell said: {}", stderr.trim());
        assert!(stderr.to_lowercase().contains("fork"), "{stderr}");
    }

    #[test]
    fn cpu_quota_caps_usage() {
        if !privileged("cpu_quota_caps_usage") {
            return;
        }
        let root = TestRoot::new("quota");
        let limits = Limits {
            memory_bytes: 64 * MIB,
            cpu_millis: 200,
            pids: 16,
        };
        let cg = root.create("quota", &limits).unwrap();
        if cg.dirs.cpu.is_none() {
            eprintln!("no cpu controller on this host");
            return;
        }
        let mut child = spawn_in(&cg, "while :; do :; done");
        wait_for_pids(&cg, 1);
        let start = Instant::now();
        let before = cg.cpu_usage_ns().unwrap();
        std::thread::sleep(Duration::from_secs(1));
        let used = cg.cpu_usage_ns().unwrap() - before;
        let share = used as f64 / start.elapsed().as_nanos() as f64;
        eprintln!("busy loop at 200 millis used {:.3} of a CPU", share);
        assert!(share < 0.3, "quota not applied: {share}");
        assert!(share > 0.0);
        drop(cg);
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn freeze_stops_cpu_and_kill_all_takes_frozen() {
        if !privileged("freeze_stops_cpu_and_kill_all_takes_frozen") {
            return;
        }
        let root = TestRoot::new("freeze");
        let cg = root.create("freeze", &Limits::default()).unwrap();
        if cg.dirs.freezer.is_none() {
            eprintln!("no freezer on this host");
            return;
        }
        let mut child = spawn_in(&cg, "while :; do :; done");
        wait_for_pids(&cg, 1);
        std::thread::sleep(Duration::from_millis(100));

        let t = Instant::now();
        cg.freeze().unwrap();
        let freeze_time = t.elapsed();
        let frozen_at = cg.cpu_usage_ns().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let still = cg.cpu_usage_ns().unwrap();
        eprintln!(
            "froze in {freeze_time:?}; usage while frozen +{} ns",
            still - frozen_at
        );
        assert_eq!(still, frozen_at, "CPU time advanced while frozen");

        cg.thaw().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let thawed = cg.cpu_usage_ns().unwrap();
        eprintln!("after thaw +{} ms", (thawed - still) / 1_000_000);
        assert!(thawed - still > 50_000_000, "no progress after thaw");

        cg.freeze().unwrap();
        let t = Instant::now();
        cg.kill_all();
        eprintln!("kill_all of a frozen cgroup took {:?}", t.elapsed());
        assert!(cg.pids().is_empty());
        let status = wait_timeout(&mut child, Duration::from_secs(5)).expect("survived");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn drop_kills_and_removes() {
        if !privileged("drop_kills_and_removes") {
            return;
        }
        let root = TestRoot::new("drop");
        let cg = root.create("drop", &Limits::default()).unwrap();
        let dirs: Vec<PathBuf> = cg.dirs.unique().iter().map(|d| d.to_path_buf()).collect();
        // Two processes, one a grandchild outside the child's control.
        let mut child = spawn_in(&cg, "sleep 1000 & exec sleep 1000");
        wait_for_pids(&cg, 2);
        assert!(
            root.create("drop", &Limits::default()).is_err(),
            "a leaf in use must not be reused"
        );
        let t = Instant::now();
        drop(cg);
        eprintln!("drop with 2 processes took {:?}", t.elapsed());
        for dir in &dirs {
            assert!(!dir.exists(), "{} left behind", dir.display());
        }
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn add_pid_moves_a_running_process() {
        if !privileged("add_pid_moves_a_running_process") {
            return;
        }
        let root = TestRoot::new("addpid");
        let cg = root.create("addpid", &Limits::default()).unwrap();
        let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
        cg.add_pid(child.id()).unwrap();
        assert_eq!(cg.pids(), [child.id()]);
        let own = fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
        assert!(own.contains("/addpid"), "{own}");
        drop(cg);
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn cleanup_stale_removes_leftovers() {
        if !privileged("cleanup_stale_removes_leftovers") {
            return;
        }
        let root = TestRoot::new("stale");
        let cg = root.create("left-over", &Limits::default()).unwrap();
        let dirs: Vec<PathBuf> = cg.dirs.unique().iter().map(|d| d.to_path_buf()).collect();
        let mut child = spawn_in(&cg, "exec sleep 1000");
        wait_for_pids(&cg, 1);
        // As if the server had crashed: nothing cleaned up.
        std::mem::forget(cg);
        let prefix = root
            .dirs
            .memory
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let restarted = CgroupRoot::detect(&prefix).unwrap();
        restarted.cleanup_stale().unwrap();
        for dir in &dirs {
            assert!(!dir.exists(), "{} left behind", dir.display());
        }
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn create_and_remove_timing() {
        if !privileged("create_and_remove_timing") {
            return;
        }
        let root = TestRoot::new("timing");
        let limits = Limits {
            memory_bytes: 128 * MIB,
            cpu_millis: cpu_millis_for_memory(128),
            pids: 64,
        };
        const N: u32 = 50;
        let mut create = Duration::ZERO;
        let mut remove = Duration::ZERO;
        for i in 0..N {
            let t = Instant::now();
            let cg = root.create(&format!("t{i}"), &limits).unwrap();
            create += t.elapsed();
            let t = Instant::now();
            drop(cg);
            remove += t.elapsed();
        }
        let cg = root.create("busy", &limits).unwrap();
        let mut child = spawn_in(&cg, "exec sleep 1000");
        wait_for_pids(&cg, 1);
        let t = Instant::now();
        drop(cg);
        let with_process = t.elapsed();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        eprintln!(
            "create {:?}, remove (empty) {:?}, remove with one process {:?}",
            create / N,
            remove / N,
            with_process
        );
        for dir in root.dirs.unique() {
            assert_eq!(
                fs::read_dir(dir)
                    .unwrap()
                    .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_dir())
                    .count(),
                0
            );
        }
    }

    #[test]
    fn peak_file_reads_at_offset_zero() {
        if !privileged("peak_file_reads_at_offset_zero") {
            return;
        }
        // `peak_memory_bytes` on v2 reads through a kept descriptor with
        // pread at 0; check that kernfs serves repeated preads afresh.
        let root = TestRoot::new("pread");
        let cg = root.create("pread", &Limits::default()).unwrap();
        let file = match cg.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        };
        let f = File::open(cg.path().join(file)).unwrap();
        let mut buf = [0u8; 32];
        let n = f.read_at(&mut buf, 0).unwrap();
        let first: u64 = std::str::from_utf8(&buf[..n])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut child = spawn_in(
            &cg,
            "exec python3 -c 'import time; b = bytearray(50 * 1024 * 1024); time.sleep(30)'",
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = f.read_at(&mut buf, 0).unwrap();
            let now: u64 = std::str::from_utf8(&buf[..n])
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            if now > first + 40 * MIB {
                break;
            }
            assert!(Instant::now() < deadline, "pread never saw the usage grow");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(cg);
        child.wait().unwrap();
    }
}
