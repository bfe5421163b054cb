//! The task metadata endpoint, version 4, as a task's containers see it.
//!
//! Every container is started with `ECS_CONTAINER_METADATA_URI_V4=http://<addr>/v4/<token>`
//! (see [`metadata_uri`]), where `<token>` is an unguessable id the agent minted for that
//! container ([`new_metadata_token`]). Under that URI the container reads, in the JSON
//! shapes ECS documents:
//!
//! | path                         | what                                                  |
//! |------------------------------|-------------------------------------------------------|
//! | `/v4/<token>`                | this container                                        |
//! | `/v4/<token>/task`           | its task, with all the task's containers              |
//! | `/v4/<token>/taskWithTags`   | the same plus `TaskTags` and `ContainerInstanceTags`  |
//! | `/v4/<token>/stats`          | this container's Docker stats                         |
//! | `/v4/<token>/task/stats`     | Docker id → Docker stats for each of the task's containers |
//!
//! The data comes through the [`MetadataSource`] trait, so this module knows nothing of
//! the engine that supervises the containers. Isolation between tasks holds by
//! construction: a token resolves to one task, and every answer is built from that
//! task alone, so a container can read its own task and nothing else.
//!
//! A request path is parsed into a [`MetadataRequest`] first ([`parse_metadata_path`])
//! and answered from one `match`. An unknown path or token is a 404 with a JSON body,
//! whatever the path contains; the handler has no way to panic on input.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// The environment variable a container finds its metadata URI in.
pub const METADATA_URI_ENV: &str = "ECS_CONTAINER_METADATA_URI_V4";

/// The value of [`METADATA_URI_ENV`] for the container with `token`, when the endpoint
/// listens on `addr` (which must be an address the container can reach).
pub fn metadata_uri(addr: SocketAddr, token: &str) -> String {
    format!("http://{addr}/v4/{token}")
}

/// A fresh token for a container: a random UUID, so that one task's containers, which
/// share the Docker bridge with every other task's, cannot guess another's token.
pub fn new_metadata_token() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Where the endpoint's answers come from: the agent's view of the tasks it runs.
#[async_trait]
pub trait MetadataSource: Send + Sync {
    /// The task the container with `token` belongs to, and that container's Docker
    /// id; `None` if no running container has the token.
    fn lookup(&self, token: &str) -> Option<(MetadataTask, String)>;

    /// The Docker stats JSON of a container (the engine API's `ContainerStats` body),
    /// or `None` if there are none (the container is not running, or unknown).
    async fn stats(&self, docker_id: &str) -> Option<Value>;
}

/// A task as the metadata endpoint describes it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetadataTask {
    /// The cluster's name or ARN.
    pub cluster: String,
    /// The task's ARN.
    pub task_arn: String,
    /// The task definition's family.
    pub family: String,
    /// The task definition's revision.
    pub revision: i64,
    /// The status the control plane wants the task in, e.g. `RUNNING`.
    pub desired_status: String,
    /// The status the task is in, e.g. `RUNNING`.
    pub known_status: String,
    /// The task's CPU limit in vCPUs (task-level `cpu` / 1024), if it has one.
    pub cpu: Option<f64>,
    /// The task's memory limit in MiB, if it has one.
    pub memory: Option<i64>,
    /// When the first image pull began.
    pub pull_started_at: Option<DateTime<Utc>>,
    /// When the last image pull finished.
    pub pull_stopped_at: Option<DateTime<Utc>>,
    /// The node's availability zone.
    pub availability_zone: Option<String>,
    /// `EC2` (or `EXTERNAL`) as the control plane launched the task.
    pub launch_type: Option<String>,
    /// The task's tags, shown by `/taskWithTags`.
    pub task_tags: BTreeMap<String, String>,
    /// The node's tags, shown by `/taskWithTags`.
    pub container_instance_tags: BTreeMap<String, String>,
    /// The task's containers.
    pub containers: Vec<MetadataContainer>,
}

