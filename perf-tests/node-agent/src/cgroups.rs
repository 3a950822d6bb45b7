//! CPU and memory limits enforced with cgroup v1 (the cpu and memory controllers), one
//! cgroup per container process under the agent's own cgroups. Where they are missing or
//! read-only the agent runs without them and says so in each pod's status.

use crate::error::{Error, Result};
use crate::resources::{CFS_PERIOD_US, Limits};
use std::path::{Path, PathBuf};

/// Where this agent's container cgroups live, one directory per controller.
#[derive(Clone, Debug)]
pub struct Cgroups {
    cpu: PathBuf,
    memory: PathBuf,
}

/// The cgroups of one container process.
#[derive(Debug)]
pub struct ContainerCgroup {
    cpu: PathBuf,
    memory: PathBuf,
}

impl Cgroups {
    /// Finds writable cgroup v1 cpu and memory hierarchies and makes `<own cgroup>/<name>`
    /// in each; `Err` says why limits cannot be enforced here.
    pub fn detect(name: &str) -> Result<Self, String> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(|e| e.to_string())?;
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let dir = |controller: &str| -> Result<PathBuf, String> {
            let mount = controller_mount(&mounts, controller)
                .ok_or_else(|| format!("no cgroup v1 {controller} hierarchy is mounted"))?;
            let path = own_cgroup(&own, controller).unwrap_or("/");
            let dir = mount.join(path.trim_start_matches('/')).join(name);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            Ok(dir)
        };
        Ok(Self {
            cpu: dir("cpu")?,
            memory: dir("memory")?,
        })
    }

    /// Creates the cgroups for one container process and applies its limits.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<ContainerCgroup> {
        let cgroup = ContainerCgroup {
            cpu: self.cpu.join(name),
            memory: self.memory.join(name),
        };
        for dir in [&cgroup.cpu, &cgroup.memory] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("creating cgroup", dir, e))?;
        }
        write(
            &cgroup.cpu.join("cpu.cfs_period_us"),
            &CFS_PERIOD_US.to_string(),
        )?;
        cgroup.apply(limits)?;
        Ok(cgroup)
    }

    /// Removes the agent's (by then empty) cgroup directories.
    pub fn release(&self) {
        for dir in [&self.cpu, &self.memory] {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl ContainerCgroup {
    pub fn apply(&self, limits: &Limits) -> Result<()> {
        write(
            &self.cpu.join("cpu.cfs_quota_us"),
            &limits.cfs_quota_us().to_string(),
        )?;
        write(
            &self.memory.join("memory.limit_in_bytes"),
            &limits.memory_limit().to_string(),
        )
    }

    /// Moves a process (all its threads) into these cgroups.
    pub fn add(&self, pid: u32) -> Result<()> {
        for dir in [&self.cpu, &self.memory] {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Removes the cgroups once their process has exited.
    pub fn remove(&self) {
        for dir in [&self.cpu, &self.memory] {
            if let Err(e) = std::fs::remove_dir(dir) {
                tracing::warn!(cgroup = %dir.display(), error = %e, "removing cgroup");
            }
        }
    }
}

fn write(file: &Path, value: &str) -> Result<()> {
    std::fs::write(file, value).map_err(|e| Error::io("writing", file, e))
}

/// The mount point of the cgroup v1 hierarchy that has `controller`.
fn controller_mount(mounts: &str, controller: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, mount_point, fs_type, options) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        (fs_type == "cgroup" && options.split(',').any(|o| o == controller))
            .then(|| PathBuf::from(mount_point))
    })
}

/// This process's cgroup path in the hierarchy that has `controller` (from /proc/self/cgroup).
fn own_cgroup<'a>(proc_cgroup: &'a str, controller: &str) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    const PROC_CGROUP: &str = "9:name=systemd:/
4:memory:/process_api/abc
2:cpu,cpuacct:/
0::/
";

    #[test]
    fn finds_hierarchies_and_own_paths() {
        assert_eq!(
            controller_mount(MOUNTS, "cpu"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            controller_mount(MOUNTS, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(controller_mount(MOUNTS, "pids"), None);
        assert_eq!(own_cgroup(PROC_CGROUP, "memory"), Some("/process_api/abc"));
        assert_eq!(own_cgroup(PROC_CGROUP, "cpu"), Some("/"));
        assert_eq!(own_cgroup(PROC_CGROUP, "cpuacct"), Some("/"));
    }
}
