//! The client rate limits inside a component configuration file (a KubeSchedulerConfiguration
//! passed with `--config`), where the `--kube-api-qps`/`--kube-api-burst` flags are ignored.

use serde_norway::Value;

/// `clientConnection.qps` and `.burst` as written in the file, when present.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClientConnection {
    pub qps: Option<f64>,
    pub burst: Option<u32>,
}

pub fn client_connection(yaml: &str) -> Result<ClientConnection, String> {
    let document: Value = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
    let connection = document.get("clientConnection");
    Ok(ClientConnection {
        qps: connection
            .and_then(|c| c.get("qps"))
            .and_then(Value::as_f64),
        burst: connection
            .and_then(|c| c.get("burst"))
            .and_then(Value::as_u64)
            .and_then(|b| u32::try_from(b).ok()),
    })
}

/// The file with `clientConnection.qps`/`burst` set and everything else kept (as data: YAML
/// comments and key order are not preserved by the round trip).
pub fn with_client_connection(yaml: &str, qps: f64, burst: u32) -> Result<String, String> {
    let mut document: Value = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
    let Value::Mapping(root) = &mut document else {
        return Err("the file is not a YAML mapping".to_owned());
    };
    let connection = root
        .entry(Value::from("clientConnection"))
        .or_insert_with(|| Value::Mapping(Default::default()));
    let Value::Mapping(connection) = connection else {
        return Err("clientConnection is not a mapping".to_owned());
    };
    // Whole numbers stay integers so the file reads as a person would write it.
    let qps_value = if qps.fract() == 0.0 && qps.abs() < 1e15 {
        Value::from(qps as i64)
    } else {
        Value::from(qps)
    };
    connection.insert(Value::from("qps"), qps_value);
    connection.insert(Value::from("burst"), Value::from(burst));
    serde_norway::to_string(&document).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: /etc/kubernetes/scheduler.conf
  qps: 50
  burst: 100
leaderElection:
  leaderElect: true
";

    #[test]
    fn reads_and_changes_only_the_rate_limits() {
        assert_eq!(
            client_connection(CONFIG).unwrap(),
            ClientConnection {
                qps: Some(50.0),
                burst: Some(100)
            }
        );
        let changed = with_client_connection(CONFIG, 120.5, 240).unwrap();
        assert_eq!(
            client_connection(&changed).unwrap(),
            ClientConnection {
                qps: Some(120.5),
                burst: Some(240)
            }
        );
        let before: Value = serde_norway::from_str(CONFIG).unwrap();
        let after: Value = serde_norway::from_str(&changed).unwrap();
        assert_eq!(
            after["clientConnection"]["kubeconfig"],
            before["clientConnection"]["kubeconfig"]
        );
        assert_eq!(after["leaderElection"], before["leaderElection"]);
        assert_eq!(after["kind"], before["kind"]);
    }

    #[test]
    fn adds_a_missing_client_connection() {
        let changed =
            with_client_connection("kind: KubeSchedulerConfiguration\n", 30.0, 60).unwrap();
        assert!(changed.contains("qps: 30\n"), "{changed}");
        assert_eq!(
            client_connection(&changed).unwrap(),
            ClientConnection {
                qps: Some(30.0),
                burst: Some(60)
            }
        );
        assert!(with_client_connection("- a list\n", 1.0, 2).is_err());
    }
}
