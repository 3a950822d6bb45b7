//! Talking to the apiserver: the client, who we are, and raw requests.
//!
//! Requests go straight to hyper's pooled client with the kubeconfig's TLS (and kube's auth
//! layer for tokens), with bodies and URLs prepared in advance, and responses are drained
//! without being parsed: the generator pays for HTTP and TLS only.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceExt as _};

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
    /// Offer HTTP/2 as well as HTTP/1.1 (as client-go does): requests share a few connections
    /// and a timeout resets a stream, not its connection. Cheaper than HTTP/1.1 when many
    /// requests are in flight (no TLS handshake per connection), dearer when few are.
    #[arg(long, global = true)]
    pub http2: bool,
    /// With --http2, connections that requests take turns on. The apiserver serves at most 250
    /// streams per connection and the rest wait on the client, unseen by its limits; 8 let
    /// the default --max-inflight of 2000 all reach it.
    #[arg(long, global = true, default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub http2_connections: u16,
    /// Seconds to wait for the apiserver to accept a connection.
    #[arg(long, global = true, default_value = "5s", value_parser = crate::parse_positive_duration_arg)]
    pub connect_timeout: Duration,
}

/// Largest HTTP/1.1 read buffer per connection: one TLS record and its overhead.
const MAX_READ_BUFFER_BYTES: usize = 17 * 1024;

/// The pooled hyper client every raw request goes through.
type Hyper =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The raw request path: hyper's pooled client with the kubeconfig's TLS, and kube's auth
/// layer only when the kubeconfig needs a header on each request. kube's own stack (a tracing
/// span, a base-URI rewrite, a boxed body and a timeout wrapper per request) costs more than it
/// gives a load generator.
#[derive(Clone)]
enum Transport {
    /// Client certificates (or nothing): the TLS handshake authenticates, requests go as they are.
    Plain(Box<Hyper>),
    /// Bearer tokens (static, file or exec), added and refreshed by kube's auth layer.
    Token(BoxCloneSyncService<Request<Full<Bytes>>, Response<Incoming>, BoxError>),
}

/// A client for raw requests plus the URL it talks to.
#[derive(Clone)]
pub struct ApiClient {
    /// One per HTTP/2 connection (each hyper client pools one), or one for HTTP/1.1 (whose
    /// pool opens a connection per request in flight).
    transports: Arc<[Transport]>,
    /// Which transport the next request takes.
    turn: Arc<AtomicUsize>,
    /// kube's client, for typed requests and watches (never on the load's request path).
    kube: kube::Client,
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
        let url = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_owned();
        let connections = if args.http2 {
            args.http2_connections
        } else {
            1
        };
        let transports = (0..connections)
            .map(|_| transport(&config, args.http2))
            .collect::<anyhow::Result<_>>()?;
        let kube = kube::Client::try_from(config).context("building the Kubernetes client")?;
        Ok(ApiClient {
            transports,
            turn: Arc::new(AtomicUsize::new(0)),
            kube,
            url,
        })
    }

    /// The kube client itself, for typed requests and watches.
    pub fn kube(&self) -> kube::Client {
        self.kube.clone()
    }

    /// The absolute URI of `path_and_query` on this apiserver, made once and cloned per
    /// request (a clone shares the bytes).
    pub fn uri(&self, path_and_query: &str) -> anyhow::Result<Uri> {
        format!("{}{path_and_query}", self.url)
            .parse()
            .with_context(|| format!("bad request path {path_and_query}"))
    }

    /// A request for `uri` (from [`ApiClient::uri`]).
    pub fn request(
        method: Method,
        uri: Uri,
        content_type: &'static str,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
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

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, BoxError> {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        match &self.transports[turn % self.transports.len()] {
            Transport::Plain(client) => Ok(client.request(req).await?),
            Transport::Token(service) => service.clone().oneshot(req).await,
        }
    }

    /// Sends a load request and reads the response to the end without keeping it.
    pub async fn send_and_drain(&self, req: Request<Full<Bytes>>) -> Outcome {
        let resp = match self.send(req).await {
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
        let req = Self::request(method.clone(), self.uri(path)?, content_type, body);
        let fut = async {
            let resp = self.send(req).await?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>((status, bytes))
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

/// The raw transport from kube's TLS and auth settings. With `http2`, the TLS handshake also
/// offers HTTP/2 (kube's connector offers HTTP/1.1 only) and requests share its connections.
fn transport(config: &kube::Config, http2: bool) -> anyhow::Result<Transport> {
    use kube::client::ConfigExt as _;
    let tls = config
        .rustls_client_config()
        .context("TLS settings from the kubeconfig")?;
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(config.connect_timeout);
    tcp.set_nodelay(true);
    let mut https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = rustls::pki_types::ServerName::try_from(name.clone())
            .with_context(|| format!("tls-server-name {name:?} in the kubeconfig"))?;
        https = https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let https = if http2 {
        https.enable_http1().enable_http2().wrap_connector(tcp)
    } else {
        https.enable_http1().wrap_connector(tcp)
    };
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        // Bodies are drained as they come: a LIST of 500 objects must not leave every pooled
        // HTTP/1.1 connection holding a read buffer of its size (hyper grows it to 400 KiB).
        .http1_max_buf_size(MAX_READ_BUFFER_BYTES)
        .build(https);
    Ok(
        match config
            .auth_layer()
            .context("authentication from the kubeconfig")?
        {
            None => Transport::Plain(Box::new(client)),
            Some(auth) => Transport::Token(BoxCloneSyncService::new(
                tower::ServiceBuilder::new()
                    .layer(auth)
                    .map_err(BoxError::from)
                    .service(client),
            )),
        },
    )
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
