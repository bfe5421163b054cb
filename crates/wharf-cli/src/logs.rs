//! `wharf logs`: a task's container logs, read through the control plane's logs
//! endpoint (which asks the agent of the task's instance over its channel).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use wharf_aws::sigv4::{sign_http_request, SigningCredentials, SigningScope};
use wharf_control::agent_channel::LOGS_PATH;

/// Flags of `logs`.
#[derive(Args, Clone)]
pub(crate) struct LogsArgs {
    /// The task, by id or ARN.
    task: String,
    /// The task's cluster (name or ARN).
    #[arg(long, default_value = "default")]
    cluster: String,
    /// One container by its name in the task definition; all of the task's containers
    /// (each line prefixed with the container's name) when absent.
    #[arg(long)]
    container: Option<String>,
    /// Keep printing what the containers write until they stop.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only the last N lines of each container's log.
    #[arg(long)]
    tail: Option<u64>,
    /// The data directory of the Wharf to read from (its endpoint and root key are used).
    #[arg(long, env = "WHARF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The region the task is in.
    #[arg(long, env = "WHARF_REGION", default_value = "us-east-1")]
    region: String,
}

/// What to read, and from where.
pub(crate) struct LogsTarget<'a> {
    pub endpoint: &'a str,
    pub region: &'a str,
    pub credentials: &'a SigningCredentials,
    pub cluster: &'a str,
    pub task: &'a str,
    pub container: Option<&'a str>,
    pub follow: bool,
    pub tail: Option<u64>,
}

/// The endpoint's URL for a target, with its parameters in sorted order.
fn logs_url(target: &LogsTarget<'_>) -> String {
    let mut pairs = vec![
        ("cluster", target.cluster.to_owned()),
        ("task", target.task.to_owned()),
    ];
    if let Some(container) = target.container {
        pairs.push(("container", container.to_owned()));
    }
    if target.follow {
        pairs.push(("follow", "true".to_owned()));
    }
    if let Some(tail) = target.tail {
        pairs.push(("tail", tail.to_string()));
    }
    pairs.sort();
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", wharf_aws::sigv4::encode_query_component(v)))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}{LOGS_PATH}?{query}",
        target.endpoint.trim_end_matches('/')
    )
}

/// The message of an error answer: `Code: message` from the JSON error shape, or the
/// status and body as they are.
fn error_message(status: http::StatusCode, body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    match (field("__type"), field("message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => format!("{status}: {}", String::from_utf8_lossy(body).trim()),
    }
}

/// Streams a task's logs into `out` as they arrive, flushing after every chunk. Fails
/// with the control plane's message on an error answer, and when the stream breaks off
/// before its end.
pub(crate) async fn stream_logs(
    target: &LogsTarget<'_>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let url = logs_url(target);
    let mut request = http::Request::get(&url)
        .body(Empty::<Bytes>::new())
        .with_context(|| format!("building the request for {url}"))?;
    sign_http_request(
        &mut request,
        b"",
        target.credentials,
        SigningScope {
            region: target.region,
            service: "ecs",
        },
        chrono::Utc::now(),
    )?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .request(request)
        .await
        .with_context(|| format!("cannot reach Wharf at {}", target.endpoint))?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        anyhow::bail!("{}", error_message(status, &bytes));
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            anyhow::anyhow!(
                "the log stream broke off before its end ({e}); see the Wharf server's log"
            )
        })?;
        if let Ok(data) = frame.into_data() {
            out.write_all(&data)?;
            out.flush()?;
        }
    }
    Ok(())
}

