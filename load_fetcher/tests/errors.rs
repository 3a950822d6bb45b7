//! Failures that need no cluster: a closed port and a server that accepts connections but
//! never answers must give an error naming the address and the cause, within seconds.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use load_fetcher::{
    ClientOptions, FetchConfig, FetchOptions, PrometheusSource, ScrapeSource, ScrapeTarget,
};

fn closed_port() -> u16 {
    // Bound and dropped: nothing listens there afterwards.
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn options(timeout: Duration) -> ClientOptions {
    ClientOptions {
        timeout,
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn a_closed_prometheus_port_fails_fast_naming_address_and_cause() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let started = Instant::now();
    let error = PrometheusSource::new(&url, &options(Duration::from_secs(5)))
        .unwrap()
        .fetch(&FetchConfig::default(), &FetchOptions::default())
        .await
        .expect_err("nothing listens there");
    let message = error.to_string();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(message.contains(&url), "{message}");
    assert!(message.to_lowercase().contains("refused"), "{message}");
}

#[tokio::test]
async fn a_silent_server_times_out_instead_of_hanging() {
    // Accepts connections (the kernel does, into the backlog) but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let error = PrometheusSource::new(&url, &options(Duration::from_secs(1)))
        .unwrap()
        .fetch(&FetchConfig::default(), &FetchOptions::default())
        .await
        .expect_err("no answer");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    let message = error.to_string();
    assert!(message.contains(&url), "{message}");
    assert!(
        message.contains("timed out") || message.contains("within"),
        "{message}"
    );

    let target: ScrapeTarget = format!("apiserver={url}/metrics").parse().unwrap();
    let started = Instant::now();
    let error = ScrapeSource::new(vec![target], &options(Duration::from_secs(1)))
        .unwrap()
        .fetch(Duration::from_millis(100))
        .await
        .expect_err("no answer");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(error.to_string().contains(&url), "{error}");
}

#[tokio::test]
async fn missing_tls_files_are_named() {
    let client = ClientOptions {
        ca_file: Some("/nonexistent/ca.crt".into()),
        ..ClientOptions::default()
    };
    let error = PrometheusSource::new("https://127.0.0.1:9090", &client).unwrap_err();
    assert!(error.to_string().contains("/nonexistent/ca.crt"), "{error}");
}
