//! The Node object this agent stands for, and keeping it alive: its status and the
//! kube-node-lease Lease the node lifecycle controller reads as the heartbeat.

use crate::error::{Error, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

pub const FIELD_MANAGER: &str = "arak-node-agent";
const LEASE_DURATION_S: i32 = 40;

#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub name: String,
    pub ip: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub capacity: BTreeMap<String, String>,
}

/// Metadata and spec of the Node, for server-side apply.
pub fn node_object(node: &NodeIdentity) -> Value {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), node.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "kubernetes.io/arch".to_string(),
            std::env::consts::ARCH.replace("x86_64", "amd64"),
        ),
        (
            "arak.dev/process-node-agent".to_string(),
            "true".to_string(),
        ),
    ]);
    labels.extend(node.labels.clone());
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels},
        "spec": {"taints": node.taints},
    })
}

/// The Node's status: Ready, its address and its capacity.
pub fn node_status(node: &NodeIdentity, now: Timestamp) -> Value {
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now.to_string(), "lastTransitionTime": now.to_string()})
    };
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name},
        "status": {
            "capacity": node.capacity,
            "allocatable": node.capacity,
            "addresses": [
                {"type": "InternalIP", "address": node.ip},
                {"type": "Hostname", "address": node.name},
            ],
            "conditions": [
                condition("Ready", "True", "NodeAgentReady", "process node agent is running pods as local processes"),
                condition("MemoryPressure", "False", "NodeAgentHasSufficientMemory", "not measured"),
                condition("DiskPressure", "False", "NodeAgentHasNoDiskPressure", "not measured"),
                condition("PIDPressure", "False", "NodeAgentHasSufficientPID", "not measured"),
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": "", "osImage": "process-node-agent",
                "containerRuntimeVersion": "process://", "kubeletVersion": "v1.35.0",
                "kubeProxyVersion": "", "operatingSystem": "linux",
                "architecture": std::env::consts::ARCH.replace("x86_64", "amd64"),
            },
        },
    })
}

pub fn lease_object(node: &NodeIdentity, node_uid: &str, now: Timestamp) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": node.name,
            "namespace": "kube-node-lease",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node_uid}],
        },
        "spec": {
            "holderIdentity": node.name,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "renewTime": micro_time(now),
        },
    })
}

/// MicroTime's wire format: RFC 3339 with exactly six fractional digits.
fn micro_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn apply() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Creates or updates the Node and its status; returns the Node's uid.
pub async fn register(client: &kube::Client, node: &NodeIdentity) -> Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let applied = nodes
        .patch(&node.name, &apply(), &Patch::Apply(node_object(node)))
        .await?;
    report_status(client, node).await?;
    applied.metadata.uid.ok_or(Error::InvalidArgument {
        what: "node",
        value: node.name.clone(),
        reason: "API server returned a Node without uid",
    })
}

pub async fn report_status(client: &kube::Client, node: &NodeIdentity) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch_status(
            &node.name,
            &apply(),
            &Patch::Apply(node_status(node, Timestamp::now())),
        )
        .await?;
    Ok(())
}

/// Renews the Lease every `renew_every` and the Node status every `status_every`, forever.
pub async fn keep_alive(
    client: kube::Client,
    node: NodeIdentity,
    node_uid: String,
    renew_every: Duration,
    status_every: Duration,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut last_status = tokio::time::Instant::now();
    loop {
        let lease = lease_object(&node, &node_uid, Timestamp::now());
        if let Err(e) = leases
            .patch(&node.name, &apply(), &Patch::Apply(lease))
            .await
        {
            tracing::warn!(error = %e, "renewing node lease");
        }
        if last_status.elapsed() >= status_every {
            match report_status(&client, &node).await {
                Ok(()) => last_status = tokio::time::Instant::now(),
                Err(e) => tracing::warn!(error = %e, "reporting node status"),
            }
        }
        tokio::time::sleep(renew_every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeIdentity {
        NodeIdentity {
            name: "master-0".into(),
            ip: "127.0.1.1".into(),
            labels: BTreeMap::from([(
                "node-role.kubernetes.io/control-plane".into(),
                String::new(),
            )]),
            taints: vec![
                crate::node_config::parse_taint("node-role.kubernetes.io/control-plane:NoSchedule")
                    .unwrap(),
            ],
            capacity: BTreeMap::from([("cpu".into(), "2".into()), ("pods".into(), "110".into())]),
        }
    }

    #[test]
    fn node_and_status_deserialize_as_api_objects() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut value = node_object(&node());
        value["status"] = node_status(&node(), now)["status"].clone();
        let n: Node = serde_json::from_value(value).unwrap();
        let labels = n.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "master-0");
        assert!(labels.contains_key("node-role.kubernetes.io/control-plane"));
        assert_eq!(n.spec.unwrap().taints.unwrap()[0].effect, "NoSchedule");
        let status = n.status.unwrap();
        assert_eq!(status.addresses.unwrap()[0].address, "127.0.1.1");
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
    }

    #[test]
    fn lease_renew_time_is_micro_time() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let value = lease_object(&node(), "uid-1", now);
        assert_eq!(value["spec"]["renewTime"], "2027-01-15T08:00:00.000000Z");
        let lease: Lease = serde_json::from_value(value).unwrap();
        assert_eq!(
            lease.spec.unwrap().holder_identity.as_deref(),
            Some("master-0")
        );
    }
}
