//! APF PriorityLevelConfigurations in the tested cluster: queue lengths change live, by
//! server-side apply, with no apiserver restart.

use k8s_openapi::api::flowcontrol::v1::PriorityLevelConfiguration;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::error::{Error, Result};
use crate::health::SloCheck;
use crate::plan::{Component, LevelChange};
use crate::{Context, FIELD_MANAGER, Rejection, roll};

/// Without it the apiserver puts its suggested spec back on the suggested levels.
const AUTOUPDATE_ANNOTATION: &str = "apf.kubernetes.io/autoupdate-spec";

/// How a queuing level holds one flow's waiting requests. APF deals each flow a hand of
/// queues and rejects when the shortest of them is full, so a flow that overloads the
/// apiserver alone can fill hand size × queue length limit, not every queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRoom {
    pub hand_size: i32,
    pub queue_length_limit: i32,
}

impl FlowRoom {
    /// The level's queuing, with the API's defaults for fields left unset; `None` when the
    /// level does not queue.
    pub fn of(level: &PriorityLevelConfiguration) -> Option<FlowRoom> {
        let queuing = level
            .spec
            .as_ref()?
            .limited
            .as_ref()?
            .limit_response
            .as_ref()?
            .queuing
            .as_ref()?;
        Some(FlowRoom {
            hand_size: queuing.hand_size.unwrap_or(8).max(1),
            queue_length_limit: queuing.queue_length_limit.unwrap_or(50),
        })
    }

    /// Requests one flow may have waiting.
    pub fn room(&self) -> i64 {
        i64::from(self.hand_size) * i64::from(self.queue_length_limit)
    }

    /// The queue length limit that gives a flow at least `room`, spread over its hand.
    pub fn limit_for(&self, room: u32) -> i32 {
        let hand = i64::from(self.hand_size);
        i32::try_from((i64::from(room) + hand - 1) / hand)
            .unwrap_or(i32::MAX)
            .max(1)
    }
}

pub async fn read_levels(tested: &Client) -> Result<Vec<PriorityLevelConfiguration>> {
    Ok(Api::<PriorityLevelConfiguration>::all(tested.clone())
        .list(&ListParams::default())
        .await
        .map_err(Error::kube(
            "listing PriorityLevelConfigurations of the tested cluster",
        ))?
        .items)
}

/// Sets each level's queue length limit to its target, or back to what it was.
async fn set_queue_lengths(tested: &Client, changes: &[LevelChange], forward: bool) -> Result<()> {
    let api = Api::<PriorityLevelConfiguration>::all(tested.clone());
    // Forced: the apiserver's own config producer owns these fields until arak takes them.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for change in changes {
        let limit = if forward {
            change.to_queue_length_limit
        } else {
            change.from_queue_length_limit
        };
        let level = json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration",
            "metadata": {"name": change.name, "annotations": {AUTOUPDATE_ANNOTATION: "false"}},
            "spec": {
                "type": "Limited",
                "limited": {"limitResponse": {"type": "Queue", "queuing": {"queueLengthLimit": limit}}},
            },
        });
        api.patch(&change.name, &params, &Patch::Apply(&level))
            .await
            .map_err(Error::kube(format!(
                "applying PriorityLevelConfiguration {} in the tested cluster",
                change.name
            )))?;
    }
    Ok(())
}

/// Applies the queue lengths, soaks the apiservers, and puts the old lengths back if they
/// do not stay Ready and within their SLOs.
pub(crate) async fn apply_and_verify<S: SloCheck>(
    ctx: &Context<S>,
    changes: &[LevelChange],
    apiservers: &[String],
) -> Result<Option<Rejection>> {
    let Some(tested) = &ctx.tested else {
        return Ok(None);
    };
    set_queue_lengths(tested, changes, true).await?;
    match roll::soak(ctx, Component::Apiserver, None, apiservers).await {
        Ok(()) => Ok(None),
        Err(reason) => {
            set_queue_lengths(tested, changes, false).await?;
            Ok(Some(Rejection {
                component: Component::Apiserver,
                stateful_set: None,
                reason,
            }))
        }
    }
}
