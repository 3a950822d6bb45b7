//! Parsing of the node's labels and taints as given on the command line.

use crate::error::{Error, Result};
use k8s_openapi::api::core::v1::Taint;

/// `key=value` (value may be empty) into a label pair.
pub fn parse_label(text: &str) -> Result<(String, String)> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    if key.is_empty() {
        return Err(Error::InvalidArgument {
            what: "label",
            value: text.into(),
            reason: "expected key=value",
        });
    }
    Ok((key.into(), value.into()))
}

/// `key[=value]:Effect` into a taint, as `kubectl taint` writes it.
pub fn parse_taint(text: &str) -> Result<Taint> {
    let invalid = |reason| Error::InvalidArgument {
        what: "taint",
        value: text.into(),
        reason,
    };
    let (key_value, effect) = text
        .rsplit_once(':')
        .ok_or_else(|| invalid("expected key[=value]:Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(invalid(
            "effect must be NoSchedule, PreferNoSchedule or NoExecute",
        ));
    }
    let (key, value) = match key_value.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string()).filter(|v| !v.is_empty())),
        None => (key_value, None),
    };
    if key.is_empty() {
        return Err(invalid("empty key"));
    }
    Ok(Taint {
        key: key.into(),
        value,
        effect: effect.into(),
        time_added: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(
            parse_label("node-role.kubernetes.io/control-plane=").unwrap(),
            (
                "node-role.kubernetes.io/control-plane".into(),
                String::new()
            )
        );
        assert_eq!(parse_label("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_label("bare").unwrap(), ("bare".into(), String::new()));
        assert!(parse_label("=x").is_err());
    }

    #[test]
    fn taints() {
        let t = parse_taint("node-role.kubernetes.io/control-plane:NoSchedule").unwrap();
        assert_eq!(t.key, "node-role.kubernetes.io/control-plane");
        assert_eq!(t.value, None);
        assert_eq!(t.effect, "NoSchedule");
        let t = parse_taint("dedicated=masters:NoExecute").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value.as_deref()),
            ("dedicated", Some("masters"))
        );
        assert!(parse_taint("k=v").is_err());
        assert!(parse_taint("k=v:Sometimes").is_err());
        assert!(parse_taint(":NoSchedule").is_err());
    }
}
