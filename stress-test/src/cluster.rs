//! Talking to the apiserver: the client, who we are, and raw requests.
//!
//! Requests go through kube's `Client::send` with bodies and URLs prepared in advance, and
//! responses are drained without being parsed: the generator pays for HTTP and TLS only.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::BodyExt as _;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::client::Body;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::report::{IdentityReport, Outcome};

pub const JSON: &str = "application/json";
pub const MERGE_PATCH: &str = "application/merge-patch+json";

/// Which apiserver, as whom.
#[derive(clap::Args, Clone, Debug)]
pub struct ConnectArgs {
    /// kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Offer HTTP/2 (as client-go does): requests share few connections instead of one
    /// connection per request in flight. The apiserver caps streams per connection (250 by
    /// default); requests beyond that wait for a stream.
    #[arg(long, global = true)]
    pub http2: bool,
    /// Seconds to wait for the apiserver to accept a connection.
    #[arg(long, global = true, default_value = "5s", value_parser = crate::parse_duration_arg)]
    pub connect_timeout: Duration,
}

/// A client for raw requests plus the URL it talks to.
#[derive(Clone)]
pub struct ApiClient {
    client: kube::Client,
    pub url: String,
}

impl ApiClient {
    /// Builds the client. No request is made yet.
    pub async fn new(args: &ConnectArgs) -> anyhow::Result<Self> {
        let mut config = match &args.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                let options = KubeConfigOptions {
                    context: args.context.clone(),
                    ..KubeConfigOptions::default()
                };
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .with_context(|| format!("loading kubeconfig {}", path.display()))?
            }
            None => {
                let options = KubeConfigOptions {
                    context: args.context.clone(),
                    ..KubeConfigOptions::default()
                };
                kube::Config::from_kubeconfig(&options).await.context(
                    "loading the kubeconfig ($KUBECONFIG or ~/.kube/config); pass --kubeconfig",
                )?
            }
        };
        // 429s are what the run measures: kube must not retry them away.
        config.default_retry = false;
        config.connect_timeout = Some(args.connect_timeout);
        // Each request has its own overall timeout instead.
        config.read_timeout = None;
        let url = config.cluster_url.to_string();
        let client = if args.http2 {
            http2_client(&config)?
        } else {
            kube::Client::try_from(config).context("building the Kubernetes client")?
        };
        Ok(ApiClient { client, url })
    }

    /// The kube client itself, for typed requests and watches.
    pub fn kube(&self) -> kube::Client {
        self.client.clone()
    }

    /// A request for `path_and_query` (relative to the apiserver URL).
    pub fn request(
        method: Method,
        uri: Uri,
        content_type: &'static str,
        body: Bytes,
    ) -> Request<Body> {
        let mut req = Request::new(Body::from(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        headers.insert(header::ACCEPT, header::HeaderValue::from_static(JSON));
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        req
    }

    /// Sends a load request and reads the response to the end without keeping it.
    pub async fn send_and_drain(&self, req: Request<Body>) -> Outcome {
        let resp = match self.client.send(req).await {
            Ok(r) => r,
            Err(_) => return Outcome::Transport,
        };
        let status = resp.status();
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                return Outcome::Transport;
            }
        }
        classify(status)
    }

    /// Sends a setup or cleanup request and returns status and body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: &'static str,
        body: Bytes,
        timeout: Duration,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let uri: Uri = path
            .parse()
            .with_context(|| format!("bad request path {path}"))?;
        let req = Self::request(method.clone(), uri, content_type, body);
        let fut = async {
            let resp = self.client.send(req).await?;
            let status = resp.status();
            let bytes = resp.into_body().collect_bytes().await?;
            Ok::<_, kube::Error>((status, bytes))
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(anyhow!(e).context(format!("{method} {path}"))),
            Err(_) => bail!("{method} {path}: no response within {timeout:?}"),
        }
    }

    /// Like `call`, but any status outside 2xx (and `ok_also`) is an error quoting the body.
    pub async fn call_ok(
        &self,
        method: Method,
        path: &str,
        content_type: &'static str,
        body: Bytes,
        timeout: Duration,
        ok_also: &[StatusCode],
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let (status, bytes) = self
            .call(method.clone(), path, content_type, body, timeout)
            .await?;
        if status.is_success() || ok_also.contains(&status) {
            return Ok((status, bytes));
        }
        bail!("{method} {path}: HTTP {status}: {}", status_message(&bytes))
    }

    /// Who the apiserver thinks we are (SelfSubjectReview). Also the reachability check.
    pub async fn identity(&self, timeout: Duration) -> anyhow::Result<IdentityReport> {
        let body = serde_json::to_vec(&serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "SelfSubjectReview",
        }))?;
        let (status, bytes) = self
            .call(
                Method::POST,
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                JSON,
                Bytes::from(body),
                timeout,
            )
            .await
            .with_context(|| format!("cannot reach the apiserver at {}", self.url))?;
        if !status.is_success() {
            bail!(
                "the apiserver at {} refused a SelfSubjectReview: HTTP {status}: {}",
                self.url,
                status_message(&bytes)
            );
        }
        let review: SelfSubjectReview =
            serde_json::from_slice(&bytes).context("decoding the SelfSubjectReview")?;
        let user = review.status.and_then(|s| s.user_info).unwrap_or_default();
        let groups = user.groups.unwrap_or_default();
        Ok(IdentityReport {
            username: user.username,
            system_masters: groups.iter().any(|g| g == "system:masters"),
            groups,
        })
    }
}

