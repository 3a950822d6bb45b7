//! Leader election on a `coordination.k8s.io/v1` Lease, so that one arak instance acts.
//!
//! Every change to the Lease is a replace conditional on its resourceVersion: of two
//! instances racing for it, the API server lets exactly one write succeed (the other gets
//! 409 Conflict and stays standby).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use super::Error;

/// Who acts, as far as the last attempt could tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Leader,
    Standby { holder: Option<String> },
}

pub struct LeaderElection {
    api: Api<Lease>,
    lease: String,
    identity: String,
    lease_duration: Duration,
    /// When this instance last wrote the lease as its holder.
    renewed: Option<Instant>,
}

impl LeaderElection {
    pub fn new(
        client: Client,
        namespace: &str,
        lease: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        LeaderElection {
            api: Api::namespaced(client, namespace),
            lease: lease.to_owned(),
            identity: identity.to_owned(),
            lease_duration,
            renewed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether the last renewal is recent enough to act on: a leader that could not renew
    /// within `renew_deadline` must assume another instance may take over.
    pub fn holds(&self, renew_deadline: Duration) -> bool {
        self.renewed.is_some_and(|at| at.elapsed() < renew_deadline)
    }

    /// Acquires the lease if it is free or expired, renews it if held; else reports the
    /// holder.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Role, Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self
            .api
            .get_opt(&self.lease)
            .await
            .map_err(Error::kube(format!("reading Lease {}", self.lease)))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.lease.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, 0, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(self.won()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Role::Standby { holder: None }),
                Err(e) => Err(Error::kube(format!("creating Lease {}", self.lease))(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.identity.as_str());
        let duration = spec
            .lease_duration_seconds
            .map_or(
                self.lease_duration,
                |s| Duration::from_secs(s.max(0) as u64),
            );
        let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
            let age = now.duration_since(renewed.0);
            age > SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
        });
        if !mine && holder.is_some() && !expired {
            self.renewed = None;
            return Ok(Role::Standby { holder });
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(if mine {
            self.spec(spec.acquire_time.map_or(now, |t| t.0), transitions, now)
        } else {
            self.spec(now, transitions + 1, now)
        });
        match self
            .api
            .replace(&self.lease, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(self.won()),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                self.renewed = None;
                Ok(Role::Standby { holder })
            }
            Err(e) => Err(Error::kube(format!("updating Lease {}", self.lease))(e)),
        }
    }

    /// Gives the lease up so that a standby takes over at once rather than after it expires.
    pub async fn release(&mut self) -> Result<(), Error> {
        self.renewed = None;
        let Some(mut lease) = self
            .api
            .get_opt(&self.lease)
            .await
            .map_err(Error::kube(format!("reading Lease {}", self.lease)))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        match self
            .api
            .replace(&self.lease, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            // Someone else wrote it meanwhile: it is no longer ours to release.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(Error::kube(format!("releasing Lease {}", self.lease))(e)),
        }
    }

    fn won(&mut self) -> Role {
        self.renewed = Some(Instant::now());
        Role::Leader
    }

    fn spec(&self, acquired: Timestamp, transitions: i32, now: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}
