//! The data-quality gate's vocabulary: findings that name the metric and the replica.

use recommender::snapshot::{Finding, FindingKind, Replica, Severity};

/// Findings collected while a snapshot is assembled.
#[derive(Debug, Default)]
pub struct Findings(Vec<Finding>);

impl Findings {
    pub fn warn(
        &mut self,
        kind: FindingKind,
        metric: &str,
        replica: Option<&Replica>,
        detail: String,
    ) {
        self.push(kind, Severity::Warning, metric, replica, detail);
    }

    pub fn block(
        &mut self,
        kind: FindingKind,
        metric: &str,
        replica: Option<&Replica>,
        detail: String,
    ) {
        self.push(kind, Severity::Blocking, metric, replica, detail);
    }

    fn push(
        &mut self,
        kind: FindingKind,
        severity: Severity,
        metric: &str,
        replica: Option<&Replica>,
        detail: String,
    ) {
        let finding = Finding {
            kind,
            severity,
            metric: metric.to_owned(),
            replica: replica.map(|r| r.name.clone()),
            detail,
        };
        // One per metric and replica is enough for a person to act on.
        if !self.0.iter().any(|f| {
            f.kind == finding.kind && f.metric == finding.metric && f.replica == finding.replica
        }) {
            self.0.push(finding);
        }
    }

    pub fn into_vec(self) -> Vec<Finding> {
        self.0
    }
}