/// A kube client whose connector offers HTTP/2 as well as HTTP/1.1 (kube's offers only the
/// latter), with kube's TLS settings, base URL and authentication.
fn http2_client(config: &kube::Config) -> anyhow::Result<kube::Client> {
    use kube::client::ConfigExt as _;
    let tls = config
        .rustls_client_config()
        .context("TLS settings from the kubeconfig")?;
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(config.connect_timeout);
    tcp.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .auth_layer()
                .context("authentication from the kubeconfig")?,
        )
        .map_err(tower::BoxError::from)
        .service(http);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

/// Maps an HTTP status to the report's outcome.
pub fn classify(status: StatusCode) -> Outcome {
    if status.is_success() {
        Outcome::Ok
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        Outcome::Throttled
    } else {
        Outcome::Status(status.as_u16())
    }
}

/// The `message` of a Kubernetes Status body, or the body itself.
pub fn status_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect())
}

/// Names of the items of a LIST response.
pub fn item_names(body: &[u8]) -> anyhow::Result<Vec<(Option<String>, String)>> {
    let v: serde_json::Value = serde_json::from_slice(body).context("decoding a list")?;
    let items = v
        .get("items")
        .and_then(|i| i.as_array())
        .ok_or_else(|| anyhow!("list response has no items"))?;
    Ok(items
        .iter()
        .filter_map(|i| {
            let meta = i.get("metadata")?;
            let name = meta.get("name")?.as_str()?.to_owned();
            let ns = meta
                .get("namespace")
                .and_then(|n| n.as_str())
                .map(str::to_owned);
            Some((ns, name))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        assert_eq!(classify(StatusCode::OK), Outcome::Ok);
        assert_eq!(classify(StatusCode::CREATED), Outcome::Ok);
        assert_eq!(classify(StatusCode::TOO_MANY_REQUESTS), Outcome::Throttled);
        assert_eq!(classify(StatusCode::NOT_FOUND), Outcome::Status(404));
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE),
            Outcome::Status(503)
        );
    }

    #[test]
    fn reads_status_messages_and_names() {
        let status = br#"{"kind":"Status","message":"namespaces \"x\" not found"}"#;
        assert_eq!(status_message(status), "namespaces \"x\" not found");
        assert_eq!(status_message(b"plain"), "plain");
        let list =
            br#"{"items":[{"metadata":{"name":"a","namespace":"n"}},{"metadata":{"name":"b"}}]}"#;
        assert_eq!(
            item_names(list).unwrap(),
            vec![(Some("n".into()), "a".into()), (None, "b".into())]
        );
    }
}
