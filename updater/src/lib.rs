//! Applies a [`Recommendation`]: APF objects live in the tested cluster, CPU/memory by
//! in-place resize where the cluster and the container allow it, flags and everything else
//! through the StatefulSets' pod templates, rolled one pod at a time with health and SLO
//! checks; rolls back on any failure and finishes or undoes an interrupted change on start.
//!
//! [`plan`] says what [`apply`] would do without changing anything.

mod access;
pub mod apf;
pub mod args;
pub mod component_config;
mod error;
pub mod health;
pub mod intent;
pub mod plan;
pub mod quantity;
mod resize;
mod roll;

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::ListParams;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client};
use recommender::Recommendation;
use serde::{Deserialize, Serialize};

pub use error::{Error, Result};
pub use health::{ReadinessOnly, SloCheck, SloTarget};
pub use plan::{Component, LiveState, Plan, PlanOptions};

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "arak";

#[derive(Debug, Clone)]
pub struct Options {
    pub plan: PlanOptions,
    /// How long one pod may take to come back Ready with its new template.
    pub pod_ready_timeout: Duration,
    /// How long a component must stay Ready and within its SLOs after each pod.
    pub soak: Duration,
    /// How long an in-place resize may take to be reported done.
    pub resize_timeout: Duration,
    /// How long a rollback may take before it is left to a person.
    pub rollback_timeout: Duration,
    pub poll_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            plan: PlanOptions::default(),
            pod_ready_timeout: Duration::from_secs(300),
            soak: Duration::from_secs(60),
            resize_timeout: Duration::from_secs(120),
            rollback_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// The clients and settings every step needs.
pub struct Context<S> {
    /// The cluster whose namespace holds the control plane's StatefulSets.
    pub management: Client,
    /// The tuned cluster itself, where APF objects live; None leaves APF alone.
    pub tested: Option<Client>,
    pub namespace: String,
    pub options: Options,
    pub slo: S,
    recorder: Recorder,
}

impl<S: SloCheck> Context<S> {
    pub fn new(
        management: Client,
        tested: Option<Client>,
        namespace: impl Into<String>,
        options: Options,
        slo: S,
    ) -> Self {
        let recorder = Recorder::new(
            management.clone(),
            Reporter {
                controller: "arak-updater".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Self {
            management,
            tested,
            namespace: namespace.into(),
            options,
            slo,
            recorder,
        }
    }
}

/// What became of a recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Nothing to change: already applied, or the recommendation holds.
    Unchanged {
        plan: Plan,
    },
    Applied {
        plan: Plan,
    },
    /// A step failed; what it changed was restored and the sequence stopped. The
    /// controller should cool down before trying this recommendation again.
    Rejected(Rejection),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub component: Component,
    /// The StatefulSet whose change failed (None for the cluster-wide APF objects).
    pub stateful_set: Option<String>,
    pub reason: String,
}

/// Reads the live objects a plan needs.
pub async fn read_live<S: SloCheck>(
    ctx: &Context<S>,
    recommendation: &Recommendation,
) -> Result<LiveState> {
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.management.clone(), &ctx.namespace);
    let mut live = LiveState::default();
    let mut names: Vec<&str> = targets(recommendation).map(|(_, sts)| sts).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        if let Some(sts) = statefulsets
            .get_opt(name)
            .await
            .map_err(Error::kube(format!("reading StatefulSet {name}")))?
        {
            live.stateful_sets.insert(name.to_owned(), sts);
        }
    }
    live.pods = Api::<Pod>::namespaced(ctx.management.clone(), &ctx.namespace)
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("listing pods"))?
        .items;
    live.config_maps = Api::<ConfigMap>::namespaced(ctx.management.clone(), &ctx.namespace)
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("listing ConfigMaps"))?
        .items
        .into_iter()
        .filter_map(|cm| Some((cm.metadata.name.clone()?, cm)))
        .collect();
    if let Some(tested) = &ctx.tested {
        live.priority_levels = Some(apf::read_levels(tested).await?);
    }
    live.resize_supported = resize::supported(&ctx.management).await?;
    Ok(live)
}

/// What [`apply`] would change, from the live objects; changes nothing.
pub async fn plan<S: SloCheck>(ctx: &Context<S>, recommendation: &Recommendation) -> Result<Plan> {
    let live = read_live(ctx, recommendation).await?;
    plan::plan(recommendation, &live, &ctx.options.plan)
}