/// `wharf logs`.
pub(crate) async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let data_dir = crate::data_dir_or_default(args.data_dir)?;
    let endpoint = std::fs::read_to_string(data_dir.join("endpoint")).with_context(|| {
        format!(
            "no Wharf has run with data directory {} (start one with `wharf up`)",
            data_dir.display()
        )
    })?;
    let (key, _) = crate::credentials::root_key(&data_dir, None)?;
    let credentials = SigningCredentials {
        access_key_id: key.access_key_id,
        secret_access_key: key.secret_access_key,
        session_token: None,
    };
    let target = LogsTarget {
        endpoint: endpoint.trim(),
        region: &args.region,
        credentials: &credentials,
        cluster: &args.cluster,
        task: &args.task,
        container: args.container.as_deref(),
        follow: args.follow,
        tail: args.tail,
    };
    let mut out = std::io::stdout();
    // A closed pipe (`wharf logs … | head`) is the reader being done, not a failure.
    match stream_logs(&target, &mut out).await {
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    //! The logs path end to end in one process: the control plane's router on a real
    //! loopback listener, an agent session (`run_session`) over a real WebSocket with a
    //! fake log source, and this module's client.

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures_util::stream::{self, StreamExt};
    use serde_json::json;
    use tokio::sync::{mpsc, oneshot, watch};
    use wharf_agent_channel::client::EcsClient;
    use wharf_agent_channel::session::{
        run_session, LogPiece, SessionConfig, SessionEvent, TaskLogStream, TaskLogs,
    };
    use wharf_agent_channel::{LogsRequest, OutputStream, LOGS_WINDOW};
    use wharf_control::agent_channel::ChannelSettings;

    use super::*;
    use crate::credentials::RootKey;

    const DEADLINE: Duration = Duration::from_secs(10);

    fn piece(stream: OutputStream, text: &str) -> Result<LogPiece, String> {
        Ok(LogPiece {
            stream,
            data: Bytes::from(text.to_owned()),
        })
    }

    /// Says when the stream it lives in is dropped (the agent stopped reading logs).
    struct DropSignal(Option<oneshot::Sender<()>>);

    impl Drop for DropSignal {
        fn drop(&mut self) {
            if let Some(signal) = self.0.take() {
                let _ = signal.send(());
            }
        }
    }

    /// Logs by container name: `app` has two lines (plus, when followed, whatever the
    /// test sends later), `big` has more chunks than the flow-control window, and
    /// `quiet` cannot be read.
    #[derive(Default)]
    struct FakeLogs {
        requests: Mutex<Vec<LogsRequest>>,
        later: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
        dropped: Mutex<Option<oneshot::Sender<()>>>,
    }

    #[async_trait::async_trait]
    impl TaskLogs for FakeLogs {
        async fn open(&self, request: &LogsRequest) -> Result<TaskLogStream, String> {
            self.requests.lock().unwrap().push(request.clone());
            match request.container.as_deref() {
                Some("quiet") => Err("the none log driver cannot be read".to_owned()),
                Some("big") => Ok(stream::iter(
                    (0..3 * LOGS_WINDOW)
                        .map(|i| piece(OutputStream::Stdout, &format!("line {i}\n"))),
                )
                .boxed()),
                _ => {
                    let first = stream::iter([
                        piece(OutputStream::Stdout, "hello\n"),
                        piece(OutputStream::Stderr, "oops\n"),
                    ]);
                    if !request.follow {
                        return Ok(first.boxed());
                    }
                    let later = self.later.lock().unwrap().take().expect("one follow");
                    let signal = DropSignal(self.dropped.lock().unwrap().take());
                    let rest = stream::unfold((later, signal), |(mut later, signal)| async move {
                        let line = later.recv().await?;
                        Some((piece(OutputStream::Stdout, &line), (later, signal)))
                    });
                    Ok(first.chain(rest).boxed())
                }
            }
        }
    }

    /// Forwards what the client writes, so a test can wait for followed lines.
    struct ChannelWriter(mpsc::UnboundedSender<Vec<u8>>);

    impl Write for ChannelWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.send(buf.to_vec());
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Harness {
        endpoint: String,
        credentials: SigningCredentials,
        client: EcsClient,
        task_arn: String,
        instance_arn: String,
        cluster_arn: String,
    }

    impl Harness {
        async fn start() -> Self {
            let store: Arc<dyn wharf_store::Store> =
                Arc::new(wharf_store::sqlite::SqliteStore::open_in_memory().unwrap());
            let key = RootKey {
                access_key_id: "AKIDLOGSTEST".to_owned(),
                secret_access_key: "secret".to_owned(),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let endpoint = format!("http://{}", listener.local_addr().unwrap());
            let router = crate::server::api_router(
                store,
                &key,
                "000000000000",
                &endpoint,
                ChannelSettings::default(),
                None,
            );
            tokio::spawn(async move { axum::serve(listener, router).await });
            let credentials = SigningCredentials {
                access_key_id: key.access_key_id.clone(),
                secret_access_key: key.secret_access_key.clone(),
                session_token: None,
            };
            let client = EcsClient::new(&endpoint, "us-east-1", credentials.clone());
            client
                .call("CreateCluster", &json!({"clusterName": "default"}))
                .await
                .unwrap();
            let registered = client
                .call(
                    "RegisterContainerInstance",
                    &json!({
                        "cluster": "default",
                        "totalResources": [
                            {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
                            {"name": "MEMORY", "type": "INTEGER", "integerValue": 4096},
                        ],
                    }),
                )
                .await
                .unwrap();
            let instance_arn = registered["containerInstance"]["containerInstanceArn"]
                .as_str()
                .unwrap()
                .to_owned();
            client
                .call(
                    "RegisterTaskDefinition",
                    &json!({
                        "family": "logs",
                        "containerDefinitions": [
                            {"name": "app", "image": "busybox", "memory": 64},
                        ],
                    }),
                )
                .await
                .unwrap();
            let ran = client
                .call("RunTask", &json!({"taskDefinition": "logs"}))
                .await
                .unwrap();
            let task_arn = ran["tasks"][0]["taskArn"].as_str().unwrap().to_owned();
            let cluster_arn = ran["tasks"][0]["clusterArn"].as_str().unwrap().to_owned();
            Harness {
                endpoint,
                credentials,
                client,
                task_arn,
                instance_arn,
                cluster_arn,
            }
        }

        /// Connects an agent session serving `logs`; returns once the control plane
        /// has sent it its first payload (by then the session is registered).
        async fn connect_agent(&self, logs: Arc<FakeLogs>) -> watch::Sender<bool> {
            let (stop, shutdown) = watch::channel(false);
            let (events_tx, mut events) = mpsc::channel(16);
            tokio::spawn(run_session(
                self.client.clone(),
                SessionConfig::new(&self.cluster_arn, &self.instance_arn),
                events_tx,
                Some(logs as Arc<dyn TaskLogs>),
                shutdown,
            ));
            tokio::time::timeout(DEADLINE, async {
                while let Some(event) = events.recv().await {
                    if matches!(event, SessionEvent::Tasks(_)) {
                        break;
                    }
                }
            })
            .await
            .expect("the agent got its first payload");
            // Keep draining, so the session never waits on its engine.
            tokio::spawn(async move { while events.recv().await.is_some() {} });
            stop
        }

        fn target<'a>(&'a self, task: &'a str, container: Option<&'a str>) -> LogsTarget<'a> {
            LogsTarget {
                endpoint: &self.endpoint,
                region: "us-east-1",
                credentials: &self.credentials,
                cluster: "default",
                task,
                container,
                follow: false,
                tail: None,
            }
        }

        async fn read(&self, target: &LogsTarget<'_>) -> anyhow::Result<String> {
            let mut out = Vec::new();
            tokio::time::timeout(DEADLINE, stream_logs(target, &mut out))
                .await
                .expect("the logs ended")?;
            Ok(String::from_utf8(out).unwrap())
        }
    }

    /// Reads what the client wrote until it ends with `expected`.
    async fn wait_for(
        written: &mut mpsc::UnboundedReceiver<Vec<u8>>,
        seen: &mut String,
        expected: &str,
    ) {
        let arrived = tokio::time::timeout(DEADLINE, async {
            while !seen.ends_with(expected) {
                let bytes = written.recv().await.expect("the follower writes");
                seen.push_str(std::str::from_utf8(&bytes).unwrap());
            }
        })
        .await;
        assert!(arrived.is_ok(), "{expected:?} never arrived; got {seen:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn logs_stream_from_the_agent_through_the_control_plane() {
        let harness = Harness::start().await;
        let task_id = harness.task_arn.rsplit('/').next().unwrap().to_owned();

        // Unsigned requests are refused before anything else.
        let url = format!("{}{LOGS_PATH}?task={task_id}", harness.endpoint);
        let unsigned = Client::builder(TokioExecutor::new())
            .build_http::<Empty<Bytes>>()
            .request(http::Request::get(&url).body(Empty::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(unsigned.status(), http::StatusCode::FORBIDDEN);

        // Without a connected agent: 503.
        let error = harness
            .read(&harness.target(&task_id, None))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("AgentNotConnectedException:"), "{error}");

        let logs = Arc::new(FakeLogs::default());
        let (later, later_rx) = mpsc::unbounded_channel();
        let (dropped_tx, dropped) = oneshot::channel();
        *logs.later.lock().unwrap() = Some(later_rx);
        *logs.dropped.lock().unwrap() = Some(dropped_tx);
        let _stop = harness.connect_agent(logs.clone()).await;

        // Everything so far, by task id; the agent is asked by ARN, with the tail.
        let mut target = harness.target(&task_id, None);
        target.tail = Some(5);
        assert_eq!(harness.read(&target).await.unwrap(), "hello\noops\n");
        let asked = logs.requests.lock().unwrap()[0].clone();
        assert_eq!(asked.task_arn, harness.task_arn);
        assert_eq!(asked.tail, Some(5));
        assert_eq!(asked.container, None);
        assert!(!asked.follow);

        // Unknown task and cluster, and logs the agent cannot read: errors with a status.
        let error = harness
            .read(&harness.target("0123456789abcdef", None))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("InvalidParameterException:"), "{error}");
        let mut elsewhere = harness.target(&task_id, None);
        elsewhere.cluster = "nope";
        let error = harness.read(&elsewhere).await.unwrap_err().to_string();
        assert!(error.starts_with("ClusterNotFoundException:"), "{error}");
        let error = harness
            .read(&harness.target(&harness.task_arn, Some("quiet")))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "LogsUnavailableException: the none log driver cannot be read"
        );

        // More chunks than the flow-control window all arrive, in order.
        let big = harness
            .read(&harness.target(&harness.task_arn, Some("big")))
            .await
            .unwrap();
        let expected: String = (0..3 * LOGS_WINDOW)
            .map(|i| format!("line {i}\n"))
            .collect();
        assert_eq!(big, expected);

        // Following: a line written after the call started arrives, and the agent stops
        // reading once the client goes away.
        let (written_tx, mut written) = mpsc::unbounded_channel();
        let endpoint = harness.endpoint.clone();
        let credentials = harness.credentials.clone();
        let task = task_id.clone();
        let follower = tokio::spawn(async move {
            let target = LogsTarget {
                endpoint: &endpoint,
                region: "us-east-1",
                credentials: &credentials,
                cluster: "default",
                task: &task,
                container: Some("app"),
                follow: true,
                tail: None,
            };
            stream_logs(&target, &mut ChannelWriter(written_tx)).await
        });
        let mut seen = String::new();
        wait_for(&mut written, &mut seen, "hello\noops\n").await;
        later.send("later\n".to_owned()).unwrap();
        wait_for(&mut written, &mut seen, "later\n").await;
        assert_eq!(seen, "hello\noops\nlater\n");
        follower.abort();
        tokio::time::timeout(DEADLINE, dropped)
            .await
            .expect("the agent stopped streaming after the client left")
            .unwrap();
    }
}
