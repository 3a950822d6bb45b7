//! What the agent will run for a pod: each container's command line and environment,
//! its probes, its volumes, and everything in the spec it cannot honour.

use crate::expansion::{expand, lookup_in};
use crate::probe::{ProbeAction, ProbeSpec};
use crate::volumes::{self, MountLink, VolumeSource};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, Probe};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::path::{Path, PathBuf};

/// Facts about where the pod runs that the spec refers to.
#[derive(Clone, Debug)]
pub struct Placement<'a> {
    pub node_name: &'a str,
    pub node_ip: &'a str,
    pub pod_dir: &'a Path,
    /// PATH given to every process, as an image would.
    pub search_path: &'a str,
    /// Why CPU and memory limits cannot be enforced here, if they cannot.
    pub limits_unenforced: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: PathBuf,
}

#[derive(Clone, Debug)]
pub struct ContainerPlan {
    pub name: String,
    pub image: String,
    /// `Err` says why the container can never start on this agent.
    pub launch: Result<Launch, String>,
    pub readiness: Option<ProbeSpec>,
    pub liveness: Option<ProbeSpec>,
}

#[derive(Clone, Debug)]
pub struct PodPlan {
    pub containers: Vec<ContainerPlan>,
    pub volumes: Vec<(String, VolumeSource)>,
    pub links: Vec<MountLink>,
    /// Parts of the spec the agent does not apply but that do not stop the pod.
    pub ignored: Vec<String>,
}

pub fn plan(pod: &Pod, at: &Placement<'_>) -> PodPlan {
    let spec = pod.spec.clone().unwrap_or_default();
    let volumes: Vec<(String, VolumeSource)> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.clone(), volumes::classify(v, at.pod_dir)))
        .collect();
    let mut ignored = pod_level_ignored(pod);
    let init_blocker = spec
        .init_containers
        .as_ref()
        .filter(|c| !c.is_empty())
        .map(|_| "init containers are not supported by the process node agent".to_string());
    let mut links = Vec::new();
    let containers = spec
        .containers
        .iter()
        .map(|c| {
            ignored.extend(container_ignored(c));
            ignored.extend(resource_notes(c, at.limits_unenforced));
            let mut launch = init_blocker
                .clone()
                .map_or_else(|| build_launch(pod, c, at, &volumes, &mut links), Err);
            let readiness = probe(c, c.readiness_probe.as_ref(), at.node_ip, "readinessProbe");
            let liveness = probe(c, c.liveness_probe.as_ref(), at.node_ip, "livenessProbe");
            let (readiness, liveness) = match (readiness, liveness) {
                (Ok(r), Ok(l)) => (r, l),
                (Err(e), _) | (_, Err(e)) => {
                    launch = launch.and(Err(e));
                    (None, None)
                }
            };
            ContainerPlan {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                launch,
                readiness,
                liveness,
            }
        })
        .collect();
    PodPlan {
        containers,
        volumes,
        links,
        ignored,
    }
}

fn build_launch(
    pod: &Pod,
    c: &Container,
    at: &Placement<'_>,
    volumes: &[(String, VolumeSource)],
    links: &mut Vec<MountLink>,
) -> Result<Launch, String> {
    if c.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err("envFrom is not supported by the process node agent".into());
    }
    for m in c.volume_mounts.iter().flatten() {
        if let Some(link) = volumes::plan_mount(m, volumes)?
            && !links.contains(&link)
        {
            links.push(link);
        }
    }
    let env = container_env(pod, c, at)?;
    let words: Vec<String> = {
        let lookup = lookup_in(&env);
        c.command
            .iter()
            .chain(c.args.iter())
            .flatten()
            .map(|w| expand(w, &lookup))
            .collect()
    };
    let mut words = words.into_iter();
    let program = words
        .next()
        .filter(|_| c.command.as_ref().is_some_and(|v| !v.is_empty()));
    let program = program.ok_or_else(|| {
        "no command: the image's entrypoint is unknown to a process agent, so command must name the program".to_string()
    })?;
    let working_dir = c
        .working_dir
        .as_deref()
        .filter(|w| !w.is_empty())
        .map_or_else(|| at.pod_dir.to_path_buf(), PathBuf::from);
    let mut process_env = vec![
        ("PATH".to_string(), at.search_path.to_string()),
        ("HOME".to_string(), at.pod_dir.display().to_string()),
        ("HOSTNAME".to_string(), pod_name(pod).to_string()),
    ];
    process_env.extend(env);
    Ok(Launch {
        program,
        args: words.collect(),
        env: process_env,
        working_dir,
    })
}

