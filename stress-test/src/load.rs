//! The open loop: sends each request at its scheduled time, whatever happened to the others.
//!
//! One task walks the arrival schedule and spawns a task per request; a semaphore caps the
//! requests in flight, and an arrival that finds it full is dropped and counted, never
//! delayed. Latency runs from the scheduled time, so a slow generator or server shows up as
//! latency instead of silently lowering the rate (no coordinated omission).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Uri};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::arrivals::{ArrivalProcess, Arrivals};
use crate::cluster::{ApiClient, JSON, MERGE_PATCH};
use crate::lifecycle::{ObjectRef, Prepared};
use crate::mix::{Mix, MixEntry, Resource, Verb, WeightedPicker};
use crate::objects::{BodyTemplate, Naming, collection_path, encode_selector, serial_patch};
use crate::profile::RateProfile;
use crate::report::{OpStats, Outcome, Tally};

/// Objects POSTed by the run (or reserved by setup) that DELETEs may remove, oldest first.
type Deletable = Mutex<VecDeque<Uri>>;

enum Action {
    Get(Vec<Uri>),
    List(Vec<Uri>),
    Post {
        /// Collection URI and path, one per namespace.
        collections: Vec<(Uri, String)>,
        name_prefix: String,
        template: BodyTemplate,
        deletable: Option<Arc<Deletable>>,
    },
    Put {
        items: Vec<(Uri, String)>,
        template: BodyTemplate,
    },
    Patch(Vec<Uri>),
    Delete(Arc<Deletable>),
}

struct Op {
    entry: MixEntry,
    action: Action,
    stats: OpStats,
}

/// Everything a request task needs, shared.
pub struct Load {
    api: ApiClient,
    ops: Vec<Op>,
    request_timeout: Duration,
}

fn item_uri(api: &ApiClient, resource: Resource, (ns, name): &ObjectRef) -> anyhow::Result<Uri> {
    api.uri(&format!(
        "{}/{name}",
        collection_path(resource, ns.as_deref())
    ))
}

impl Load {
    /// Turns the mix and what setup prepared into ready-made URLs and body templates.
    pub fn new(
        api: ApiClient,
        mix: &Mix,
        prepared: &Prepared,
        naming: &Naming,
        padding: &str,
        request_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut deletables: std::collections::BTreeMap<Resource, Arc<Deletable>> =
            std::collections::BTreeMap::new();
        for e in mix.entries().iter().filter(|e| e.verb == Verb::Delete) {
            let reserve = prepared
                .reserves
                .get(&e.resource)
                .map(|objs| {
                    objs.iter()
                        .map(|o| item_uri(&api, e.resource, o))
                        .collect::<anyhow::Result<VecDeque<Uri>>>()
                })
                .transpose()?
                .unwrap_or_default();
            deletables.insert(e.resource, Arc::new(Mutex::new(reserve)));
        }
        let selector = encode_selector(&naming.label_selector());
        let mut ops = Vec::with_capacity(mix.entries().len());
        for &entry in mix.entries() {
            let r = entry.resource;
            let pool = || -> anyhow::Result<&Vec<ObjectRef>> {
                prepared
                    .pools
                    .get(&r)
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| anyhow::anyhow!("setup prepared no {r} for {}", entry.verb))
            };
            let namespaces: Vec<Option<&str>> = if r.is_namespaced() {
                prepared
                    .namespaces
                    .iter()
                    .map(|n| Some(n.as_str()))
                    .collect()
            } else {
                vec![None]
            };
            let action = match entry.verb {
                Verb::Get => Action::Get(
                    pool()?
                        .iter()
                        .map(|o| item_uri(&api, r, o))
                        .collect::<anyhow::Result<_>>()?,
                ),
                Verb::List => Action::List(
                    namespaces
                        .iter()
                        .map(|ns| {
                            let path = collection_path(r, *ns);
                            // Cluster-scoped kinds hold other objects too: list the run's.
                            api.uri(&if r.is_namespaced() || r.is_read_only() {
                                format!("{path}?limit=500")
                            } else {
                                format!("{path}?limit=500&labelSelector={selector}")
                            })
                        })
                        .collect::<anyhow::Result<_>>()?,
                ),
                Verb::Post => Action::Post {
                    collections: namespaces
                        .iter()
                        .map(|ns| {
                            let path = collection_path(r, *ns);
                            Ok((api.uri(&path)?, path))
                        })
                        .collect::<anyhow::Result<_>>()?,
                    name_prefix: naming.object_prefix(r),
                    template: BodyTemplate::new(r, &naming.run_id, padding),
                    deletable: deletables.get(&r).cloned(),
                },
                Verb::Put => Action::Put {
                    items: pool()?
                        .iter()
                        .map(|o| Ok((item_uri(&api, r, o)?, o.1.clone())))
                        .collect::<anyhow::Result<_>>()?,
                    template: BodyTemplate::new(r, &naming.run_id, padding),
                },
                Verb::Patch => Action::Patch(
                    pool()?
                        .iter()
                        .map(|o| item_uri(&api, r, o))
                        .collect::<anyhow::Result<_>>()?,
                ),
                Verb::Delete => Action::Delete(deletables[&r].clone()),
            };
            ops.push(Op {
                entry,
                action,
                stats: OpStats::default(),
            });
        }
        Ok(Load {
            api,
            ops,
            request_timeout,
        })
    }

    pub fn entries(&self) -> Vec<MixEntry> {
        self.ops.iter().map(|o| o.entry).collect()
    }

    pub fn tallies(&self) -> Vec<Tally> {
        self.ops.iter().map(|o| o.stats.snapshot()).collect()
    }

    /// Sends one request of op `op` and records how it went.
    async fn execute(
        self: Arc<Self>,
        op: usize,
        pick: u64,
        serial: u64,
        scheduled: Instant,
        _permit: OwnedSemaphorePermit,
    ) {
        let o = &self.ops[op];
        let choose = |n: usize| (pick % n as u64) as usize;
        let mut created: Option<(String, &Arc<Deletable>)> = None;
        let request = match &o.action {
            Action::Get(items) => ApiClient::request(
                Method::GET,
                items[choose(items.len())].clone(),
                JSON,
                Bytes::new(),
            ),
            Action::List(colls) => ApiClient::request(
                Method::GET,
                colls[choose(colls.len())].clone(),
                JSON,
                Bytes::new(),
            ),
            Action::Post {
                collections,
                name_prefix,
                template,
                deletable,
            } => {
                let (uri, path) = &collections[choose(collections.len())];
                let name = format!("{name_prefix}{serial}");
                let body = template.render(&name, serial);
                if let Some(d) = deletable {
                    created = Some((format!("{path}/{name}"), d));
                }
                ApiClient::request(Method::POST, uri.clone(), JSON, body)
            }
            Action::Put { items, template } => {
                let (uri, name) = &items[choose(items.len())];
                ApiClient::request(
                    Method::PUT,
                    uri.clone(),
                    JSON,
                    template.render(name, serial),
                )
            }
            Action::Patch(items) => ApiClient::request(
                Method::PATCH,
                items[choose(items.len())].clone(),
                MERGE_PATCH,
                serial_patch(serial),
            ),
            Action::Delete(deletable) => {
                let next = deletable
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pop_front();
                let Some(uri) = next else {
                    o.stats.record_no_target();
                    return;
                };
                ApiClient::request(Method::DELETE, uri, JSON, Bytes::new())
            }
        };
        o.stats.record_sent();
        let outcome = tokio::time::timeout(self.request_timeout, self.api.send_and_drain(request))
            .await
            .unwrap_or(Outcome::Timeout);
        o.stats.record(outcome, scheduled.elapsed());
        if let (Outcome::Ok, Some((path, deletable))) = (outcome, created)
            && let Ok(uri) = self.api.uri(&path)
        {
            deletable
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(uri);
        }
    }
}

