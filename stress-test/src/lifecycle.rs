//! Before and after the load: creating the objects the mix needs, and removing everything
//! the run (or an earlier one) created.
//!
//! Everything created carries the `arak.io/stress-test=<run-id>` label, and every namespaced
//! object lives in a labelled namespace, so cleanup needs no record of what was made: it asks
//! the apiserver for the label.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cluster::{ApiClient, JSON, MERGE_PATCH, item_names, status_message};
use crate::mix::{Mix, Resource, Verb};
use crate::objects::{BodyTemplate, Naming, RUN_LABEL, collection_path, encode_selector};

/// Requests setup and cleanup keep in flight at once.
const SETUP_CONCURRENCY: usize = 16;
/// Tries of a setup request the apiserver answers with 429.
const SETUP_RETRIES: u32 = 20;

/// How large the prepared world is.
#[derive(Clone, Debug)]
pub struct SetupPlan {
    /// Namespaces the namespaced objects are spread over.
    pub namespaces: usize,
    /// Objects per kind (per namespace for namespaced kinds) for GET, PUT and PATCH.
    pub pool_size: usize,
    /// Objects per kind created up front for DELETEs to remove before POSTs have made any.
    pub delete_reserve: usize,
    pub padding: String,
    pub request_timeout: Duration,
}

/// An object the load will address: namespace (for namespaced kinds) and name.
pub type ObjectRef = (Option<String>, String);

/// What setup made or found.
#[derive(Clone, Debug, Default)]
pub struct Prepared {
    pub namespaces: Vec<String>,
    /// Objects for GET, PUT and PATCH, by kind.
    pub pools: BTreeMap<Resource, Vec<ObjectRef>>,
    /// Objects for DELETE to start on, by kind.
    pub reserves: BTreeMap<Resource, Vec<ObjectRef>>,
}

/// Creates the run's namespaces and objects, and finds nodes and pods to read.
/// On error, what was created so far is left for `cleanup` to remove.
pub async fn setup(
    api: &ApiClient,
    mix: &Mix,
    naming: &Naming,
    plan: &SetupPlan,
) -> anyhow::Result<Prepared> {
    let mut prepared = Prepared {
        namespaces: (0..plan.namespaces.max(1))
            .map(|i| naming.work_namespace(i))
            .collect(),
        ..Prepared::default()
    };
    let ns_template = BodyTemplate::new(Resource::Namespaces, &naming.run_id, "");
    let creates: Vec<(String, Bytes)> = prepared
        .namespaces
        .iter()
        .map(|ns| {
            (
                collection_path(Resource::Namespaces, None),
                ns_template.render(ns, 0),
            )
        })
        .collect();
    create_all(api, creates, plan.request_timeout)
        .await
        .context("creating the run's namespaces")?;

    let mut creates = Vec::new();
    for resource in mix.resources() {
        if resource.is_read_only() {
            if mix.has(Verb::Get, resource) {
                let found = discover(api, resource, plan.request_timeout).await?;
                prepared.pools.insert(resource, found);
            }
            continue;
        }
        let template = BodyTemplate::new(resource, &naming.run_id, &plan.padding);
        let prefix = naming.object_prefix(resource);
        let mut make = |tag: &str, count: usize| -> Vec<ObjectRef> {
            let mut refs = Vec::new();
            let namespaces: Vec<Option<&str>> = if resource.is_namespaced() {
                prepared
                    .namespaces
                    .iter()
                    .map(|n| Some(n.as_str()))
                    .collect()
            } else {
                vec![None]
            };
            for ns in namespaces {
                for i in 0..count {
                    let name = format!("{prefix}{tag}{i}");
                    creates.push((collection_path(resource, ns), template.render(&name, 0)));
                    refs.push((ns.map(str::to_owned), name));
                }
            }
            refs
        };
        if Verb::ALL
            .iter()
            .any(|v| v.needs_pool() && mix.has(*v, resource))
        {
            let pool = make("p", plan.pool_size.max(1));
            prepared.pools.insert(resource, pool);
        }
        if mix.has(Verb::Delete, resource) && plan.delete_reserve > 0 {
            let per_ns = if resource.is_namespaced() {
                plan.delete_reserve.div_ceil(prepared.namespaces.len())
            } else {
                plan.delete_reserve
            };
            let reserve = make("r", per_ns);
            prepared.reserves.insert(resource, reserve);
        }
    }
    tracing::info!(objects = creates.len(), "creating the run's objects");
    create_all(api, creates, plan.request_timeout)
        .await
        .context("creating the run's objects")?;
    Ok(prepared)
}