/// Applies the recommendation, first finishing or undoing any interrupted change.
/// Applying one that is already in place changes nothing.
pub async fn apply<S: SloCheck>(
    ctx: &Context<S>,
    recommendation: &Recommendation,
) -> Result<Outcome> {
    if let Some(rejection) = recover(ctx, Some(recommendation)).await? {
        return Ok(Outcome::Rejected(rejection));
    }
    let live = read_live(ctx, recommendation).await?;
    let plan = plan::plan(recommendation, &live, &ctx.options.plan)?;
    if plan.is_empty() {
        return Ok(Outcome::Unchanged { plan });
    }
    access::check(ctx, &plan).await?;
    for component in ctx.options.plan.order.iter().copied() {
        let touched = plan.stateful_sets.iter().any(|s| s.component == component)
            || (component == Component::Apiserver && !plan.apf.is_empty());
        if !touched {
            continue;
        }
        let pods =
            roll::not_ready(ctx, &component_stateful_sets(recommendation, component)).await?;
        if !pods.is_empty() {
            return Err(Error::NotReady {
                component: component.to_string(),
                pods,
            });
        }
    }

    if !plan.apf.is_empty() {
        let siblings = component_stateful_sets(recommendation, Component::Apiserver);
        if let Some(rejection) = apf::apply_and_verify(ctx, &plan.apf, &siblings).await? {
            return Ok(Outcome::Rejected(rejection));
        }
    }
    for sts_plan in &plan.stateful_sets {
        let siblings = component_stateful_sets(recommendation, sts_plan.component);
        let rejected = |reason| {
            Outcome::Rejected(Rejection {
                component: sts_plan.component,
                stateful_set: Some(sts_plan.stateful_set.clone()),
                reason,
            })
        };
        if !sts_plan.resizes.is_empty()
            && let Err(reason) = resize::resize_pods(ctx, sts_plan, &siblings).await?
        {
            return Ok(rejected(reason));
        }
        if let Some(change) = &sts_plan.roll
            && let roll::RollResult::RolledBack(reason) =
                roll::roll(ctx, sts_plan, change, &siblings).await?
        {
            return Ok(rejected(reason));
        }
    }
    Ok(Outcome::Applied { plan })
}

/// Finishes or undoes every change an earlier run left unfinished (an intent annotation on a
/// StatefulSet of the namespace). A change is finished when `recommendation` wants exactly
/// what it was rolling out, and rolled back otherwise (always, without a recommendation).
/// Returns the rejection when finishing failed and was rolled back.
pub async fn recover<S: SloCheck>(
    ctx: &Context<S>,
    recommendation: Option<&Recommendation>,
) -> Result<Option<Rejection>> {
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.management.clone(), &ctx.namespace);
    let list = statefulsets
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("listing StatefulSets"))?;
    for sts in list.items {
        let Some(unfinished) = intent::read(&sts)? else {
            continue;
        };
        let name = sts.metadata.name.clone().unwrap_or_default();
        let wanted = match recommendation {
            Some(rec) => wanted_by(ctx, rec, &sts, &unfinished).await?,
            None => false,
        };
        let siblings = match recommendation {
            Some(rec) => component_stateful_sets(rec, unfinished.component),
            None => vec![name.clone()],
        };
        tracing::info!(stateful_set = %name, step = %unfinished.step, resume = wanted, "recovering an unfinished change");
        let result = if wanted {
            roll::resume(ctx, &name, &unfinished, &siblings).await?
        } else {
            roll::rollback(
                ctx,
                &name,
                &unfinished,
                "superseded: the recommendation now wants something else".into(),
                &siblings,
            )
            .await?
        };
        if let roll::RollResult::RolledBack(reason) = result
            && wanted
        {
            return Ok(Some(Rejection {
                component: unfinished.component,
                stateful_set: Some(name),
                reason,
            }));
        }
    }
    Ok(None)
}

/// Whether planning `recommendation` against the StatefulSet as it was before the
/// interrupted change gives exactly the change the intent describes.
async fn wanted_by<S: SloCheck>(
    ctx: &Context<S>,
    recommendation: &Recommendation,
    sts: &StatefulSet,
    unfinished: &intent::Intent,
) -> Result<bool> {
    let name = sts.metadata.name.clone().unwrap_or_default();
    let mut live = read_live(ctx, recommendation).await?;
    let Some(before) = live.stateful_sets.get_mut(&name) else {
        return Ok(false);
    };
    roll::restore_template(before, unfinished)?;
    if let Some(file) = &unfinished.previous.config_file
        && let Some(data) = live
            .config_maps
            .get_mut(&file.config_map)
            .and_then(|cm| cm.data.as_mut())
    {
        data.insert(file.key.clone(), file.content.clone());
    }
    let replan = plan::plan(recommendation, &live, &ctx.options.plan)?;
    Ok(replan
        .stateful_sets
        .iter()
        .find(|s| s.stateful_set == name)
        .and_then(|s| s.roll.as_ref())
        .is_some_and(|r| r.target == unfinished.target))
}

fn targets(recommendation: &Recommendation) -> impl Iterator<Item = (Component, &str)> {
    let apiservers = recommendation
        .apiservers
        .iter()
        .map(|r| (Component::Apiserver, r.target.stateful_set.as_str()));
    let schedulers = recommendation
        .schedulers
        .iter()
        .map(|r| (Component::Scheduler, r.target.stateful_set.as_str()));
    let controller_managers = recommendation
        .controller_managers
        .iter()
        .map(|r| (Component::ControllerManager, r.target.stateful_set.as_str()));
    apiservers.chain(schedulers).chain(controller_managers)
}

/// Every StatefulSet of a component: its replicas' readiness is judged together.
fn component_stateful_sets(recommendation: &Recommendation, component: Component) -> Vec<String> {
    let mut names: Vec<String> = targets(recommendation)
        .filter(|(c, _)| *c == component)
        .map(|(_, sts)| sts.to_owned())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}