/// The container's env in order, each value expanded against the ones before it.
fn container_env(
    pod: &Pod,
    c: &Container,
    at: &Placement<'_>,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    for var in c.env.iter().flatten() {
        let value = env_value(pod, var, at, &env)?;
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

fn env_value(
    pod: &Pod,
    var: &EnvVar,
    at: &Placement<'_>,
    earlier: &[(String, String)],
) -> Result<String, String> {
    let Some(source) = &var.value_from else {
        return Ok(expand(
            var.value.as_deref().unwrap_or(""),
            lookup_in(earlier),
        ));
    };
    let Some(field) = &source.field_ref else {
        return Err(format!(
            "env {}: only value and fieldRef sources are supported by the process node agent",
            var.name
        ));
    };
    field_value(pod, &field.field_path, at).ok_or_else(|| {
        format!(
            "env {}: fieldRef {:?} is not supported",
            var.name, field.field_path
        )
    })
}

/// The downward API fields a process can be told about.
fn field_value(pod: &Pod, path: &str, at: &Placement<'_>) -> Option<String> {
    let meta = &pod.metadata;
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")
            .map(str::to_string)
    };
    if let Some(key) = subscript("metadata.labels") {
        return Some(meta.labels.as_ref()?.get(&key).cloned().unwrap_or_default());
    }
    if let Some(key) = subscript("metadata.annotations") {
        return Some(
            meta.annotations
                .as_ref()?
                .get(&key)
                .cloned()
                .unwrap_or_default(),
        );
    }
    match path {
        "metadata.name" => Some(pod_name(pod).to_string()),
        "metadata.namespace" => Some(meta.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Some(meta.uid.clone().unwrap_or_default()),
        "spec.nodeName" => Some(at.node_name.to_string()),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .map(|s| s.service_account_name.clone().unwrap_or_default()),
        "status.podIP" | "status.podIPs" | "status.hostIP" | "status.hostIPs" => {
            Some(at.node_ip.to_string())
        }
        _ => None,
    }
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

fn probe(
    c: &Container,
    probe: Option<&Probe>,
    pod_ip: &str,
    which: &str,
) -> Result<Option<ProbeSpec>, String> {
    let Some(p) = probe else { return Ok(None) };
    let port = |port: &IntOrString| -> Result<u16, String> {
        let number = match port {
            IntOrString::Int(n) => *n,
            IntOrString::String(name) => c
                .ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .map(|cp| cp.container_port)
                .ok_or_else(|| format!("{which}: no container port named {name:?}"))?,
        };
        u16::try_from(number).map_err(|_| format!("{which}: port {number} out of range"))
    };
    let action = if let Some(http) = &p.http_get {
        ProbeAction::Http {
            https: http.scheme.as_deref() == Some("HTTPS"),
            host: http
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.into()),
            port: port(&http.port)?,
            path: http
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".into()),
            headers: http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        }
    } else if let Some(tcp) = &p.tcp_socket {
        ProbeAction::Tcp {
            host: tcp
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.into()),
            port: port(&tcp.port)?,
        }
    } else if let Some(exec) = &p.exec {
        ProbeAction::Exec {
            command: exec.command.clone().unwrap_or_default(),
        }
    } else {
        return Err(format!(
            "{which}: only httpGet, tcpSocket and exec probes are supported"
        ));
    };
    Ok(Some(ProbeSpec::with_defaults(action, p)))
}

