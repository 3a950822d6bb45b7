//! Applies a [`Recommendation`]: APF objects live in the tested cluster, CPU/memory by
//! in-place resize where the cluster and the container allow it, flags and everything else
//! through the StatefulSets' pod templates, rolled one pod at a time with health and SLO
//! checks; rolls back on any failure and finishes or undoes an interrupted change on start.
//! A stop request ([`Context::with_stop`]) is honoured between pods: the pod being changed is
//! finished or rolled back first, and what is left carries an intent for the next run.
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

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::ListParams;
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::{Api, Client};
use recommender::Recommendation;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::roll::RollResult;

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
    stop: watch::Receiver<bool>,
    progress: watch::Sender<Progress>,
}

/// How far [`apply`] or [`recover`] has got, for a caller that watches (see
/// [`Context::with_progress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Nothing is being changed: dropping the call now leaves nothing half-done.
    Idle { since: Instant },
    /// Objects are being changed; the step under way (one pod's change, a soak, a rollback)
    /// began at `step_started` and is bounded by the matching [`Options`] timeout. Dropping
    /// the call now would leave the rest of the change to the intents.
    Changing { step_started: Instant },
}

impl Progress {
    /// When it last moved on.
    pub fn at(&self) -> Instant {
        match *self {
            Progress::Idle { since } => since,
            Progress::Changing { step_started } => step_started,
        }
    }
}

/// Marks a change under way until dropped, on every return path.
struct Changing<'a>(&'a watch::Sender<Progress>);

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.0.send_replace(Progress::Idle {
            since: Instant::now(),
        });
    }
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
            stop: never_stop(),
            progress: watch::channel(Progress::Idle {
                since: Instant::now(),
            })
            .0,
        }
    }

    /// Reports on `progress` when a change starts, each step of it, and when it ends.
    pub fn with_progress(mut self, progress: watch::Sender<Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// A change begins (or its next step): Idle again when the guard is dropped.
    fn changing(&self) -> Changing<'_> {
        self.step();
        Changing(&self.progress)
    }

    /// The next step of the change under way begins.
    fn step(&self) {
        self.progress.send_replace(Progress::Changing {
            step_started: Instant::now(),
        });
    }

    /// Stops changes once `stop` holds true: the pod being changed is finished (Ready and
    /// soaked) or rolled back, then [`apply`] and [`recover`] return instead of starting
    /// the next pod, leaving an intent annotation on every StatefulSet that is not done.
    pub fn with_stop(mut self, stop: watch::Receiver<bool>) -> Self {
        self.stop = stop;
        self
    }

    fn stop_requested(&self) -> bool {
        stop_requested(&self.stop)
    }
}

/// A stop signal that never fires: its sender is gone and it holds false.
fn never_stop() -> watch::Receiver<bool> {
    watch::channel(false).1
}

/// Whether stop was asked for; a dropped sender leaves the last value in force.
fn stop_requested(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
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
    /// A stop was requested: every pod changed so far is finished and verified, and each
    /// StatefulSet in `unfinished` carries an intent annotation (its template already holds
    /// the target, the pods not yet rolled the previous one) that the next [`recover`]
    /// finishes or rolls back. `plan` is empty when the stop came while an earlier change
    /// was being finished.
    Interrupted {
        plan: Plan,
        unfinished: Vec<String>,
        reason: String,
    },
}

