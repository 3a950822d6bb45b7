//! arak against servers that accept connections and never answer: the fault itself, a plain
//! TCP listener (the kernel completes the handshake into its backlog), not an imitation of
//! Kubernetes or Prometheus. Every command must give up with an error naming the address,
//! `arak run` must exit promptly on SIGTERM and fail `/healthz` once past its deadline.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Accepts connections and never answers.
fn silent() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a port");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    (listener, url)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("arak-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A kubeconfig for the apiserver at `url`.
fn kubeconfig(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: silent\n  cluster: {{server: \"{url}\"}}\n\
             contexts:\n- name: silent\n  context: {{cluster: silent, user: silent, namespace: tested-cp}}\n\
             current-context: silent\nusers:\n- name: silent\n  user: {{token: t}}\n"
        ),
    )
    .expect("kubeconfig");
    path
}

fn arak(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_arak"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("arak runs");
    (output, started.elapsed())
}

fn failure(output: &Output) -> String {
    assert!(!output.status.success(), "arak succeeded");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn apply_dry_run_against_a_silent_apiserver_times_out_naming_it() {
    let (_listener, url) = silent();
    let dir = scratch("apply-silent");
    let config = kubeconfig(&dir, &url);
    let (recommended, _) = arak(&[
        "recommend",
        "--snapshot",
        "config/examples/snapshot-synthetic.json",
        "--policy",
        "config/examples/policy.yaml",
        "--output",
        "json",
    ]);
    assert!(recommended.status.success());
    let recommendation = dir.join("recommendation.json");
    std::fs::write(&recommendation, &recommended.stdout).expect("recommendation");

    let (output, took) = arak(&[
        "apply",
        "--recommendation",
        recommendation.to_str().expect("UTF-8"),
        "--kubeconfig",
        config.to_str().expect("UTF-8"),
        "--dry-run",
        "--apiserver-request-timeout",
        "2s",
    ]);
    let stderr = failure(&output);
    assert!(took < Duration::from_secs(10), "took {took:?}: {stderr}");
    assert!(
        stderr.contains(&format!("apiserver {url} did not answer within 2 s")),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("did not answer").count(),
        1,
        "the cause said once: {stderr}"
    );
}

#[test]
fn fetch_from_a_silent_prometheus_times_out_naming_it() {
    let (_listener, url) = silent();
    let (output, took) = arak(&["fetch", "--prometheus-url", &url, "--timeout", "1s"]);
    let stderr = failure(&output);
    assert!(took < Duration::from_secs(5), "took {took:?}: {stderr}");
    assert!(stderr.contains(&url), "{stderr}");
    assert!(stderr.contains("within 1 s"), "{stderr}");
}

/// `GET path` on arak's HTTP port: the status code, once it answers.
fn get(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: arak\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_against_a_silent_apiserver_turns_unhealthy_and_exits_on_sigterm() {
    let (_listener, url) = silent();
    let dir = scratch("run-silent");
    let config = kubeconfig(&dir, &url);
    let port = free_port();
    // Short updater steps allow a short deadline: 1 s each plus four requests of 2 s.
    const DEADLINE: Duration = Duration::from_secs(10);
    let child = Command::new(env!("CARGO_BIN_EXE_arak"))
        .args(["run", "--kubeconfig", config.to_str().expect("UTF-8")])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--apiserver-connect-timeout", "1s"])
        .args(["--apiserver-request-timeout", "1s"])
        .args(["--pod-ready-timeout", "1s", "--resize-timeout", "1s"])
        .args(["--soak", "1s", "--rollback-timeout", "1s"])
        .args(["--progress-deadline", &format!("{}s", DEADLINE.as_secs())])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("arak run starts");
    let started = Instant::now();
    let mut arak = Running(child);

    let mut healthy_at_first = false;
    let unhealthy_after = loop {
        match get(port, "/healthz") {
            Some(200) => healthy_at_first = true,
            Some(503) => break started.elapsed(),
            _ => {}
        }
        assert!(
            started.elapsed() < DEADLINE + Duration::from_secs(10),
            "/healthz still not failing {:?} after start",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        healthy_at_first,
        "/healthz answered 200 before the deadline"
    );
    assert!(
        unhealthy_after >= DEADLINE,
        "unhealthy after {unhealthy_after:?}, before the deadline"
    );
    assert_eq!(get(port, "/readyz"), Some(503), "never ready: no lease");

    let pid = arak.0.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()), "sending SIGTERM");
    let sigterm = Instant::now();
    let status = loop {
        if let Some(status) = arak.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            sigterm.elapsed() < Duration::from_secs(10),
            "arak still runs 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = sigterm.elapsed();
    let mut log = String::new();
    if let Some(mut stderr) = arak.0.stderr.take() {
        let _ = stderr.read_to_string(&mut log);
    }
    assert!(status.success(), "exited with {status}:\n{log}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} after SIGTERM:\n{log}"
    );
    assert!(
        log.contains(&format!("apiserver {url} did not answer within 1 s")),
        "{log}"
    );
}
