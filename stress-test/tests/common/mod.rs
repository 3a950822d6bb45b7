//! Helpers the stress-test integration tests share: running the binary with a deadline,
//! reading its reports, and kubectl against the harness cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use harness::Cluster;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_stress-test");

pub fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stress-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn run(kubeconfig: &Path, args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_with_timeout(child.id(), &mut child, timeout)
}

/// Waits for `child`, killing it (and failing) past `timeout`. Output is read as it comes,
/// so a full pipe never stalls the child.
pub fn wait_with_timeout(pid: u32, child: &mut std::process::Child, timeout: Duration) -> Output {
    fn drain<R: std::io::Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("stress-test (pid {pid}) did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading the report {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn kubectl(cluster: &Cluster, args: &[&str]) -> Output {
    let out = Command::new(cluster.tools_bin().join("kubectl"))
        .arg("--kubeconfig")
        .arg(cluster.admin_kubeconfig())
        .args(args)
        .output()
        .unwrap();
    assert_success(&out, &format!("kubectl {}", args.join(" ")));
    out
}