/// What [`recover`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovery {
    /// No intent is left: every interrupted change was finished or rolled back.
    Done {
        finished: Vec<String>,
        rolled_back: Vec<String>,
    },
    /// Finishing failed and was rolled back.
    Rejected(Rejection),
    /// A stop was requested; the StatefulSets in `unfinished` keep their intents.
    Interrupted {
        unfinished: Vec<String>,
        reason: String,
    },
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
    match recover(ctx, Some(recommendation)).await? {
        Recovery::Done { .. } => {}
        Recovery::Rejected(rejection) => return Ok(Outcome::Rejected(rejection)),
        Recovery::Interrupted { unfinished, reason } => {
            return Ok(Outcome::Interrupted {
                plan: Plan::default(),
                unfinished,
                reason,
            });
        }
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
    if ctx.stop_requested() {
        return Ok(Outcome::Interrupted {
            unfinished: Vec::new(),
            reason: "stop requested before anything was changed".into(),
            plan,
        });
    }

    let _changing = ctx.changing();
    // The last step finished and verified, for the reason of an interruption.
    let mut last_done = None;
    if !plan.apf.is_empty() {
        let siblings = component_stateful_sets(recommendation, Component::Apiserver);
        if let Some(rejection) = apf::apply_and_verify(ctx, &plan.apf, &siblings).await? {
            return Ok(Outcome::Rejected(rejection));
        }
        last_done = Some("the APF queue lengths".to_owned());
    }
    for (index, sts_plan) in plan.stateful_sets.iter().enumerate() {
        if let Some(done) = &last_done
            && ctx.stop_requested()
        {
            let reason = format!("stop requested after {done}");
            return interrupt(ctx, &plan, index, Vec::new(), reason).await;
        }
        ctx.step();
        let siblings = component_stateful_sets(recommendation, sts_plan.component);
        let rejected = |reason| {
            Outcome::Rejected(Rejection {
                component: sts_plan.component,
                stateful_set: Some(sts_plan.stateful_set.clone()),
                reason,
            })
        };
        if !sts_plan.resizes.is_empty() {
            match resize::resize_pods(ctx, sts_plan, &siblings).await? {
                RollResult::Done => {}
                RollResult::RolledBack(reason) => return Ok(rejected(reason)),
                // In-place resizes leave no intent: each pod's own resources say how far
                // they got, and the next plan resizes the rest.
                RollResult::Interrupted(reason) => {
                    return interrupt(ctx, &plan, index + 1, Vec::new(), reason).await;
                }
            }
        }
        // The template changes by a roll, or, when the plan does not roll, takes the
        // resources the pods were just resized to.
        let template = match (&sts_plan.roll, &sts_plan.template_resources) {
            (Some(change), _) => Some(roll::roll(ctx, sts_plan, change, &siblings).await?),
            (None, Some(change)) => {
                Some(roll::record_template_resources(ctx, sts_plan, change, &siblings).await?)
            }
            (None, None) => None,
        };
        match template {
            None | Some(RollResult::Done) => {}
            Some(RollResult::RolledBack(reason)) => return Ok(rejected(reason)),
            Some(RollResult::Interrupted(reason)) => {
                let unfinished = vec![sts_plan.stateful_set.clone()];
                return interrupt(ctx, &plan, index + 1, unfinished, reason).await;
            }
        }
        last_done = Some(format!("StatefulSet {}", sts_plan.stateful_set));
    }
    Ok(Outcome::Applied { plan })
}

/// Stops the plan before its StatefulSet number `next`: every later roll is staged (its
/// template and intent written, its partition above every pod, so no pod restarts) and so
/// left, like the one already interrupted, for the next [`recover`] to finish or undo. A
/// half-applied recommendation then never looks applied to the next run.
async fn interrupt<S: SloCheck>(
    ctx: &Context<S>,
    plan: &Plan,
    next: usize,
    mut unfinished: Vec<String>,
    reason: String,
) -> Result<Outcome> {
    for sts_plan in &plan.stateful_sets[next..] {
        if let Some(change) = &sts_plan.roll {
            roll::stage(ctx, sts_plan, change).await?;
            roll::event(
                ctx,
                &sts_plan.stateful_set,
                EventType::Normal,
                "Staged",
                format!("{reason}: template staged with its intent, no pod rolled yet"),
            )
            .await;
            unfinished.push(sts_plan.stateful_set.clone());
        }
    }
    tracing::info!(?unfinished, %reason, "stopped on request; the intents stay for the next run");
    Ok(Outcome::Interrupted {
        plan: plan.clone(),
        unfinished,
        reason,
    })
}

