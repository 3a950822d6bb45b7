//! Runs one probe attempt: an HTTP(S) GET, a TCP connect or a command.

use crate::insecure_tls::probe_client_config;
use crate::pod_plan::Launch;
use crate::probe::{ProbeAction, ProbeSpec};
use rustls::pki_types::ServerName;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

/// Whether one attempt succeeded; a timeout is a failure.
pub async fn attempt(spec: &ProbeSpec, launch: &Launch) -> bool {
    let check = async {
        match &spec.action {
            ProbeAction::Http {
                https,
                host,
                port,
                path,
                headers,
            } => http_get(*https, host, *port, path, headers).await,
            ProbeAction::Tcp { host, port } => {
                TcpStream::connect((host.as_str(), *port)).await.is_ok()
            }
            ProbeAction::Exec { command } => exec(command, launch).await,
        }
    };
    tokio::time::timeout(spec.timeout, check)
        .await
        .unwrap_or(false)
}

async fn http_get(
    https: bool,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> bool {
    let Ok(tcp) = TcpStream::connect((host, port)).await else {
        return false;
    };
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kube-probe/1.35\r\nAccept: */*\r\nConnection: close\r\n",
        host_header(host, port)
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    if !https {
        return status_ok(tcp, &request).await;
    }
    let Ok(server_name) = ServerName::try_from(host.to_string()) else {
        return false;
    };
    let connector = tokio_rustls::TlsConnector::from(probe_client_config());
    match connector.connect(server_name, tcp).await {
        Ok(tls) => status_ok(tls, &request).await,
        Err(_) => false,
    }
}

fn host_header(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Sends the request and accepts a 2xx or 3xx status, as the kubelet does.
async fn status_ok<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &str) -> bool {
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut status_line = String::new();
    if BufReader::new(stream)
        .read_line(&mut status_line)
        .await
        .is_err()
    {
        return false;
    }
    status_code(&status_line).is_some_and(|code| (200..400).contains(&code))
}

fn status_code(status_line: &str) -> Option<u16> {
    let mut parts = status_line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

async fn exec(command: &[String], launch: &Launch) -> bool {
    let Some((program, args)) = command.split_first() else {
        return false;
    };
    Command::new(program)
        .args(args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.working_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn spec(action: ProbeAction) -> ProbeSpec {
        ProbeSpec {
            action,
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 1,
        }
    }

    fn launch() -> Launch {
        Launch {
            program: "true".into(),
            args: vec![],
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("CODE".into(), "0".into()),
            ],
            working_dir: std::env::temp_dir(),
        }
    }

    #[test]
    fn parses_status_lines() {
        assert_eq!(status_code("HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_code("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(status_code("garbage"), None);
    }

    /// Serves one canned response per connection.
    async fn serve(response: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(response.as_bytes()).await;
            }
        });
        port
    }

    fn http(port: u16) -> ProbeSpec {
        spec(ProbeAction::Http {
            https: false,
            host: "127.0.0.1".into(),
            port,
            path: "/readyz".into(),
            headers: vec![("X-Probe".into(), "1".into())],
        })
    }

    #[tokio::test]
    async fn http_accepts_2xx_and_3xx_only() {
        assert!(attempt(&http(serve("HTTP/1.1 200 OK\r\n\r\n").await), &launch()).await);
        assert!(attempt(&http(serve("HTTP/1.1 302 Found\r\n\r\n").await), &launch()).await);
        assert!(!attempt(&http(serve("HTTP/1.1 500 Oops\r\n\r\n").await), &launch()).await);
    }

    #[tokio::test]
    async fn tcp_and_exec() {
        let port = serve("").await;
        let tcp = |port| {
            spec(ProbeAction::Tcp {
                host: "127.0.0.1".into(),
                port,
            })
        };
        assert!(attempt(&tcp(port), &launch()).await);
        // Bound but not listening: connections are refused, and the port stays ours, so
        // neither a parallel test's listener nor a client's ephemeral port can take it.
        let reserved = tokio::net::TcpSocket::new_v4().unwrap();
        reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let closed = reserved.local_addr().unwrap().port();
        assert!(!attempt(&tcp(closed), &launch()).await);
        let exec = |cmd: &str| {
            spec(ProbeAction::Exec {
                command: vec!["sh".into(), "-c".into(), cmd.into()],
            })
        };
        assert!(attempt(&exec("exit $CODE"), &launch()).await);
        assert!(!attempt(&exec("exit 1"), &launch()).await);
        assert!(!attempt(&exec("sleep 5"), &launch()).await);
    }
}
