//! The objects the run creates: manifests, request bodies and URLs.
//!
//! Bodies are rendered once into a template split at the places where the name and a serial
//! number go, so a POST or PUT costs one buffer, not a JSON serialisation.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::mix::Resource;

/// Label on everything the run creates; its value is the run id.
pub const RUN_LABEL: &str = "arak.io/stress-test";
/// Annotation holding the padding that sets object size (configmaps and secrets use data).
const PADDING_KEY: &str = "arak.io/padding";
/// Annotation that PUT and PATCH change on every write, so that every write is a real one.
pub const SERIAL_KEY: &str = "arak.io/serial";

const NAME_MARK: &str = "@@ARAK_NAME@@";
const SERIAL_MARK: &str = "@@ARAK_SERIAL@@";

/// Storage class of the run's PVs; the PVCs ask for no class, so the two never bind.
const PV_STORAGE_CLASS: &str = "arak-stress-test";
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// Short per-kind prefix so names never couple objects (a Service and Endpoints of one name do).
pub fn name_prefix(resource: Resource) -> &'static str {
    match resource {
        Resource::ConfigMaps => "cm",
        Resource::Secrets => "sec",
        Resource::Services => "svc",
        Resource::ServiceAccounts => "sa",
        Resource::Endpoints => "ep",
        Resource::LimitRanges => "lr",
        Resource::ResourceQuotas => "rq",
        Resource::PersistentVolumeClaims => "pvc",
        Resource::PersistentVolumes => "pv",
        Resource::PodTemplates => "podt",
        Resource::ReplicationControllers => "rc",
        Resource::Deployments => "deploy",
        Resource::ReplicaSets => "rs",
        Resource::StatefulSets => "sts",
        Resource::CronJobs => "cj",
        Resource::Namespaces => "ns",
        Resource::Nodes => "node",
        Resource::Pods => "pod",
    }
}

/// Names of the run's objects. Cluster-scoped kinds carry the run id so runs never collide.
#[derive(Clone, Debug)]
pub struct Naming {
    pub run_id: String,
}

impl Naming {
    /// The namespaces the run's namespaced objects live in.
    pub fn work_namespace(&self, i: usize) -> String {
        format!("arak-st-{}-{i}", self.run_id)
    }

    /// Prefix of object names of `resource`; pool objects append `p<i>`, created ones a serial.
    pub fn object_prefix(&self, resource: Resource) -> String {
        if resource.is_namespaced() {
            format!("{}-", name_prefix(resource))
        } else {
            format!("arak-st-{}-{}-", self.run_id, name_prefix(resource))
        }
    }

    pub fn label_selector(&self) -> String {
        format!("{RUN_LABEL}={}", self.run_id)
    }
}

/// Collection URL path of `resource`, in `namespace` when it is namespaced.
pub fn collection_path(resource: Resource, namespace: Option<&str>) -> String {
    let prefix = resource.group().path_prefix();
    match namespace {
        Some(ns) if resource.is_namespaced() => {
            format!("{prefix}/namespaces/{ns}/{}", resource.plural())
        }
        _ => format!("{prefix}/{}", resource.plural()),
    }
}

/// URL query value for a label selector (`/` and `=` escaped).
pub fn encode_selector(selector: &str) -> String {
    selector.replace('/', "%2F").replace('=', "%3D")
}

fn pod_template(labels: &Value) -> Value {
    json!({
        "metadata": {"labels": labels},
        "spec": {
            "containers": [{"name": "pause", "image": PAUSE_IMAGE}],
            "terminationGracePeriodSeconds": 0
        }
    })
}

/// The full manifest of an object of `resource` (only for writable kinds).
pub fn manifest(
    resource: Resource,
    name: &str,
    run_id: &str,
    padding: &str,
    serial: &str,
) -> Value {
    let labels = json!({ RUN_LABEL: run_id });
    let in_data = matches!(resource, Resource::ConfigMaps | Resource::Secrets);
    let mut annotations = json!({ SERIAL_KEY: serial });
    if !in_data && !padding.is_empty() {
        annotations[PADDING_KEY] = json!(padding);
    }
    let mut obj = json!({
        "apiVersion": resource.group().api_version(),
        "kind": resource.kind(),
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
    });
    // Workload kinds select pods by an app label that is theirs alone; the run label rides
    // along on the pod template so objects a controller derives from them carry it too.
    let app = format!("arak-stress-{}", name_prefix(resource));
    let pod_labels = json!({ RUN_LABEL: run_id, "app": app });
    let extra = match resource {
        Resource::ConfigMaps => json!({"data": {"padding": padding}}),
        Resource::Secrets => json!({"type": "Opaque", "stringData": {"padding": padding}}),
        // Headless: a ClusterIP per object would exhaust a small service range.
        Resource::Services => json!({"spec": {
            "clusterIP": "None",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
        }}),
        Resource::ServiceAccounts | Resource::Namespaces => json!({}),
        // A documentation address (TEST-NET-1): stored, never contacted.
        Resource::Endpoints => json!({"subsets": [{
            "addresses": [{"ip": "192.0.2.10"}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
        }]}),
        Resource::LimitRanges => json!({"spec": {"limits": [{
            "type": "Container",
            "default": {"cpu": "100m"},
            "defaultRequest": {"cpu": "50m"}
        }]}}),
        Resource::ResourceQuotas => json!({"spec": {"hard": {"pods": "100"}}}),
        Resource::PersistentVolumeClaims => json!({"spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "resources": {"requests": {"storage": "1Mi"}}
        }}),
        Resource::PersistentVolumes => json!({"spec": {
            "accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": "1Mi"},
            "hostPath": {"path": "/tmp/arak-stress-test"},
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": PV_STORAGE_CLASS
        }}),
        Resource::PodTemplates => json!({"template": pod_template(&pod_labels)}),
        Resource::ReplicationControllers => json!({"spec": {
            "replicas": 0,
            "selector": {"app": app},
            "template": pod_template(&pod_labels)
        }}),
        Resource::Deployments | Resource::ReplicaSets => json!({"spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": app}},
            "template": pod_template(&pod_labels)
        }}),
        Resource::StatefulSets => json!({"spec": {
            "replicas": 0,
            "serviceName": "",
            "selector": {"matchLabels": {"app": app}},
            "template": pod_template(&pod_labels)
        }}),
        Resource::CronJobs => {
            let mut pod = pod_template(&pod_labels);
            pod["spec"]["restartPolicy"] = json!("Never");
            json!({"spec": {
                "schedule": "0 0 1 1 *",
                "suspend": true,
                "jobTemplate": {"spec": {"template": pod}}
            }})
        }
        Resource::Nodes | Resource::Pods => {
            unreachable!("the run never writes {resource}")
        }
    };
    if let (Value::Object(o), Value::Object(e)) = (&mut obj, extra) {
        o.extend(e);
    }
    obj
}

