//! Before changing anything, ask both clusters whether this identity may make every change
//! the plan needs, so a missing permission stops the run before anything is half applied.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::Context;
use crate::error::{Error, Result};
use crate::health::SloCheck;
use crate::plan::Plan;

struct Need {
    tested: bool,
    group: &'static str,
    resource: &'static str,
    subresource: Option<&'static str>,
    verb: &'static str,
    /// How the error names it.
    label: &'static str,
}

pub(crate) async fn check<S: SloCheck>(ctx: &Context<S>, plan: &Plan) -> Result<()> {
    let need = |tested, group, resource, subresource, verb, label| Need {
        tested,
        group,
        resource,
        subresource,
        verb,
        label,
    };
    let mut needs = Vec::new();
    if plan.stateful_sets.iter().any(|s| s.roll.is_some()) {
        needs.push(need(
            false,
            "apps",
            "statefulsets",
            None,
            "patch",
            "statefulsets",
        ));
        // A pod stuck on a failed template is deleted during a rollback.
        needs.push(need(false, "", "pods", None, "delete", "pods"));
    }
    let config_files = plan
        .stateful_sets
        .iter()
        .filter_map(|s| s.roll.as_ref())
        .any(|r| r.target.config_file != r.previous.config_file);
    if config_files {
        needs.push(need(false, "", "configmaps", None, "patch", "configmaps"));
    }
    if plan.stateful_sets.iter().any(|s| !s.resizes.is_empty()) {
        needs.push(need(
            false,
            "",
            "pods",
            Some("resize"),
            "patch",
            "pods/resize",
        ));
    }
    if !plan.apf.is_empty() {
        needs.push(need(
            true,
            "flowcontrol.apiserver.k8s.io",
            "prioritylevelconfigurations",
            None,
            "patch",
            "prioritylevelconfigurations",
        ));
    }
    for need in needs {
        let (client, namespace, scope) = if need.tested {
            match &ctx.tested {
                Some(client) => (client, None, "the tested cluster".to_owned()),
                None => continue,
            }
        } else {
            (
                &ctx.management,
                Some(ctx.namespace.clone()),
                format!("namespace {} of the management cluster", ctx.namespace),
            )
        };
        if !allowed(client, namespace, &need).await? {
            return Err(Error::Forbidden {
                verb: need.verb,
                resource: need.label,
                scope,
            });
        }
    }
    Ok(())
}

async fn allowed(client: &Client, namespace: Option<String>, need: &Need) -> Result<bool> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace,
                group: Some(need.group.to_owned()),
                resource: Some(need.resource.to_owned()),
                subresource: need.subresource.map(str::to_owned),
                verb: Some(need.verb.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(Error::kube(
            "asking the apiserver what this identity may do",
        ))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}