/// A container as the metadata endpoint describes it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetadataContainer {
    /// The Docker id (empty until the container is created).
    pub docker_id: String,
    /// The name in the task definition.
    pub name: String,
    /// The name the container has in Docker.
    pub docker_name: String,
    /// The image as the task definition names it.
    pub image: String,
    /// The image's `sha256:` id (empty until pulled).
    pub image_id: String,
    /// The container's port mappings.
    pub ports: Vec<MetadataPort>,
    /// The container's Docker labels.
    pub labels: BTreeMap<String, String>,
    /// The status the control plane wants the container in.
    pub desired_status: String,
    /// The status the container is in.
    pub known_status: String,
    /// The exit code, once the container has exited.
    pub exit_code: Option<i64>,
    /// The container's CPU units, if set.
    pub cpu: Option<f64>,
    /// The container's memory limit in MiB, if set.
    pub memory: Option<i64>,
    /// When the container was created.
    pub created_at: Option<DateTime<Utc>>,
    /// When the container started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the container stopped.
    pub finished_at: Option<DateTime<Utc>>,
    /// The health check's latest result, if the container has a health check.
    pub health: Option<MetadataHealth>,
    /// The networks the container is attached to.
    pub networks: Vec<MetadataNetwork>,
    /// The container's ARN.
    pub container_arn: Option<String>,
    /// The log driver, e.g. `json-file`.
    pub log_driver: Option<String>,
    /// The log driver's options.
    pub log_options: BTreeMap<String, String>,
}

/// One port mapping of a container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataPort {
    /// The port inside the container.
    pub container_port: u16,
    /// The port on the host, once bound.
    pub host_port: Option<u16>,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The host address the port is bound on, e.g. `0.0.0.0`.
    pub host_ip: Option<String>,
}

/// A container's health as its health check last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataHealth {
    /// `HEALTHY`, `UNHEALTHY` or `UNKNOWN`.
    pub status: String,
    /// When the status last changed.
    pub since: Option<DateTime<Utc>>,
    /// The last check's output.
    pub output: Option<String>,
}

/// A network a container is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataNetwork {
    /// The network mode, e.g. `bridge`, `host`, `awsvpc`.
    pub mode: String,
    /// The container's addresses on it.
    pub ipv4: Vec<Ipv4Addr>,
}

/// What a request to the endpoint asks for, once its path is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataRequest {
    /// `/v4/<token>`: the container itself.
    Container,
    /// `/v4/<token>/task`.
    Task,
    /// `/v4/<token>/taskWithTags`.
    TaskWithTags,
    /// `/v4/<token>/stats`.
    ContainerStats,
    /// `/v4/<token>/task/stats`.
    TaskStats,
}

/// Splits a request path into the token and what is asked for; `None` for any path
/// the endpoint does not serve. One trailing slash is tolerated.
pub fn parse_metadata_path(path: &str) -> Option<(&str, MetadataRequest)> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let rest = path.strip_prefix("/v4/")?;
    let (token, tail) = match rest.split_once('/') {
        None => (rest, ""),
        // A slash with nothing after it: the path ended in two.
        Some((_, "")) => return None,
        Some(split) => split,
    };
    if token.is_empty() {
        return None;
    }
    let request = match tail {
        "" => MetadataRequest::Container,
        "task" => MetadataRequest::Task,
        "taskWithTags" => MetadataRequest::TaskWithTags,
        "stats" => MetadataRequest::ContainerStats,
        "task/stats" => MetadataRequest::TaskStats,
        _ => return None,
    };
    Some((token, request))
}

/// The endpoint as an axum router, to be served on an address the containers reach.
pub fn metadata_router(source: Arc<dyn MetadataSource>) -> Router {
    Router::new().fallback(serve).with_state(source)
}

