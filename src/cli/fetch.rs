//! `arak fetch`: one LoadSnapshot from Prometheus or from direct `/metrics` scrapes.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use load_fetcher::config::parse_duration;
use load_fetcher::{
    ClientOptions, FetchConfig, FetchOptions, HistoryOptions, PrometheusSource, ScrapeSource,
    ScrapeTarget,
};
use recommender::snapshot::{
    ClassSample, ClientSample, LatencySummary, LoadSnapshot, ProcessSample, Severity, Source,
};

use super::Output;

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Prometheus to query, e.g. http://127.0.0.1:9090.
    #[arg(long, required_unless_present = "scrape", conflicts_with = "scrape")]
    prometheus_url: Option<String>,
    /// Scrape these /metrics endpoints directly instead, as [COMPONENT=]URL with COMPONENT one
    /// of apiserver, scheduler, controller-manager (detected from the metrics when omitted).
    #[arg(long, num_args = 1.., value_name = "[COMPONENT=]URL")]
    scrape: Vec<ScrapeTarget>,
    /// YAML file saying which jobs and labels make up each component (see load_fetcher/README.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Window rates and percentiles are taken over (Prometheus).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    window: Duration,
    /// Also fetch per-replica history over this long (Prometheus), e.g. 1h.
    #[arg(long, value_parser = parse_duration)]
    history: Option<Duration>,
    /// Step of the history series.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    step: Duration,
    /// Time between the two readings of a direct scrape.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    interval: Duration,
    /// Upper bound for each HTTP request.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    tls: TlsArgs,
    /// Table for a person, JSON for `arak recommend`; JSON when stdout is not a terminal.
    #[arg(long, value_enum)]
    output: Option<Output>,
}

#[derive(Debug, Args)]
struct TlsArgs {
    /// File with a bearer token sent on every request.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// PEM CA bundle to verify the server with (the system roots otherwise).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// PEM client certificate, e.g. the one of a kubeconfig allowed GET /metrics.
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Accept any server certificate (test clusters only).
    #[arg(long)]
    insecure_skip_tls_verify: bool,
}

pub fn run(args: FetchArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => FetchConfig::from_file(path)?,
        None => FetchConfig::default(),
    };
    let client = ClientOptions {
        timeout: args.timeout,
        token_file: args.tls.token_file.clone(),
        ca_file: args.tls.ca_file.clone(),
        client_cert: args.tls.client_cert.clone(),
        client_key: args.tls.client_key.clone(),
        insecure_skip_tls_verify: args.tls.insecure_skip_tls_verify,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let snapshot = runtime.block_on(async {
        match &args.prometheus_url {
            Some(url) => {
                let options = FetchOptions {
                    window: args.window,
                    history: args.history.map(|range| HistoryOptions {
                        range,
                        step: args.step,
                    }),
                    at_unix_s: None,
                };
                PrometheusSource::new(url, &client)?
                    .fetch(&config, &options)
                    .await
            }
            None => {
                ScrapeSource::new(args.scrape.clone(), &client)?
                    .fetch(args.interval)
                    .await
            }
        }
    })?;
    let output = args.output.unwrap_or(if std::io::stdout().is_terminal() {
        Output::Table
    } else {
        Output::Json
    });
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&snapshot)?),
        Output::Table => print!("{}", table(&snapshot)),
    }
    Ok(())
}