fn pod_level_ignored(pod: &Pod) -> Vec<String> {
    let Some(spec) = &pod.spec else { return vec![] };
    let mut ignored = Vec::new();
    if spec
        .security_context
        .as_ref()
        .is_some_and(|s| *s != Default::default())
    {
        ignored.push("pod securityContext not applied: processes run as the agent's user".into());
    }
    if spec.readiness_gates.as_ref().is_some_and(|g| !g.is_empty()) {
        ignored.push("readinessGates not evaluated".into());
    }
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        ignored.push("ephemeral containers not run".into());
    }
    ignored
}

/// Limits are enforced with cgroups when they can be; requests only inform the scheduler.
fn resource_notes(c: &Container, limits_unenforced: Option<&str>) -> Vec<String> {
    let name = &c.name;
    let Some(r) = c.resources.as_ref() else {
        return vec![];
    };
    let names = |m: &Option<std::collections::BTreeMap<String, Quantity>>| -> Vec<String> {
        m.iter().flatten().map(|(k, _)| k.clone()).collect()
    };
    let (limits, requests) = (names(&r.limits), names(&r.requests));
    let mut notes = Vec::new();
    if !requests.is_empty() {
        notes.push(format!(
            "container {name}: requests not applied as cgroup shares (scheduling only)"
        ));
    }
    if let Some(reason) = limits_unenforced.filter(|_| !limits.is_empty()) {
        notes.push(format!("container {name}: limits not enforced ({reason})"));
    }
    if limits
        .iter()
        .chain(&requests)
        .any(|k| k != "cpu" && k != "memory")
    {
        notes.push(format!(
            "container {name}: resources other than cpu and memory ignored"
        ));
    }
    notes
}