async fn serve(State(source): State<Arc<dyn MetadataSource>>, request: Request) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the task metadata endpoint answers GET only",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some((token, asked)) = parse_metadata_path(request.uri().path()) else {
        return error_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            "no such task metadata path",
        );
    };
    let Some((task, docker_id)) = source.lookup(token) else {
        tracing::debug!("task metadata request with an unknown token");
        return error_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            "no task metadata for this token",
        );
    };
    answer(source.as_ref(), &task, &docker_id, asked).await
}

/// Answers one parsed request from the requester's own task.
async fn answer(
    source: &dyn MetadataSource,
    task: &MetadataTask,
    docker_id: &str,
    asked: MetadataRequest,
) -> Response {
    match asked {
        MetadataRequest::Container => {
            match task.containers.iter().find(|c| c.docker_id == docker_id) {
                Some(container) => {
                    json_response(StatusCode::OK, &ContainerResponse::new(container))
                }
                None => {
                    tracing::warn!(task = %task.task_arn, docker_id, "metadata token resolves to a container its task does not list");
                    error_response(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        "no metadata for this container",
                    )
                }
            }
        }
        MetadataRequest::Task => json_response(StatusCode::OK, &TaskResponse::new(task, false)),
        MetadataRequest::TaskWithTags => {
            json_response(StatusCode::OK, &TaskResponse::new(task, true))
        }
        MetadataRequest::ContainerStats => match source.stats(docker_id).await {
            Some(stats) => json_response(StatusCode::OK, &stats),
            None => error_response(
                StatusCode::NOT_FOUND,
                "StatsNotFound",
                "no stats for this container yet",
            ),
        },
        MetadataRequest::TaskStats => {
            // Containers not yet created have no Docker id and so no entry; created
            // ones without stats (not running) map to null, as the ECS agent does.
            let ids: Vec<&str> = task
                .containers
                .iter()
                .map(|c| c.docker_id.as_str())
                .filter(|id| !id.is_empty())
                .collect();
            let stats = futures_util::future::join_all(ids.iter().map(|id| source.stats(id))).await;
            let by_id: BTreeMap<&str, Value> = ids
                .into_iter()
                .zip(stats)
                .map(|(id, stats)| (id, stats.unwrap_or(Value::Null)))
                .collect();
            json_response(StatusCode::OK, &by_id)
        }
    }
}

/// The JSON error body of every refusal: `{"Code": ..., "Message": ...}`.
fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, &ErrorResponse { code, message })
}

/// A JSON response. (axum's `Json` needs a feature the workspace leaves off.)
fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        // Every body here is plain structs and string-keyed maps, which always
        // serialize; this arm exists so that a future change cannot panic instead.
        Err(error) => {
            tracing::error!(%error, "cannot serialize a task metadata response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorResponse<'a> {
    code: &'a str,
    message: &'a str,
}

// The wire shapes below follow the ECS agent's v4 responses field for field: the
// names, which fields are omitted when empty, and the timestamp format.

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TaskResponse<'a> {
    cluster: &'a str,
    #[serde(rename = "TaskARN")]
    task_arn: &'a str,
    family: &'a str,
    /// A string on the wire, as in the ECS agent's responses.
    revision: String,
    desired_status: &'a str,
    known_status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<LimitsResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pull_started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pull_stopped_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    availability_zone: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    launch_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_tags: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_instance_tags: Option<&'a BTreeMap<String, String>>,
    containers: Vec<ContainerResponse<'a>>,
}