enum Slot {
    Name,
    Serial,
}

/// A JSON body with holes for the object name and a serial number.
pub struct BodyTemplate {
    parts: Vec<Bytes>,
    slots: Vec<Slot>,
    len: usize,
}

impl BodyTemplate {
    pub fn new(resource: Resource, run_id: &str, padding: &str) -> Self {
        let text = manifest(resource, NAME_MARK, run_id, padding, SERIAL_MARK).to_string();
        let mut parts = Vec::new();
        let mut slots = Vec::new();
        let mut rest = text.as_str();
        loop {
            let name_at = rest.find(NAME_MARK);
            let serial_at = rest.find(SERIAL_MARK);
            let (at, slot, mark_len) = match (name_at, serial_at) {
                (Some(n), Some(s)) if s < n => (s, Slot::Serial, SERIAL_MARK.len()),
                (Some(n), _) => (n, Slot::Name, NAME_MARK.len()),
                (None, Some(s)) => (s, Slot::Serial, SERIAL_MARK.len()),
                (None, None) => break,
            };
            parts.push(Bytes::copy_from_slice(&rest.as_bytes()[..at]));
            slots.push(slot);
            rest = &rest[at + mark_len..];
        }
        parts.push(Bytes::copy_from_slice(rest.as_bytes()));
        let len = parts.iter().map(Bytes::len).sum();
        BodyTemplate { parts, slots, len }
    }

    /// The body for one object; `name` and the serial must need no JSON escaping.
    pub fn render(&self, name: &str, serial: u64) -> Bytes {
        let serial = serial.to_string();
        let mut out = Vec::with_capacity(self.len + 2 * name.len() + 40);
        for (i, part) in self.parts.iter().enumerate() {
            out.extend_from_slice(part);
            match self.slots.get(i) {
                Some(Slot::Name) => out.extend_from_slice(name.as_bytes()),
                Some(Slot::Serial) => out.extend_from_slice(serial.as_bytes()),
                None => {}
            }
        }
        Bytes::from(out)
    }
}

/// JSON merge patch that bumps the serial annotation.
pub fn serial_patch(serial: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"metadata":{{"annotations":{{"{SERIAL_KEY}":"{serial}"}}}}}}"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_renders_the_same_json_as_the_manifest() {
        let padding = "x".repeat(100);
        for r in Resource::writable() {
            let t = BodyTemplate::new(r, "run1", &padding);
            let body = t.render("obj-7", 42);
            let got: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(got, manifest(r, "obj-7", "run1", &padding, "42"), "{r}");
            assert_eq!(got["metadata"]["labels"][RUN_LABEL], "run1");
            assert_eq!(got["metadata"]["annotations"][SERIAL_KEY], "42");
        }
    }

    #[test]
    fn padding_sets_object_size() {
        for r in Resource::writable() {
            let small = BodyTemplate::new(r, "run1", "").render("a", 1).len();
            let big = BodyTemplate::new(r, "run1", &"x".repeat(4096))
                .render("a", 1)
                .len();
            assert!(big >= small + 4096, "{r}: {small} -> {big}");
        }
    }

    #[test]
    fn paths_and_names() {
        let n = Naming {
            run_id: "ab12".into(),
        };
        assert_eq!(
            collection_path(Resource::Deployments, Some("ns1")),
            "/apis/apps/v1/namespaces/ns1/deployments"
        );
        assert_eq!(
            collection_path(Resource::PersistentVolumes, Some("ns1")),
            "/api/v1/persistentvolumes"
        );
        assert_eq!(
            collection_path(Resource::CronJobs, None),
            "/apis/batch/v1/cronjobs"
        );
        assert_eq!(n.work_namespace(0), "arak-st-ab12-0");
        assert_eq!(n.object_prefix(Resource::Secrets), "sec-");
        assert_eq!(n.object_prefix(Resource::Namespaces), "arak-st-ab12-ns-");
        assert_eq!(
            encode_selector(&n.label_selector()),
            "arak.io%2Fstress-test%3Dab12"
        );
        let patch: Value = serde_json::from_slice(&serial_patch(9)).unwrap();
        assert_eq!(patch["metadata"]["annotations"][SERIAL_KEY], "9");
    }
}