/// The snapshot for a person: verdict first, then one block per replica, findings last.
fn table(s: &LoadSnapshot) -> String {
    let mut out = String::new();
    let source = match &s.source {
        Source::Prometheus { url } => format!("Prometheus {url}"),
        Source::Scrape { endpoints } => format!("scrapes of {}", endpoints.join(", ")),
    };
    let blocking = s
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Blocking)
        .count();
    let warnings = s.findings.len() - blocking;
    let _ = writeln!(
        out,
        "{} UTC, window {}, from {source}",
        utc(s.time_unix_s),
        seconds(s.window_s)
    );
    let _ = writeln!(
        out,
        "{}: {blocking} blocking, {warnings} warning finding(s)\n",
        if s.actionable() {
            "ACTIONABLE"
        } else {
            "NOT ACTIONABLE — do not tune on this"
        }
    );

    for a in &s.apiservers {
        let _ = writeln!(out, "apiserver {} ({})", a.replica.name, a.replica.instance);
        let _ = writeln!(
            out,
            "  {:<10} {:>10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>12} {:>8}",
            "class", "arrival/s", "429/s", "5xx/s", "p50", "p90", "p99", "inflight", "inqueue"
        );
        for (name, c) in [("readOnly", &a.read_only), ("mutating", &a.mutating)] {
            class_line(&mut out, name, c);
        }
        let _ = writeln!(
            out,
            "  long-running: {} started/s, {} open",
            number(a.long_running_rate, 2),
            number(a.long_running_open, 0)
        );
        process_line(&mut out, &a.process);
        if !a.priority_levels.is_empty() {
            let _ = writeln!(
                out,
                "  {:<24} {:>12} {:>11} {:>11} {:>6}",
                "APF priority level", "dispatched/s", "rejected/s", "wait p99", "seats"
            );
            for (level, p) in &a.priority_levels {
                let _ = writeln!(
                    out,
                    "  {:<24} {:>12} {:>11} {:>11} {:>6}",
                    level,
                    number(p.dispatched_rate, 2),
                    number(p.rejected_rate, 2),
                    latency(p.wait_p99_s),
                    number(p.nominal_seats, 0)
                );
            }
        }
        out.push('\n');
    }
    for sched in &s.schedulers {
        let _ = writeln!(
            out,
            "scheduler {} ({})",
            sched.replica.name, sched.replica.instance
        );
        let pending: Vec<String> = sched
            .pending_pods
            .iter()
            .map(|(q, n)| format!("{q} {n:.0}"))
            .collect();
        let _ = writeln!(out, "  pending pods: {}", or_none(pending.join(", ")));
        let attempts: Vec<String> = sched
            .attempt_rate
            .iter()
            .map(|(r, v)| format!("{r} {v:.2}/s"))
            .collect();
        let _ = writeln!(
            out,
            "  attempts: {}; bindings {}/s",
            or_none(attempts.join(", ")),
            number(sched.binding_rate, 2)
        );
        let _ = writeln!(
            out,
            "  attempt duration: {}",
            summary(sched.attempt_duration)
        );
        let _ = writeln!(
            out,
            "  pod scheduling:   {}",
            summary(sched.pod_scheduling_duration)
        );
        process_line(&mut out, &sched.process);
        client_line(&mut out, &sched.client);
        out.push('\n');
    }
    for cm in &s.controller_managers {
        let _ = writeln!(
            out,
            "controller-manager {} ({})",
            cm.replica.name, cm.replica.instance
        );
        process_line(&mut out, &cm.process);
        client_line(&mut out, &cm.client);
        out.push('\n');
    }
    if let Some(h) = &s.history {
        let _ = writeln!(
            out,
            "history: {} points every {} for {} replica(s)\n",
            h.times_unix_s.len(),
            seconds(h.step_s),
            h.replicas.len()
        );
    }
    if !s.findings.is_empty() {
        let _ = writeln!(out, "findings:");
        let mut findings = s.findings.clone();
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        for f in findings {
            let severity = match f.severity {
                Severity::Blocking => "BLOCKING",
                Severity::Warning => "warning ",
            };
            let _ = writeln!(
                out,
                "  {severity} {:?} {}{}: {}",
                f.kind,
                f.metric,
                f.replica.map(|r| format!(" on {r}")).unwrap_or_default(),
                f.detail
            );
        }
    }
    out
}

fn class_line(out: &mut String, name: &str, c: &ClassSample) {
    let _ = writeln!(
        out,
        "  {:<10} {:>10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>12} {:>8}",
        name,
        number(c.arrival_rate, 2),
        number(c.rejected_rate, 2),
        number(c.error_rate, 2),
        latency(c.latency.map(|l| l.p50_s)),
        latency(c.latency.map(|l| l.p90_s)),
        latency(c.latency.map(|l| l.p99_s)),
        format!(
            "{}/{}",
            number(c.inflight_mean, 1),
            number(c.inflight_max, 0)
        ),
        number(c.inqueue_mean, 1)
    );
}

fn process_line(out: &mut String, p: &ProcessSample) {
    let mib = |b: Option<f64>| number(b.map(|b| b / 1_048_576.0), 0);
    let _ = writeln!(
        out,
        "  process: {} cores, RSS {} MiB (peak {} MiB)",
        number(p.cpu_cores, 3),
        mib(p.resident_memory_bytes),
        mib(p.peak_resident_memory_bytes)
    );
}

fn client_line(out: &mut String, c: &ClientSample) {
    let _ = writeln!(
        out,
        "  client: {} requests/s, throttled mean {} p99 {}",
        number(c.request_rate, 2),
        latency(c.throttle_wait_mean_s),
        latency(c.throttle_wait_p99_s)
    );
}

fn summary(l: Option<LatencySummary>) -> String {
    match l {
        Some(l) => format!(
            "p50 {} p90 {} p99 {} ({} observed)",
            latency(Some(l.p50_s)),
            latency(Some(l.p90_s)),
            latency(Some(l.p99_s)),
            l.count.round()
        ),
        None => "—".into(),
    }
}

/// Unknown values print as a dash, never as zero.
fn number(v: Option<f64>, decimals: usize) -> String {
    // `+ 0.0` turns the -0 that PromQL's rate arithmetic can produce into 0.
    v.map_or_else(|| "—".into(), |v| format!("{:.decimals$}", v + 0.0))
}

fn latency(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1000.0),
        Some(s) => format!("{s:.2}s"),
    }
}

fn seconds(s: f64) -> String {
    if s >= 60.0 && s % 60.0 == 0.0 {
        format!("{}m", s / 60.0)
    } else {
        format!("{s}s")
    }
}

fn or_none(text: String) -> String {
    if text.is_empty() { "—".into() } else { text }
}

/// `YYYY-MM-DD hh:mm:ss` in UTC, from the civil-from-days algorithm (no time crate needed).
fn utc(unix_s: f64) -> String {
    let secs = unix_s.floor() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_764_032_400.0), "2025-11-25 01:00:00");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00");
    }

    #[test]
    fn unknown_values_are_dashes() {
        assert_eq!(number(None, 2), "—");
        assert_eq!(latency(Some(0.0123)), "12.3ms");
        assert_eq!(latency(Some(2.5)), "2.50s");
    }
}