impl<'a> TaskResponse<'a> {
    fn new(task: &'a MetadataTask, with_tags: bool) -> Self {
        TaskResponse {
            cluster: &task.cluster,
            task_arn: &task.task_arn,
            family: &task.family,
            revision: task.revision.to_string(),
            desired_status: &task.desired_status,
            known_status: &task.known_status,
            limits: LimitsResponse::new(task.cpu, task.memory),
            pull_started_at: task.pull_started_at.as_ref().map(rfc3339_nano),
            pull_stopped_at: task.pull_stopped_at.as_ref().map(rfc3339_nano),
            availability_zone: task.availability_zone.as_deref(),
            launch_type: task.launch_type.as_deref(),
            task_tags: with_tags.then_some(&task.task_tags),
            container_instance_tags: with_tags.then_some(&task.container_instance_tags),
            containers: task.containers.iter().map(ContainerResponse::new).collect(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerResponse<'a> {
    docker_id: &'a str,
    name: &'a str,
    docker_name: &'a str,
    image: &'a str,
    #[serde(rename = "ImageID")]
    image_id: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<PortResponse<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    desired_status: &'a str,
    known_status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<LimitsResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    /// Always `NORMAL`: Wharf runs no internal containers (pause, firelens) that the
    /// ECS agent would mark with another type.
    #[serde(rename = "Type")]
    container_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<HealthResponse<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_driver: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    log_options: &'a BTreeMap<String, String>,
    #[serde(rename = "ContainerARN", skip_serializing_if = "Option::is_none")]
    container_arn: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    networks: Vec<NetworkResponse<'a>>,
}

impl<'a> ContainerResponse<'a> {
    fn new(container: &'a MetadataContainer) -> Self {
        ContainerResponse {
            docker_id: &container.docker_id,
            name: &container.name,
            docker_name: &container.docker_name,
            image: &container.image,
            image_id: &container.image_id,
            ports: container
                .ports
                .iter()
                .map(|port| PortResponse {
                    container_port: port.container_port,
                    protocol: &port.protocol,
                    host_port: port.host_port,
                    host_ip: port.host_ip.as_deref(),
                })
                .collect(),
            labels: &container.labels,
            desired_status: &container.desired_status,
            known_status: &container.known_status,
            exit_code: container.exit_code,
            limits: LimitsResponse::new(container.cpu, container.memory),
            created_at: container.created_at.as_ref().map(rfc3339_nano),
            started_at: container.started_at.as_ref().map(rfc3339_nano),
            finished_at: container.finished_at.as_ref().map(rfc3339_nano),
            container_type: "NORMAL",
            health: container.health.as_ref().map(|health| HealthResponse {
                status: &health.status,
                since: health.since.as_ref().map(rfc3339_nano),
                output: health.output.as_deref(),
            }),
            log_driver: container.log_driver.as_deref(),
            log_options: &container.log_options,
            container_arn: container.container_arn.as_deref(),
            networks: container
                .networks
                .iter()
                .map(|network| NetworkResponse {
                    network_mode: &network.mode,
                    ipv4_addresses: &network.ipv4,
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct LimitsResponse {
    #[serde(rename = "CPU", skip_serializing_if = "Option::is_none")]
    cpu: Option<JsonNumber>,
    #[serde(rename = "Memory", skip_serializing_if = "Option::is_none")]
    memory: Option<i64>,
}

impl LimitsResponse {
    /// `None` when neither limit is set, so `Limits` is omitted as ECS documents.
    fn new(cpu: Option<f64>, memory: Option<i64>) -> Option<Self> {
        (cpu.is_some() || memory.is_some()).then_some(LimitsResponse {
            cpu: cpu.map(JsonNumber),
            memory,
        })
    }
}

/// A number written as Go writes a float64: `10`, not `10.0`, when it is whole.
struct JsonNumber(f64);

impl Serialize for JsonNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Whole numbers below 2^53 are exactly representable as i64.
        if self.0.fract() == 0.0 && self.0.abs() < 9_007_199_254_740_992.0 {
            serializer.serialize_i64(self.0 as i64)
        } else {
            serializer.serialize_f64(self.0)
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PortResponse<'a> {
    container_port: u16,
    protocol: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_ip: Option<&'a str>,
}

/// The one object of the v4 responses whose fields are camel-cased, as in the ECS
/// agent.
#[derive(Serialize)]
struct HealthResponse<'a> {
    status: &'a str,
    #[serde(rename = "statusSince", skip_serializing_if = "Option::is_none")]
    since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a str>,
}

#[derive(Serialize)]
struct NetworkResponse<'a> {
    #[serde(rename = "NetworkMode")]
    network_mode: &'a str,
    #[serde(
        rename = "IPv4Addresses",
        skip_serializing_if = "<[Ipv4Addr]>::is_empty"
    )]
    ipv4_addresses: &'a [Ipv4Addr],
}

/// A timestamp as Go's `time.RFC3339Nano` writes it (what the ECS agent returns):
/// UTC, `Z`, and the fraction of a second without trailing zeros.
fn rfc3339_nano(at: &DateTime<Utc>) -> String {
    let mut text = at.format("%Y-%m-%dT%H:%M:%S").to_string();
    // chrono represents a leap second as nanoseconds past 10^9; Go cannot, so clamp.
    let nanos = at.timestamp_subsec_nanos().min(999_999_999);
    if nanos > 0 {
        text.push('.');
        text.push_str(format!("{nanos:09}").trim_end_matches('0'));
    }
    text.push('Z');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn paths_parse_into_requests() {
        let cases = [
            ("/v4/abc", Some(("abc", MetadataRequest::Container))),
            ("/v4/abc/", Some(("abc", MetadataRequest::Container))),
            ("/v4/abc/task", Some(("abc", MetadataRequest::Task))),
            ("/v4/abc/task/", Some(("abc", MetadataRequest::Task))),
            (
                "/v4/abc/taskWithTags",
                Some(("abc", MetadataRequest::TaskWithTags)),
            ),
            (
                "/v4/abc/stats",
                Some(("abc", MetadataRequest::ContainerStats)),
            ),
            (
                "/v4/abc/task/stats",
                Some(("abc", MetadataRequest::TaskStats)),
            ),
            ("/v4/abc//", None),
            ("/v4/abc//task", None),
            ("/v4/", None),
            ("/v4//task", None),
            ("/v4", None),
            ("/v3/abc/task", None),
            ("/v4/abc/tasks", None),
            ("/v4/abc/taskwithtags", None),
            ("/v4/abc/task/stats/x", None),
            ("/v4/abc/stats/task", None),
            ("", None),
        ];
        for (path, expected) in cases {
            assert_eq!(parse_metadata_path(path), expected, "{path:?}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_nano_like_go() {
        let at = |nanos| {
            Utc.with_ymd_and_hms(2020, 10, 2, 0, 43, 6).unwrap()
                + chrono::Duration::nanoseconds(nanos)
        };
        assert_eq!(rfc3339_nano(&at(0)), "2020-10-02T00:43:06Z");
        assert_eq!(
            rfc3339_nano(&at(312_884_650)),
            "2020-10-02T00:43:06.31288465Z"
        );
        assert_eq!(rfc3339_nano(&at(1)), "2020-10-02T00:43:06.000000001Z");
        assert_eq!(rfc3339_nano(&at(500_000_000)), "2020-10-02T00:43:06.5Z");
    }

    #[test]
    fn whole_numbers_are_written_without_a_fraction() {
        let json = |n: f64| serde_json::to_string(&JsonNumber(n)).unwrap();
        assert_eq!(json(10.0), "10");
        assert_eq!(json(0.0), "0");
        assert_eq!(json(0.25), "0.25");
        assert_eq!(json(-2.0), "-2");
        assert_eq!(serde_json::from_str::<f64>(&json(1e300)).unwrap(), 1e300);
    }

    #[test]
    fn tokens_are_distinct_and_url_safe() {
        let a = new_metadata_token();
        let b = new_metadata_token();
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        let uri = metadata_uri("172.17.0.1:51679".parse().unwrap(), &a);
        assert_eq!(uri, format!("http://172.17.0.1:51679/v4/{a}"));
        assert_eq!(
            parse_metadata_path(&uri["http://172.17.0.1:51679".len()..]),
            Some((a.as_str(), MetadataRequest::Container))
        );
    }
}