/// StatefulSets of the namespace whose change an earlier run left unfinished.
pub async fn unfinished<S: SloCheck>(ctx: &Context<S>) -> Result<Vec<String>> {
    Ok(with_intent(ctx)
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// The StatefulSets carrying an intent annotation, by name, in name order.
async fn with_intent<S: SloCheck>(ctx: &Context<S>) -> Result<Vec<(String, StatefulSet)>> {
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.management.clone(), &ctx.namespace);
    let list = statefulsets
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("listing StatefulSets"))?;
    let mut found = Vec::new();
    for sts in list.items {
        if intent::read(&sts)?.is_some() {
            found.push((sts.metadata.name.clone().unwrap_or_default(), sts));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// Finishes or undoes every change an earlier run left unfinished (an intent annotation on a
/// StatefulSet of the namespace). A change is finished when `recommendation` wants exactly
/// what it was rolling out, and rolled back otherwise (always, without a recommendation).
/// Stops between pods when a stop is requested, keeping the intents of what is left.
pub async fn recover<S: SloCheck>(
    ctx: &Context<S>,
    recommendation: Option<&Recommendation>,
) -> Result<Recovery> {
    let pending = with_intent(ctx).await?;
    let mut finished = Vec::new();
    let mut rolled_back = Vec::new();
    for (index, (name, sts)) in pending.iter().enumerate() {
        let Some(unfinished) = intent::read(sts)? else {
            continue;
        };
        if ctx.stop_requested() {
            return Ok(Recovery::Interrupted {
                unfinished: pending[index..].iter().map(|(n, _)| n.clone()).collect(),
                reason: "stop requested before finishing the unfinished changes".into(),
            });
        }
        let wanted = match recommendation {
            Some(rec) => wanted_by(ctx, rec, sts, &unfinished).await?,
            None => false,
        };
        let siblings = match recommendation {
            Some(rec) => component_stateful_sets(rec, unfinished.component),
            None => vec![name.clone()],
        };
        tracing::info!(stateful_set = %name, step = %unfinished.step, resume = wanted, "recovering an unfinished change");
        let _changing = ctx.changing();
        let result = if wanted {
            roll::resume(ctx, name, &unfinished, &siblings).await?
        } else {
            roll::rollback(
                ctx,
                name,
                &unfinished,
                "superseded: the recommendation now wants something else".into(),
                &siblings,
            )
            .await?
        };
        match result {
            RollResult::Done => finished.push(name.clone()),
            RollResult::RolledBack(reason) if wanted => {
                return Ok(Recovery::Rejected(Rejection {
                    component: unfinished.component,
                    stateful_set: Some(name.clone()),
                    reason,
                }));
            }
            RollResult::RolledBack(_) => rolled_back.push(name.clone()),
            RollResult::Interrupted(reason) => {
                return Ok(Recovery::Interrupted {
                    unfinished: pending[index..].iter().map(|(n, _)| n.clone()).collect(),
                    reason,
                });
            }
        }
    }
    Ok(Recovery::Done {
        finished,
        rolled_back,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_reads_idle_again_however_it_returns() {
        let (tx, rx) = watch::channel(Progress::Idle {
            since: Instant::now(),
        });
        let started = Instant::now();
        let early_return = || -> Result<()> {
            let _changing = Changing(&tx);
            tx.send_replace(Progress::Changing {
                step_started: Instant::now(),
            });
            assert!(matches!(*rx.borrow(), Progress::Changing { .. }));
            Err(Error::NoStatefulSet("apiserver-0".into()))
        };
        assert!(early_return().is_err());
        assert!(matches!(*rx.borrow(), Progress::Idle { since } if since >= started));
    }

    #[test]
    fn without_a_stop_signal_nothing_ever_stops() {
        assert!(!stop_requested(&never_stop()));
    }

    #[test]
    fn a_stop_holds_once_sent_even_after_its_sender_is_gone() {
        let (tx, rx) = watch::channel(false);
        assert!(!stop_requested(&rx));
        tx.send(true).expect("a receiver is alive");
        assert!(stop_requested(&rx));
        drop(tx);
        assert!(stop_requested(&rx));
    }

    #[test]
    fn an_interruption_names_what_the_next_run_finishes() {
        let outcome = Outcome::Interrupted {
            plan: Plan::default(),
            unfinished: vec!["apiserver-1".into(), "apiserver-2".into()],
            reason: "stop requested after StatefulSet apiserver-0".into(),
        };
        let json = serde_json::to_value(&outcome).expect("serialises");
        assert_eq!(json["outcome"], "interrupted");
        assert_eq!(json["unfinished"][1], "apiserver-2");
        assert_eq!(
            serde_json::from_value::<Outcome>(json).expect("parses"),
            outcome
        );
    }
}