/// Finds up to 100 existing nodes or pods for GETs.
async fn discover(
    api: &ApiClient,
    resource: Resource,
    timeout: Duration,
) -> anyhow::Result<Vec<ObjectRef>> {
    let path = format!("{}?limit=100", collection_path(resource, None));
    let (_, body) = api
        .call_ok(Method::GET, &path, JSON, Bytes::new(), timeout, &[])
        .await
        .with_context(|| format!("finding {resource} for GET {resource}"))?;
    let found = item_names(&body)?;
    if found.is_empty() {
        bail!(
            "the mix has GET {resource}, but this identity sees no {resource} in the cluster; \
             remove that entry from the mix"
        );
    }
    Ok(found)
}

/// POSTs every body to its collection, `SETUP_CONCURRENCY` at a time. Existing objects are fine.
async fn create_all(
    api: &ApiClient,
    creates: Vec<(String, Bytes)>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    let mut pending = creates.into_iter();
    loop {
        while tasks.len() < SETUP_CONCURRENCY {
            let Some((path, body)) = pending.next() else {
                break;
            };
            let api = api.clone();
            tasks.spawn(async move {
                // Setup is not what is measured: wait out APF rejections instead of failing.
                for attempt in 1..=SETUP_RETRIES {
                    let (status, _) = api
                        .call_ok(
                            Method::POST,
                            &path,
                            JSON,
                            body.clone(),
                            timeout,
                            &[StatusCode::CONFLICT, StatusCode::TOO_MANY_REQUESTS],
                        )
                        .await?;
                    if status != StatusCode::TOO_MANY_REQUESTS {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                }
                bail!("POST {path}: still HTTP 429 after {SETUP_RETRIES} tries")
            });
        }
        match tasks.join_next().await {
            None => return Ok(()),
            Some(res) => res.context("setup task panicked")??,
        }
    }
}

/// Which runs to clean up after.
#[derive(Clone, Debug)]
pub enum CleanupScope {
    /// Objects of one run.
    Run(String),
    /// Objects of every run (any value of the label).
    AllRuns,
}

impl CleanupScope {
    fn selector(&self) -> String {
        match self {
            CleanupScope::Run(id) => format!("{RUN_LABEL}={id}"),
            CleanupScope::AllRuns => RUN_LABEL.to_owned(),
        }
    }
}

/// A labelled object still present.
#[derive(Debug)]
struct Leftover {
    resource: Resource,
    namespace: Option<String>,
    name: String,
    deleting_since: Option<String>,
    finalizers: Vec<String>,
}

/// Finalizers that only guard a volume or claim still in use; the run's never are.
const PROTECTION_FINALIZERS: [&str; 2] = [
    "kubernetes.io/pv-protection",
    "kubernetes.io/pvc-protection",
];

/// Removes every labelled object in scope and waits until none is left.
///
/// Namespaced objects are removed with their labelled namespace; PVs directly. Volumes and
/// claims stuck on protection finalizers (no controller to drop them) get the finalizers
/// removed. Fails if objects remain at `deadline` or the apiserver stays unreachable.
pub async fn cleanup(
    api: &ApiClient,
    scope: &CleanupScope,
    kinds: &[Resource],
    request_timeout: Duration,
    wait: Duration,
) -> anyhow::Result<CleanupSummary> {
    let selector = encode_selector(&scope.selector());
    let deadline = Instant::now() + wait;
    let unreachable_limit = Duration::from_secs(10);
    let mut last_reachable = Instant::now();
    let mut summary = CleanupSummary::default();
    let mut first_round = true;
    let mut collections_done = false;
    loop {
        let leftovers = match list_leftovers(api, kinds, &selector, request_timeout).await {
            Ok((l, unchecked)) => {
                last_reachable = Instant::now();
                summary.unchecked = unchecked;
                l
            }
            Err(e) => {
                if last_reachable.elapsed() > unreachable_limit || Instant::now() > deadline {
                    return Err(e.context(format!(
                        "cleanup could not list the run's objects; run `stress-test cleanup` \
                         when the apiserver at {} is back",
                        api.url
                    )));
                }
                tracing::warn!("cleanup: {e:#}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if first_round {
            summary.found = leftovers.len();
            first_round = false;
        }
        if leftovers.is_empty() {
            return Ok(summary);
        }
        if Instant::now() > deadline {
            bail!(
                "cleanup gave up after {wait:?} with labelled objects left: {}{}",
                summarise(&leftovers),
                if leftovers
                    .iter()
                    .any(|l| l.resource == Resource::Namespaces && l.deleting_since.is_some())
                {
                    " (namespaces stuck terminating: is kube-controller-manager running?)"
                } else {
                    ""
                }
            );
        }
        if collections_done {
            delete_each(api, leftovers.iter(), request_timeout).await;
        } else {
            // One DELETE per kind and namespace empties the namespaces quickly; objects it
            // missed are deleted one by one in the next rounds.
            delete_collections(api, &leftovers, &selector, request_timeout).await;
            let cluster_scoped = leftovers.iter().filter(|l| !l.resource.is_namespaced());
            delete_each(api, cluster_scoped, request_timeout).await;
            collections_done = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What cleanup found and could not look at.
#[derive(Debug, Default)]
pub struct CleanupSummary {
    /// Labelled objects present when cleanup started.
    pub found: usize,
    /// Kinds this identity may not list, with the apiserver's reason.
    pub unchecked: Vec<(Resource, String)>,
}

/// Labelled objects of `kinds`, and the kinds the identity may not list (those are skipped:
/// an identity that cannot list a kind cannot have created any of it either).
async fn list_leftovers(
    api: &ApiClient,
    kinds: &[Resource],
    selector: &str,
    timeout: Duration,
) -> anyhow::Result<(Vec<Leftover>, Vec<(Resource, String)>)> {
    let mut out = Vec::new();
    let mut unchecked = Vec::new();
    for &resource in kinds {
        let path = format!(
            "{}?labelSelector={selector}",
            collection_path(resource, None)
        );
        let (status, body) = api
            .call(Method::GET, &path, JSON, Bytes::new(), timeout)
            .await?;
        if matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
        ) {
            unchecked.push((resource, status_message(&body)));
            continue;
        }
        if !status.is_success() {
            bail!("GET {path}: HTTP {status}: {}", status_message(&body));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).context("decoding a list")?;
        for item in v["items"].as_array().into_iter().flatten() {
            let meta = &item["metadata"];
            let Some(name) = meta["name"].as_str() else {
                continue;
            };
            out.push(Leftover {
                resource,
                namespace: meta["namespace"].as_str().map(str::to_owned),
                name: name.to_owned(),
                deleting_since: meta["deletionTimestamp"].as_str().map(str::to_owned),
                finalizers: meta["finalizers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect(),
            });
        }
    }
    Ok((out, unchecked))
}

async fn delete_collections(
    api: &ApiClient,
    leftovers: &[Leftover],
    selector: &str,
    timeout: Duration,
) {
    let mut targets: Vec<String> = leftovers
        .iter()
        .filter(|l| l.resource.is_namespaced())
        .map(|l| {
            format!(
                "{}?labelSelector={selector}",
                collection_path(l.resource, l.namespace.as_deref())
            )
        })
        .collect();
    targets.sort();
    targets.dedup();
    run_all(api, targets, Method::DELETE, Bytes::new(), JSON, timeout).await;
}

/// Deletes objects one by one, and lifts protection finalizers from volumes and claims already
/// being deleted.
async fn delete_each<'a>(
    api: &ApiClient,
    leftovers: impl Iterator<Item = &'a Leftover>,
    timeout: Duration,
) {
    let mut deletes = Vec::new();
    let mut unblock = Vec::new();
    for l in leftovers {
        let path = format!(
            "{}/{}",
            collection_path(l.resource, l.namespace.as_deref()),
            l.name
        );
        if l.deleting_since.is_none() {
            deletes.push(path);
        } else if !l.finalizers.is_empty()
            && l.finalizers
                .iter()
                .all(|f| PROTECTION_FINALIZERS.contains(&f.as_str()))
        {
            unblock.push(path);
        }
    }
    run_all(api, deletes, Method::DELETE, Bytes::new(), JSON, timeout).await;
    let patch = Bytes::from_static(br#"{"metadata":{"finalizers":null}}"#);
    run_all(api, unblock, Method::PATCH, patch, MERGE_PATCH, timeout).await;
}

async fn run_all(
    api: &ApiClient,
    paths: Vec<String>,
    method: Method,
    body: Bytes,
    content_type: &'static str,
    timeout: Duration,
) {
    let mut tasks = JoinSet::new();
    let mut pending = paths.into_iter();
    loop {
        while tasks.len() < SETUP_CONCURRENCY {
            let Some(path) = pending.next() else { break };
            let (api, method, body) = (api.clone(), method.clone(), body.clone());
            tasks.spawn(async move {
                match api
                    .call(method.clone(), &path, content_type, body, timeout)
                    .await
                {
                    Ok((status, _)) if status.is_success() || status == StatusCode::NOT_FOUND => {}
                    Ok((status, body)) => tracing::debug!(
                        "cleanup {method} {path}: HTTP {status}: {}",
                        status_message(&body)
                    ),
                    Err(e) => tracing::debug!("cleanup: {e:#}"),
                }
            });
        }
        if tasks.join_next().await.is_none() {
            return;
        }
    }
}

fn summarise(leftovers: &[Leftover]) -> String {
    let mut by_kind: BTreeMap<Resource, usize> = BTreeMap::new();
    for l in leftovers {
        *by_kind.entry(l.resource).or_default() += 1;
    }
    by_kind
        .iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect::<Vec<_>>()
        .join(", ")
}