/// How the arrivals are made.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub profile: RateProfile,
    pub process: ArrivalProcess,
    pub seed: u64,
    pub max_inflight: usize,
}

/// How the arrival loop ended.
#[derive(Clone, Copy, Debug)]
pub struct LoopEnd {
    /// Time the arrivals ran for.
    pub elapsed: Duration,
    pub interrupted: bool,
}

/// Runs the schedule to its end or until `stop` turns true, then waits for requests in flight
/// (each ends by its timeout at the latest).
pub async fn run(
    load: Arc<Load>,
    mix: &Mix,
    schedule: &Schedule,
    mut stop: watch::Receiver<bool>,
) -> LoopEnd {
    let picker = WeightedPicker::new(mix);
    let mut rng = Pcg64Mcg::seed_from_u64(schedule.seed);
    let arrival_rng =
        Pcg64Mcg::seed_from_u64(schedule.seed.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15);
    let arrivals = Arrivals::new(schedule.profile.clone(), schedule.process, arrival_rng);
    let max_inflight = schedule.max_inflight.clamp(1, Semaphore::MAX_PERMITS);
    let inflight = Arc::new(Semaphore::new(max_inflight));
    let start = Instant::now();
    let mut interrupted = false;
    let mut since_yield = 0u32;
    for (serial, t) in arrivals.enumerate() {
        if *stop.borrow() {
            interrupted = true;
            break;
        }
        let at = start + Duration::from_secs_f64(t);
        if at > Instant::now() {
            since_yield = 0;
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    interrupted = true;
                    break;
                }
                _ = tokio::time::sleep_until(at) => {}
            }
        } else {
            // Behind schedule: keep sending, but let other tasks on this worker run.
            since_yield += 1;
            if since_yield >= 64 {
                since_yield = 0;
                tokio::task::yield_now().await;
            }
        }
        let op = picker.pick(rng.random());
        let pick: u64 = rng.random();
        match inflight.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(load.clone().execute(op, pick, serial as u64, at, permit));
            }
            Err(_) => load.ops[op].stats.record_dropped(),
        }
    }
    let elapsed = if interrupted {
        start.elapsed()
    } else {
        schedule.profile.duration()
    };
    // Every request ends by its timeout, so this wait is bounded.
    let permits = u32::try_from(max_inflight).unwrap_or(u32::MAX);
    let _ = inflight.acquire_many(permits).await;
    LoopEnd {
        elapsed,
        interrupted,
    }
}
