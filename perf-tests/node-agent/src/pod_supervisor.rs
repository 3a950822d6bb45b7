//! Watches the pods bound to this node and keeps one worker per pod.

use crate::pod_worker::{self, AgentContext, PodSighting};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Runs until `shutdown` turns true, then waits for every worker to stop its processes.
pub async fn run(ctx: Arc<AgentContext>, mut shutdown: watch::Receiver<bool>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut events = watcher(pods, config).default_backoff().boxed();
    let mut workers: HashMap<String, watch::Sender<PodSighting>> = HashMap::new();
    let mut tasks = JoinSet::new();
    // Pods seen during a re-list; the ones not seen vanished while the watch was down.
    let mut relisted: Option<HashSet<String>> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "pod worker failed");
                }
            }
            event = events.next() => match event {
                None => break,
                Some(Err(e)) => tracing::warn!(error = %e, "watching pods"),
                Some(Ok(watcher::Event::Init)) => relisted = Some(HashSet::new()),
                Some(Ok(watcher::Event::InitApply(pod))) => {
                    if let (Some(seen), Some(uid)) = (relisted.as_mut(), pod.metadata.uid.clone()) {
                        seen.insert(uid);
                    }
                    sight(&ctx, &shutdown, &mut workers, &mut tasks, pod);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    let seen = relisted.take().unwrap_or_default();
                    for (_, tx) in workers.iter().filter(|(uid, _)| !seen.contains(*uid)) {
                        let _ = tx.send(PodSighting::Gone);
                    }
                }
                Some(Ok(watcher::Event::Apply(pod))) => sight(&ctx, &shutdown, &mut workers, &mut tasks, pod),
                Some(Ok(watcher::Event::Delete(pod))) => {
                    if let Some(tx) = pod.metadata.uid.as_ref().and_then(|uid| workers.get(uid)) {
                        let _ = tx.send(PodSighting::Gone);
                    }
                }
            }
        }
        workers.retain(|_, tx| !tx.is_closed());
    }
    tracing::info!(pods = tasks.len(), "stopping pod workers");
    while tasks.join_next().await.is_some() {}
}

fn sight(
    ctx: &Arc<AgentContext>,
    shutdown: &watch::Receiver<bool>,
    workers: &mut HashMap<String, watch::Sender<PodSighting>>,
    tasks: &mut JoinSet<()>,
    pod: Pod,
) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let sighting = PodSighting::Present(Arc::new(pod));
    match workers.get(&uid) {
        Some(tx) => {
            let _ = tx.send(sighting);
        }
        None => {
            let (tx, rx) = watch::channel(sighting);
            tasks.spawn(pod_worker::run(ctx.clone(), rx, shutdown.clone()));
            workers.insert(uid, tx);
        }
    }
}