fn container_ignored(c: &Container) -> Vec<String> {
    let name = &c.name;
    let mut ignored = Vec::new();
    if let Some(image) = c.image.as_deref().filter(|i| !i.is_empty()) {
        ignored.push(format!(
            "container {name}: image {image} ignored, command runs as a local process"
        ));
    }
    if c.security_context
        .as_ref()
        .is_some_and(|s| *s != Default::default())
    {
        ignored.push(format!("container {name}: securityContext not applied"));
    }
    if c.startup_probe.is_some() {
        ignored.push(format!("container {name}: startupProbe not run"));
    }
    if c.lifecycle.is_some() {
        ignored.push(format!("container {name}: lifecycle hooks not run"));
    }
    if c.volume_mounts
        .iter()
        .flatten()
        .any(|m| m.read_only == Some(true))
    {
        ignored.push(format!("container {name}: readOnly mounts not enforced"));
    }
    ignored
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVarSource, ObjectFieldSelector, PodSpec};
    use serde_json::json;

    fn placement() -> Placement<'static> {
        Placement {
            node_name: "master-1",
            node_ip: "127.0.1.2",
            pod_dir: Path::new("/agent/pods/ns_p_u"),
            search_path: "/usr/bin:/bin",
            limits_unenforced: None,
        }
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "apiserver-1-0", "namespace": "tested-cp", "uid": "u1",
                         "labels": {"app": "apiserver"}},
            "spec": spec,
        }))
        .unwrap()
    }

    fn apiserver() -> Pod {
        pod(json!({"containers": [{
            "name": "kube-apiserver",
            "image": "registry.k8s.io/kube-apiserver:v1.35.0",
            "command": ["/cache/bin/kube-apiserver"],
            "args": ["--bind-address=$(POD_IP)", "--secure-port=$(PORT)", "--name=$(NAME)", "--literal=$$(POD_IP)"],
            "env": [
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "PORT", "value": "6443"},
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "URL", "value": "https://$(POD_IP):$(PORT)/$(LATER)"},
                {"name": "LATER", "value": "x"},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}
            ],
            "ports": [{"name": "https", "containerPort": 6443}],
            "readinessProbe": {"httpGet": {"scheme": "HTTPS", "port": "https", "path": "/readyz"}, "periodSeconds": 1},
            "volumeMounts": [{"name": "pki", "mountPath": "/state/pki", "readOnly": true}]
        }],
        "volumes": [{"name": "pki", "hostPath": {"path": "/state/pki", "type": "Directory"}}]}))
    }

    #[test]
    fn command_args_and_env_are_expanded_with_downward_fields() {
        let p = plan(&apiserver(), &placement());
        let launch = p.containers[0].launch.clone().unwrap();
        assert_eq!(launch.program, "/cache/bin/kube-apiserver");
        assert_eq!(
            launch.args,
            [
                "--bind-address=127.0.1.2",
                "--secure-port=6443",
                "--name=apiserver-1-0",
                "--literal=$(POD_IP)"
            ]
        );
        let env = |k: &str| {
            launch
                .env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            env("URL").as_deref(),
            Some("https://127.0.1.2:6443/$(LATER)")
        );
        assert_eq!(env("APP").as_deref(), Some("apiserver"));
        assert_eq!(env("HOSTNAME").as_deref(), Some("apiserver-1-0"));
        assert_eq!(env("PATH").as_deref(), Some("/usr/bin:/bin"));
        assert_eq!(launch.working_dir, Path::new("/agent/pods/ns_p_u"));
    }

    #[test]
    fn readiness_probe_resolves_named_port_and_pod_ip() {
        let p = plan(&apiserver(), &placement());
        let spec = p.containers[0].readiness.clone().unwrap();
        assert_eq!(
            spec.action,
            ProbeAction::Http {
                https: true,
                host: "127.0.1.2".into(),
                port: 6443,
                path: "/readyz".into(),
                headers: vec![]
            }
        );
        assert_eq!(spec.period, std::time::Duration::from_secs(1));
    }

    #[test]
    fn image_and_read_only_are_reported_as_ignored() {
        let p = plan(&apiserver(), &placement());
        assert!(
            p.ignored
                .iter()
                .any(|m| m.contains("image registry.k8s.io/kube-apiserver:v1.35.0 ignored"))
        );
        assert!(p.ignored.iter().any(|m| m.contains("readOnly")));
    }

    #[test]
    fn unsupported_things_block_the_container_with_a_reason() {
        let mut p = apiserver();
        let c = &mut p.spec.as_mut().unwrap().containers[0];
        c.env.as_mut().unwrap().push(EnvVar {
            name: "CPU".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.phase".into(),
                    api_version: None,
                }),
                ..Default::default()
            }),
            value: None,
        });
        let err = plan(&p, &placement()).containers[0]
            .launch
            .clone()
            .unwrap_err();
        assert!(err.contains("status.phase"), "{err}");

        let no_command =
            pod(json!({"containers": [{"name": "c", "image": "busybox", "args": ["sleep", "1"]}]}));
        let err = plan(&no_command, &placement()).containers[0]
            .launch
            .clone()
            .unwrap_err();
        assert!(err.contains("no command"), "{err}");

        let grpc = pod(json!({"containers": [{"name": "c", "command": ["true"],
            "readinessProbe": {"grpc": {"port": 1}}}]}));
        let err = plan(&grpc, &placement()).containers[0]
            .launch
            .clone()
            .unwrap_err();
        assert!(err.contains("readinessProbe"), "{err}");

        let mut init = no_command.clone();
        let spec: &mut PodSpec = init.spec.as_mut().unwrap();
        spec.init_containers = Some(vec![spec.containers[0].clone()]);
        let err = plan(&init, &placement()).containers[0]
            .launch
            .clone()
            .unwrap_err();
        assert!(err.contains("init containers"), "{err}");
    }

    #[test]
    fn empty_dir_mounts_become_links() {
        let p = pod(json!({"containers": [{"name": "c", "command": ["true"],
            "volumeMounts": [{"name": "data", "mountPath": "/tmp/data"}]}],
            "volumes": [{"name": "data", "emptyDir": {}}]}));
        let p = plan(&p, &placement());
        assert!(p.containers[0].launch.is_ok());
        assert_eq!(p.links.len(), 1);
        assert_eq!(
            p.links[0].target,
            Path::new("/agent/pods/ns_p_u/volumes/data")
        );
    }
}
