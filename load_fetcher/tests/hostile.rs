//! Hostile text for the parsers a user or a server feeds the fetcher: durations, the fetch
//! configuration file and the Prometheus exposition format. None may panic; what they
//! accept must be usable.
//!
//! Few cases per CI run; the long fuzz job sets `PROPTEST_CASES`, e.g.
//! `PROPTEST_CASES=100000 cargo test --release -p load_fetcher --test hostile`.

use load_fetcher::FetchConfig;
use load_fetcher::config::parse_duration;
use load_fetcher::scrape::{detect_component, parse};
use proptest::prelude::*;
use proptest::test_runner::Config;

fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64),
        ..Config::default()
    }
}

const BODY: &str = r#"# TYPE apiserver_request_total counter
apiserver_request_total{code="200",verb="GET",resource="pods"} 100
apiserver_request_duration_seconds_bucket{verb="GET",le="0.1"} 90
apiserver_request_duration_seconds_bucket{verb="GET",le="+Inf"} 100
process_cpu_seconds_total 50
apiserver_current_inflight_requests{request_kind="readOnly"} 2
"#;

const FETCH_CONFIG: &str = r#"scrape_interval: 15s
apiserver:
  job: "apiserver|kube-apiserver"
  matchers: { namespace: "tenant-a" }
"#;

/// A real body or config with a slice cut out, a character swapped in, or a line repeated.
fn mutated(base: &'static str) -> impl Strategy<Value = String> {
    (0..base.len(), 0..base.len(), any::<char>(), 0usize..3).prop_map(move |(a, b, c, how)| {
        let (a, b) = (a.min(b), a.max(b));
        let (a, b) = (
            (0..=a).rev().find(|i| base.is_char_boundary(*i)).unwrap(),
            (b..=base.len())
                .find(|i| base.is_char_boundary(*i))
                .unwrap(),
        );
        match how {
            0 => format!("{}{}", &base[..a], &base[b..]),
            1 => format!("{}{c}{}", &base[..a], &base[b..]),
            _ => format!("{}{}{}", &base[..b], &base[a..b], &base[b..]),
        }
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn durations_parse_or_are_refused(text in prop_oneof![
        any::<String>(),
        "[0-9.]{1,30}(ms|s|m|h|d|)",
    ]) {
        if let Ok(d) = parse_duration(&text) {
            prop_assert!(!d.is_zero(), "{text:?} gave {d:?}");
        }
    }

    #[test]
    fn exposition_text_parses_or_is_refused(body in prop_oneof![
        any::<String>(),
        mutated(BODY),
        prop::collection::vec(any::<u8>(), 0..200)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]) {
        if let Ok(samples) = parse(&body) {
            let _ = detect_component(&samples);
        }
    }

    #[test]
    fn a_fetch_config_parses_or_is_refused(text in prop_oneof![mutated(FETCH_CONFIG), any::<String>()]) {
        let dir = std::env::temp_dir().join(format!("load_fetcher-hostile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fetch.yaml");
        std::fs::write(&path, &text).unwrap();
        if let Ok(config) = FetchConfig::from_file(&path) {
            // What is accepted renders to a selector Prometheus can be asked with.
            let _ = config.apiserver.selector();
        }
    }
}
