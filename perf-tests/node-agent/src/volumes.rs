//! Pod volumes as local directories: which ones the agent can honour, and making them.
//!
//! A process has no mount namespace of its own, so a volume is visible at its mountPath
//! only if that path on the host *is* the volume: hostPath when mountPath equals the host
//! path, emptyDir through a symlink from mountPath to a per-pod directory.

use crate::error::{Error, Result};
use k8s_openapi::api::core::v1::{Volume, VolumeMount};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeSource {
    EmptyDir { dir: PathBuf },
    HostPath { path: PathBuf, kind: HostPathKind },
    Unsupported { kind: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostPathKind {
    /// "" in the API: no check at all.
    Any,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Other,
}

/// An emptyDir made visible at a mountPath.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountLink {
    pub link: PathBuf,
    pub target: PathBuf,
}

pub fn classify(volume: &Volume, pod_dir: &Path) -> VolumeSource {
    if volume.empty_dir.is_some() {
        return VolumeSource::EmptyDir {
            dir: pod_dir.join("volumes").join(&volume.name),
        };
    }
    if let Some(host_path) = &volume.host_path {
        let kind = match host_path.type_.as_deref().unwrap_or("") {
            "" => HostPathKind::Any,
            "DirectoryOrCreate" => HostPathKind::DirectoryOrCreate,
            "Directory" => HostPathKind::Directory,
            "FileOrCreate" => HostPathKind::FileOrCreate,
            "File" => HostPathKind::File,
            _ => HostPathKind::Other,
        };
        return VolumeSource::HostPath {
            path: PathBuf::from(&host_path.path),
            kind,
        };
    }
    VolumeSource::Unsupported {
        kind: source_kind(volume),
    }
}

/// The API name of the volume's source field, e.g. "projected" or "configMap".
fn source_kind(volume: &Volume) -> String {
    serde_json::to_value(volume)
        .ok()
        .and_then(|v| {
            v.as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Decides how one mount is honoured: `Ok(None)` when the path already is the volume,
/// `Ok(Some(link))` for an emptyDir, `Err(reason)` when it cannot be honoured.
pub fn plan_mount(
    mount: &VolumeMount,
    volumes: &[(String, VolumeSource)],
) -> Result<Option<MountLink>, String> {
    let name = &mount.name;
    let source = volumes
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
        .ok_or_else(|| format!("volume {name:?} is mounted but not defined"))?;
    if mount.sub_path.as_deref().is_some_and(|s| !s.is_empty())
        || mount
            .sub_path_expr
            .as_deref()
            .is_some_and(|s| !s.is_empty())
    {
        return Err(format!("volume {name:?}: subPath mounts are not supported"));
    }
    match source {
        VolumeSource::HostPath { path, kind } => {
            if *kind == HostPathKind::Other {
                return Err(format!(
                    "volume {name:?}: hostPath types other than Directory/File(OrCreate) are not supported"
                ));
            }
            if Path::new(&mount.mount_path) != path {
                return Err(format!(
                    "volume {name:?}: hostPath {} mounted at {} — a process sees host paths only, so mountPath must equal the host path",
                    path.display(),
                    mount.mount_path
                ));
            }
            Ok(None)
        }
        VolumeSource::EmptyDir { dir } => Ok(Some(MountLink {
            link: PathBuf::from(&mount.mount_path),
            target: dir.clone(),
        })),
        VolumeSource::Unsupported { kind } => Err(format!(
            "volume {name:?}: {kind} volumes are not supported by the process node agent"
        )),
    }
}

/// Creates what the volumes need on the host before the containers start.
pub fn prepare(volumes: &[(String, VolumeSource)], links: &[MountLink]) -> Result<()> {
    for (_, source) in volumes {
        match source {
            VolumeSource::EmptyDir { dir } => create_dir(dir)?,
            VolumeSource::HostPath { path, kind } => prepare_host_path(path, *kind)?,
            VolumeSource::Unsupported { .. } => {}
        }
    }
    for link in links {
        match std::fs::read_link(&link.link) {
            Ok(existing) if existing == link.target => {}
            Ok(_) | Err(_) if link.link.symlink_metadata().is_ok() => {
                return Err(Error::io(
                    "mounting emptyDir at",
                    &link.link,
                    std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "path exists on the host and is not this pod's volume",
                    ),
                ));
            }
            _ => {
                if let Some(parent) = link.link.parent() {
                    create_dir(parent)?;
                }
                std::os::unix::fs::symlink(&link.target, &link.link)
                    .map_err(|e| Error::io("linking emptyDir at", &link.link, e))?;
            }
        }
    }
    Ok(())
}

/// Removes the emptyDir links this pod made; the pod directory itself is left for its logs.
pub fn release(links: &[MountLink]) {
    for link in links {
        if std::fs::read_link(&link.link).is_ok_and(|t| t == link.target) {
            let _ = std::fs::remove_file(&link.link);
        }
    }
}

fn prepare_host_path(path: &Path, kind: HostPathKind) -> Result<()> {
    let missing = |what: &str| {
        Error::io(
            "checking hostPath",
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("not a {what}")),
        )
    };
    match kind {
        HostPathKind::DirectoryOrCreate => create_dir(path),
        HostPathKind::FileOrCreate => {
            if let Some(parent) = path.parent() {
                create_dir(parent)?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(drop)
                .map_err(|e| Error::io("creating hostPath file", path, e))
        }
        HostPathKind::Directory if !path.is_dir() => Err(missing("directory")),
        HostPathKind::File if !path.is_file() => Err(missing("file")),
        _ => Ok(()),
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        EmptyDirVolumeSource, HostPathVolumeSource, ProjectedVolumeSource,
    };

    fn mount(name: &str, path: &str) -> VolumeMount {
        VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            ..Default::default()
        }
    }

    fn volumes() -> Vec<(String, VolumeSource)> {
        let pod_dir = Path::new("/work/pods/p");
        [
            Volume {
                name: "certs".into(),
                host_path: Some(HostPathVolumeSource {
                    path: "/state/pki".into(),
                    type_: Some("Directory".into()),
                }),
                ..Default::default()
            },
            Volume {
                name: "scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
            Volume {
                name: "token".into(),
                projected: Some(ProjectedVolumeSource::default()),
                ..Default::default()
            },
        ]
        .iter()
        .map(|v| (v.name.clone(), classify(v, pod_dir)))
        .collect()
    }

    #[test]
    fn host_path_at_its_own_path_is_honoured() {
        assert_eq!(
            plan_mount(&mount("certs", "/state/pki"), &volumes()),
            Ok(None)
        );
    }

    #[test]
    fn host_path_elsewhere_is_refused() {
        let err = plan_mount(&mount("certs", "/etc/kubernetes/pki"), &volumes()).unwrap_err();
        assert!(err.contains("mountPath must equal the host path"), "{err}");
    }

    #[test]
    fn empty_dir_becomes_a_link_to_the_pod_directory() {
        assert_eq!(
            plan_mount(&mount("scratch", "/tmp/x"), &volumes()),
            Ok(Some(MountLink {
                link: "/tmp/x".into(),
                target: "/work/pods/p/volumes/scratch".into()
            }))
        );
    }

    #[test]
    fn other_kinds_and_sub_paths_are_refused_by_name() {
        let err = plan_mount(&mount("token", "/var/run/secrets"), &volumes()).unwrap_err();
        assert!(err.contains("projected volumes are not supported"), "{err}");
        let mut m = mount("certs", "/state/pki");
        m.sub_path = Some("ca.crt".into());
        assert!(plan_mount(&m, &volumes()).unwrap_err().contains("subPath"));
        assert!(plan_mount(&mount("nope", "/x"), &volumes()).is_err());
    }

    #[test]
    fn prepare_and_release_an_empty_dir_link() {
        let base = std::env::temp_dir().join(format!("node-agent-vol-{}", std::process::id()));
        let target = base.join("volumes/scratch");
        let link = MountLink {
            link: base.join("mnt/scratch"),
            target: target.clone(),
        };
        let vols = vec![(
            "scratch".to_string(),
            VolumeSource::EmptyDir {
                dir: target.clone(),
            },
        )];
        prepare(&vols, std::slice::from_ref(&link)).unwrap();
        assert!(target.is_dir());
        assert_eq!(std::fs::read_link(&link.link).unwrap(), target);
        prepare(&vols, std::slice::from_ref(&link)).unwrap();
        release(std::slice::from_ref(&link));
        assert!(link.link.symlink_metadata().is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
