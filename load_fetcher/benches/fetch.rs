//! A full fetch (every instant query, `up` lookback and 10 minutes of history) against a
//! real Prometheus: `PROMETHEUS_URL` if set, else a loopback cluster the harness starts.
//! Without either it prints why and measures nothing.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use harness::{Cluster, ClusterOptions, Outcome};
use load_fetcher::{ClientOptions, FetchConfig, FetchOptions, HistoryOptions, PrometheusSource};

fn full_fetch(c: &mut Criterion) {
    // Kept alive for the whole benchmark; dropping it stops the cluster.
    let mut _cluster = None;
    let url = match std::env::var("PROMETHEUS_URL") {
        Ok(url) => url,
        Err(_) => match Cluster::up(&ClusterOptions {
            nodes: 1,
            ..ClusterOptions::default()
        }) {
            Ok(Outcome::Ready(cluster)) => {
                let url = cluster.prometheus_url().to_owned();
                _cluster = Some(cluster);
                // Let Prometheus scrape every component a few times first.
                std::thread::sleep(Duration::from_secs(30));
                url
            }
            Ok(Outcome::Skip(reason)) => {
                eprintln!("SKIPPED full_fetch: no PROMETHEUS_URL and {reason}");
                return;
            }
            Err(e) => panic!("starting the loopback cluster: {e}"),
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let source = PrometheusSource::new(&url, &ClientOptions::default()).expect("client");
    let config = FetchConfig::default();
    let options = FetchOptions {
        window: Duration::from_secs(60),
        history: Some(HistoryOptions {
            range: Duration::from_secs(600),
            step: Duration::from_secs(15),
        }),
        at_unix_s: None,
    };
    let snapshot = runtime
        .block_on(source.fetch(&config, &options))
        .expect("a first fetch");
    assert!(!snapshot.apiservers.is_empty(), "{:?}", snapshot.findings);
    c.bench_function("full_fetch_prometheus_window1m_history10m", |b| {
        b.iter(|| {
            runtime
                .block_on(source.fetch(&config, &options))
                .expect("fetch")
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(10));
    targets = full_fetch
}
criterion_main!(benches);
