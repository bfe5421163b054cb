//! The service operations: CreateService, UpdateService, DeleteService,
//! DescribeServices, ListServices.
//!
//! Requests have already been checked against the model's input shapes; these handlers
//! apply ECS's semantic rules and answer with its exception names.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wharf_aws::AwsError;
use wharf_model::{arn, Arn, ResourceKind};

use super::{
    CircuitBreaker, DeploymentConfiguration, DeploymentRecord, DeploymentStatus,
    SchedulingStrategy, ServiceLoadBalancer, ServiceRecord, ServiceStatus, ThresholdConfiguration,
};
use crate::ecs::tags::{check_tags, WireTag};
use crate::ecs::task_definitions::TaskDefinitionRecord;
use crate::ecs::{client_error, invalid, keys, paging, Cx, EcsService};
use crate::records::{too_much_contention, Versioned, MAX_CONFLICT_RETRIES};

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireCircuitBreaker {
    enable: bool,
    rollback: bool,
    reset_on_healthy_task: Option<bool>,
    threshold_configuration: Option<WireThreshold>,
}

#[derive(Deserialize, Serialize)]
pub(crate) struct WireThreshold {
    #[serde(rename = "type")]
    kind: String,
    value: i64,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireDeploymentConfiguration {
    deployment_circuit_breaker: Option<WireCircuitBreaker>,
    maximum_percent: Option<i64>,
    minimum_healthy_percent: Option<i64>,
    strategy: Option<String>,
    alarms: Option<Value>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireLoadBalancer {
    target_group_arn: Option<String>,
    load_balancer_name: Option<String>,
    container_name: Option<String>,
    container_port: Option<i64>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateServiceRequest {
    cluster: Option<String>,
    service_name: String,
    task_definition: Option<String>,
    #[serde(default)]
    load_balancers: Vec<WireLoadBalancer>,
    #[serde(default)]
    service_registries: Vec<Value>,
    desired_count: Option<i64>,
    launch_type: Option<String>,
    #[serde(default)]
    capacity_provider_strategy: Vec<Value>,
    role: Option<String>,
    deployment_configuration: Option<WireDeploymentConfiguration>,
    #[serde(default)]
    placement_constraints: Vec<Value>,
    #[serde(default)]
    placement_strategy: Vec<Value>,
    network_configuration: Option<Value>,
    health_check_grace_period_seconds: Option<i64>,
    scheduling_strategy: Option<String>,
    deployment_controller: Option<Value>,
    #[serde(default)]
    tags: Vec<WireTag>,
    #[serde(rename = "enableECSManagedTags")]
    enable_ecs_managed_tags: Option<bool>,
    propagate_tags: Option<String>,
    enable_execute_command: Option<bool>,
    /// Not part of the parameters a retry is compared on.
    #[serde(skip_serializing)]
    client_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateServiceRequest {
    cluster: Option<String>,
    service: String,
    desired_count: Option<i64>,
    task_definition: Option<String>,
    #[serde(default)]
    capacity_provider_strategy: Vec<Value>,
    deployment_configuration: Option<WireDeploymentConfiguration>,
    network_configuration: Option<Value>,
    placement_constraints: Option<Vec<Value>>,
    placement_strategy: Option<Vec<Value>>,
    force_new_deployment: Option<bool>,
    health_check_grace_period_seconds: Option<i64>,
    load_balancers: Option<Vec<WireLoadBalancer>>,
    #[serde(rename = "enableECSManagedTags")]
    enable_ecs_managed_tags: Option<bool>,
    propagate_tags: Option<String>,
    enable_execute_command: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeleteServiceRequest {
    cluster: Option<String>,
    service: String,
    force: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeServicesRequest {
    cluster: Option<String>,
    services: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListServicesRequest {
    cluster: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
    launch_type: Option<String>,
    scheduling_strategy: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListServicesByNamespaceRequest {
    namespace: String,
}

/// What a CreateService client token was first used with: the request's parameters
/// (all but the cluster, which the token's key already names, and the token itself).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientTokenBinding {
    parameters: Value,
    bound_at: i64,
}

/// ECS's answer to a CreateService that clashes with an existing service of the name,
/// or that reuses a client token with other parameters (CreateService declares no
/// ConflictException, unlike RunTask).
fn not_idempotent() -> AwsError {
    invalid("Creation of service was not idempotent.")
}

/// A client token is 1 to 36 ASCII characters from `!` (33) to `~` (126).
fn check_client_token(token: &str) -> Result<(), AwsError> {
    if token.is_empty() || token.len() > 36 || !token.bytes().all(|b| (33..=126).contains(&b)) {
        return Err(invalid(
            "clientToken must be 1 to 36 ASCII characters in the range 33-126.",
        ));
    }
    Ok(())
}

/// The parameters a retried CreateService is compared on: the request as given,
/// without its cluster and client token.
fn creation_parameters(req: &CreateServiceRequest) -> Result<Value, AwsError> {
    let mut parameters = serde_json::to_value(req)
        .map_err(|e| AwsError::server("ServerException", e.to_string()))?;
    if let Some(map) = parameters.as_object_mut() {
        map.remove("cluster");
    }
    Ok(parameters)
}

fn service_not_found() -> AwsError {
    AwsError::client("ServiceNotFoundException", "Service not found.")
}

fn service_not_active() -> AwsError {
    AwsError::client("ServiceNotActiveException", "Service was not ACTIVE.")
}

/// ECS's rule for service names: up to 255 letters, digits, hyphens and underscores.
fn check_service_name(name: &str) -> Result<(), AwsError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "Service names can contain up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens.",
        ))
    }
}

/// The service name behind a reference (a name or a service ARN).
fn service_name(reference: &str) -> Result<String, AwsError> {
    if arn::is_arn(reference) {
        let parsed = Arn::parse(reference).map_err(|e| invalid(e.to_string()))?;
        if parsed.kind != ResourceKind::Service {
            return Err(invalid(format!("{reference} is not a service ARN")));
        }
        Ok(parsed.last_segment().to_owned())
    } else if reference.is_empty() {
        Err(invalid("Service name cannot be empty."))
    } else {
        Ok(reference.to_owned())
    }
}

/// Checks `placementConstraints`/`placementStrategy` the way placement will read them.
fn check_placement(constraints: &[Value], strategies: &[Value]) -> Result<(), AwsError> {
    let pairs = |items: &[Value], field: &str| -> Vec<(String, Option<String>)> {
        items
            .iter()
            .map(|item| {
                (
                    item.get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    item.get(field).and_then(Value::as_str).map(str::to_owned),
                )
            })
            .collect()
    };
    let constraints = pairs(constraints, "expression");
    let strategies = pairs(strategies, "field");
    fn borrow(v: &[(String, Option<String>)]) -> Vec<(&str, Option<&str>)> {
        v.iter().map(|(a, b)| (a.as_str(), b.as_deref())).collect()
    }
    wharf_scheduler::validate_placement(&borrow(&constraints), &borrow(&strategies))
        .map(|_| ())
        .map_err(|e| invalid(e.to_string()))
}

/// Builds a deployment configuration from the request over `base` (the defaults or
/// the service's current configuration).
fn deployment_configuration(
    wire: Option<WireDeploymentConfiguration>,
    base: DeploymentConfiguration,
    strategy: SchedulingStrategy,
) -> Result<DeploymentConfiguration, AwsError> {
    let Some(wire) = wire else {
        return Ok(base);
    };
    if wire.strategy.as_deref().is_some_and(|s| s != "ROLLING") {
        return Err(AwsError::client(
            "UnsupportedFeatureException",
            "Only the ROLLING deployment strategy is supported.",
        ));
    }
    if wire
        .alarms
        .is_some_and(|a| a.get("enable").and_then(Value::as_bool).unwrap_or(false))
    {
        return Err(AwsError::client(
            "UnsupportedFeatureException",
            "Deployment alarms are not supported.",
        ));
    }
    let mut config = base;
    if let Some(max) = wire.maximum_percent {
        config.maximum_percent = max;
    }
    if let Some(min) = wire.minimum_healthy_percent {
        config.minimum_healthy_percent = min;
    }
    if let Some(breaker) = wire.deployment_circuit_breaker {
        let threshold = match breaker.threshold_configuration {
            None => None,
            Some(t) => {
                if !["COUNT", "BOUNDED_PERCENT", "UNBOUNDED_PERCENT"].contains(&t.kind.as_str()) {
                    return Err(invalid(format!(
                        "Invalid thresholdConfiguration type: {}",
                        t.kind
                    )));
                }
                if t.value < 1 {
                    return Err(invalid("thresholdConfiguration value must be at least 1."));
                }
                Some(ThresholdConfiguration {
                    kind: t.kind,
                    value: t.value,
                })
            }
        };
        config.circuit_breaker = CircuitBreaker {
            enable: breaker.enable,
            rollback: breaker.rollback,
            reset_on_healthy_task: breaker.reset_on_healthy_task,
            threshold_configuration: threshold,
        };
    }
    if !(0..=100).contains(&config.minimum_healthy_percent) {
        return Err(invalid("minimumHealthyPercent must be between 0 and 100."));
    }
    match strategy {
        SchedulingStrategy::Daemon => {
            if config.maximum_percent != 100 {
                return Err(invalid(
                    "The maximumPercent parameter for daemon services must be 100.",
                ));
            }
        }
        SchedulingStrategy::Replica => {
            if config.maximum_percent < 100 {
                return Err(invalid("maximumPercent must be at least 100."));
            }
            if config.maximum_percent <= config.minimum_healthy_percent {
                return Err(invalid(
                    "maximumPercent must be greater than minimumHealthyPercent.",
                ));
            }
        }
    }
    Ok(config)
}

fn default_deployment_configuration(strategy: SchedulingStrategy) -> DeploymentConfiguration {
    match strategy {
        SchedulingStrategy::Replica => DeploymentConfiguration {
            maximum_percent: 200,
            minimum_healthy_percent: 100,
            circuit_breaker: CircuitBreaker::default(),
        },
        SchedulingStrategy::Daemon => DeploymentConfiguration {
            maximum_percent: 100,
            minimum_healthy_percent: 0,
            circuit_breaker: CircuitBreaker::default(),
        },
    }
}

fn check_propagate_tags(value: &str) -> Result<(), AwsError> {
    if ["TASK_DEFINITION", "SERVICE", "NONE"].contains(&value) {
        Ok(())
    } else {
        Err(invalid(format!("Invalid propagateTags: {value}")))
    }
}

fn check_grace_period(grace: Option<i64>) -> Result<(), AwsError> {
    if grace.is_some_and(|g| !(0..=2_147_483_647).contains(&g)) {
        return Err(invalid(
            "healthCheckGracePeriodSeconds must be between 0 and 2147483647.",
        ));
    }
    Ok(())
}

/// The `containerDefinitions[].portMappings[].containerPort`s of one container.
fn container_ports(definition: &TaskDefinitionRecord, container: &str) -> Option<Vec<i64>> {
    let def = definition
        .wire
        .get("containerDefinitions")?
        .as_array()?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(container))?;
    Some(
        def.get("portMappings")
            .and_then(Value::as_array)
            .map(|mappings| {
                mappings
                    .iter()
                    .filter_map(|m| m.get("containerPort").and_then(Value::as_i64))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

impl EcsService {
    /// The ACTIVE revision a service deploys.
    async fn deployable_definition(
        &self,
        cx: &Cx<'_>,
        reference: &str,
    ) -> Result<TaskDefinitionRecord, AwsError> {
        self.active_definition(cx, reference, "TaskDefinition not found.")
            .await
    }

    /// Validates `loadBalancers` against the task definition and the target groups.
    async fn check_load_balancers(
        &self,
        cx: &Cx<'_>,
        wire: Vec<WireLoadBalancer>,
        definition: &TaskDefinitionRecord,
    ) -> Result<Vec<ServiceLoadBalancer>, AwsError> {
        let mut out: Vec<ServiceLoadBalancer> = Vec::new();
        for lb in wire {
            if lb.load_balancer_name.is_some() && lb.target_group_arn.is_none() {
                return Err(AwsError::client(
                    "UnsupportedFeatureException",
                    "Classic Load Balancers are not supported; use a target group.",
                ));
            }
            let tg_arn = lb
                .target_group_arn
                .ok_or_else(|| invalid("targetGroupArn is required in loadBalancers."))?;
            let container = lb
                .container_name
                .ok_or_else(|| invalid("containerName is required in loadBalancers."))?;
            let port = lb
                .container_port
                .ok_or_else(|| invalid("containerPort is required in loadBalancers."))?;
            let ports = container_ports(definition, &container).ok_or_else(|| {
                invalid(format!(
                    "The container {container} does not exist in the task definition."
                ))
            })?;
            if !ports.contains(&port) {
                return Err(invalid(format!(
                    "The container {container} did not have a container port {port} defined."
                )));
            }
            let tg = self.target_group_record(cx, &tg_arn).await?.ok_or_else(|| {
                invalid(format!(
                    "Unable to assume role and validate the specified targetGroupArn. The target group {tg_arn} does not exist."
                ))
            })?;
            if tg.load_balancer_arns.is_empty() {
                return Err(invalid(format!(
                    "The target group with targetGroupArn {tg_arn} does not have an associated load balancer."
                )));
            }
            let entry = ServiceLoadBalancer {
                target_group_arn: tg_arn,
                container_name: container,
                container_port: port as u16,
            };
            if out.contains(&entry) {
                return Err(invalid("loadBalancers has duplicate entries."));
            }
            out.push(entry);
        }
        if out.len() > 5 {
            return Err(invalid("A service can have at most 5 target groups."));
        }
        Ok(out)
    }

    /// The target group an ARN names in this call's region, if it exists.
    pub(crate) async fn target_group_record(
        &self,
        cx: &Cx<'_>,
        tg_arn: &str,
    ) -> Result<Option<wharf_lb::records::TargetGroupRecord>, AwsError> {
        // arn:aws:elasticloadbalancing:<region>:<account>:targetgroup/<name>/<id>
        let parts: Vec<&str> = tg_arn.splitn(6, ':').collect();
        if parts.len() != 6 || parts[0] != "arn" || parts[2] != "elasticloadbalancing" {
            return Err(invalid(format!("Invalid targetGroupArn: {tg_arn}")));
        }
        let Some(name) = parts[5]
            .strip_prefix("targetgroup/")
            .and_then(|rest| rest.split('/').next())
        else {
            return Err(invalid(format!("Invalid targetGroupArn: {tg_arn}")));
        };
        if parts[3] != cx.region {
            return Ok(None);
        }
        let record = self
            .records
            .get::<wharf_lb::records::TargetGroupRecord>(&wharf_lb::records::target_group_key(
                cx.region, name,
            ))
            .await?;
        Ok(record.map(|r| r.value).filter(|tg| tg.arn == tg_arn))
    }

    pub(crate) async fn create_service(
        &self,
        cx: &Cx<'_>,
        mut req: CreateServiceRequest,
    ) -> Result<Value, AwsError> {
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        check_service_name(&req.service_name)?;
        let client_token = req.client_token.take();
        if let Some(token) = &client_token {
            check_client_token(token)?;
        }
        let parameters = creation_parameters(&req)?;
        let strategy = match req.scheduling_strategy.as_deref() {
            None | Some("REPLICA") => SchedulingStrategy::Replica,
            Some("DAEMON") => SchedulingStrategy::Daemon,
            Some(other) => return Err(invalid(format!("Invalid schedulingStrategy: {other}"))),
        };
        if let Some(controller) = &req.deployment_controller {
            let kind = controller
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("ECS");
            if kind != "ECS" {
                return Err(AwsError::client(
                    "UnsupportedFeatureException",
                    format!("The {kind} deployment controller is not supported."),
                ));
            }
        }
        if !req.capacity_provider_strategy.is_empty() {
            if req.launch_type.is_some() {
                return Err(invalid(
                    "Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.",
                ));
            }
            return Err(AwsError::client(
                "UnsupportedFeatureException",
                "Services with a capacity provider strategy are not supported; use a launch type.",
            ));
        }
        if !req.service_registries.is_empty() {
            return Err(AwsError::client(
                "UnsupportedFeatureException",
                "Service discovery registries are not supported.",
            ));
        }
        let launch_type = req.launch_type.clone().unwrap_or_else(|| "EC2".to_owned());
        let desired = match strategy {
            SchedulingStrategy::Replica => {
                let desired = req.desired_count.ok_or_else(|| {
                    invalid("desiredCount is required for services using the REPLICA scheduling strategy.")
                })?;
                if desired < 0 {
                    return Err(invalid("desiredCount must be at least 0."));
                }
                desired
            }
            SchedulingStrategy::Daemon => {
                if req.desired_count.is_some() {
                    return Err(invalid(
                        "The daemon scheduling strategy does not support a desired count for services.",
                    ));
                }
                if !req.placement_strategy.is_empty() {
                    return Err(invalid(
                        "The daemon scheduling strategy does not support placement strategies.",
                    ));
                }
                if launch_type == "FARGATE" {
                    return Err(invalid(
                        "The daemon scheduling strategy does not support the FARGATE launch type.",
                    ));
                }
                0
            }
        };
        check_placement(&req.placement_constraints, &req.placement_strategy)?;
        check_grace_period(req.health_check_grace_period_seconds)?;
        let propagate = req
            .propagate_tags
            .clone()
            .unwrap_or_else(|| "NONE".to_owned());
        check_propagate_tags(&propagate)?;
        let configuration = deployment_configuration(
            req.deployment_configuration,
            default_deployment_configuration(strategy),
            strategy,
        )?;
        let tags = check_tags(req.tags)?;
        let reference = req
            .task_definition
            .as_deref()
            .ok_or_else(|| invalid("TaskDefinition must be specified."))?;
        let definition = self.deployable_definition(cx, reference).await?;
        let compatible = definition
            .wire
            .get("compatibilities")
            .and_then(Value::as_array)
            .is_none_or(|list| {
                list.iter()
                    .any(|c| c.as_str() == Some(launch_type.as_str()))
            });
        if !compatible {
            return Err(invalid(format!(
                "Task definition does not support launch_type {launch_type}."
            )));
        }
        let load_balancers = self
            .check_load_balancers(cx, req.load_balancers, &definition)
            .await?;
        let key = keys::service(cx.region, &cluster.name, &req.service_name);
        let _queued = self.key_locks.lock(&key).await;
        if let Some(token) = &client_token {
            self.bind_client_token(cx, &cluster.name, token, parameters)
                .await?;
        }
        let made_by_token = |service: &ServiceRecord| {
            client_token.is_some() && service.client_token == client_token
        };
        let existing = self.records.get::<ServiceRecord>(&key).await?;
        if let Some(existing) = &existing {
            // A retry of the request that made the service answers it as it is now,
            // whatever happened to it since.
            if made_by_token(&existing.value) {
                return Ok(json!({"service": existing.value.to_wire(true)}));
            }
            if existing.value.status != ServiceStatus::Inactive {
                return Err(not_idempotent());
            }
        }
        let arn = cx.arn(
            ResourceKind::Service,
            &format!("{}/{}", cluster.name, req.service_name),
        );
        let deployment =
            DeploymentRecord::new(&definition.arn, desired, &launch_type, cx.now_millis);
        let record = ServiceRecord {
            arn,
            name: req.service_name.clone(),
            cluster: cluster.name.clone(),
            cluster_arn: cluster.arn.clone(),
            status: ServiceStatus::Active,
            desired_count: desired,
            task_definition: definition.arn.clone(),
            launch_type,
            scheduling_strategy: strategy,
            deployment_configuration: configuration,
            placement_constraints: req.placement_constraints,
            placement_strategy: req.placement_strategy,
            load_balancers,
            health_check_grace_period_seconds: req.health_check_grace_period_seconds,
            network_configuration: req.network_configuration,
            role_arn: req.role,
            propagate_tags: propagate,
            enable_ecs_managed_tags: req.enable_ecs_managed_tags.unwrap_or(false),
            enable_execute_command: req.enable_execute_command.unwrap_or(false),
            created_at: cx.now_millis,
            created_by: format!("arn:aws:iam::{}:root", cx.account),
            tags,
            client_token: client_token.clone(),
            deployments: vec![deployment],
            last_completed: None,
            events: Vec::new(),
            notes: Default::default(),
            launch_failures: 0,
            next_launch_at: None,
            steady: false,
            daemon_unplaceable: Vec::new(),
            running_count: 0,
            pending_count: 0,
        };
        let expected = existing.map(|e| e.revision).unwrap_or(0);
        if !self.records.put_if(&key, &record, expected).await? {
            // Another control-plane process wrote the service first: if that was the
            // same request (retried with its token), its service is the answer.
            if let Some(winner) = self.records.get::<ServiceRecord>(&key).await? {
                if made_by_token(&winner.value) {
                    return Ok(json!({"service": winner.value.to_wire(true)}));
                }
            }
            return Err(not_idempotent());
        }
        Ok(json!({"service": record.to_wire(true)}))
    }

    /// Binds a CreateService client token to the request's parameters, or checks that
    /// the request that bound it had the same ones. The binding is written before the
    /// service, with a create-only write, so that one token can never make two
    /// services, not even when two requests carrying it race.
    async fn bind_client_token(
        &self,
        cx: &Cx<'_>,
        cluster: &str,
        token: &str,
        parameters: Value,
    ) -> Result<(), AwsError> {
        let key = keys::service_client_token(cx.region, cluster, token);
        let binding = ClientTokenBinding {
            parameters,
            bound_at: cx.now_millis,
        };
        for _ in 0..MAX_CONFLICT_RETRIES {
            if let Some(stored) = self.records.get::<ClientTokenBinding>(&key).await? {
                if stored.value.parameters != binding.parameters {
                    return Err(not_idempotent());
                }
                return Ok(());
            }
            if self.records.put_if(&key, &binding, 0).await? {
                return Ok(());
            }
        }
        Err(too_much_contention())
    }

    /// Reads a service of an ACTIVE cluster, or fails with ServiceNotFoundException.
    async fn find_service(
        &self,
        cx: &Cx<'_>,
        cluster: &str,
        reference: &str,
    ) -> Result<(String, Versioned<ServiceRecord>), AwsError> {
        let name = service_name(reference)?;
        let key = keys::service(cx.region, cluster, &name);
        match self.records.get::<ServiceRecord>(&key).await? {
            Some(record) => Ok((key, record)),
            None => Err(service_not_found()),
        }
    }

    pub(crate) async fn update_service(
        &self,
        cx: &Cx<'_>,
        req: UpdateServiceRequest,
    ) -> Result<Value, AwsError> {
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        let (key, _) = self.find_service(cx, &cluster.name, &req.service).await?;
        if !req.capacity_provider_strategy.is_empty() {
            return Err(AwsError::client(
                "UnsupportedFeatureException",
                "Services with a capacity provider strategy are not supported; use a launch type.",
            ));
        }
        check_grace_period(req.health_check_grace_period_seconds)?;
        if let Some(propagate) = &req.propagate_tags {
            check_propagate_tags(propagate)?;
        }
        if req.desired_count.is_some_and(|d| d < 0) {
            return Err(invalid("desiredCount must be at least 0."));
        }
        let new_definition = match &req.task_definition {
            Some(reference) => Some(self.deployable_definition(cx, reference).await?),
            None => None,
        };
        let _queued = self.key_locks.lock(&key).await;
        let mut wire_config = req.deployment_configuration;
        let mut wire_lbs = req.load_balancers;
        // Writers of a service queue on its lock in this process, so the
        // compare-and-swap below only loses to another control-plane process; that
        // caller is told to retry.
        {
            let Some(current) = self.records.get::<ServiceRecord>(&key).await? else {
                return Err(service_not_found());
            };
            let mut record = current.value.clone();
            if record.status != ServiceStatus::Active {
                return Err(service_not_active());
            }
            let strategy = record.scheduling_strategy;
            if strategy == SchedulingStrategy::Daemon {
                if req.desired_count.is_some() {
                    return Err(invalid(
                        "The daemon scheduling strategy does not support a desired count for services.",
                    ));
                }
                if req
                    .placement_strategy
                    .as_ref()
                    .is_some_and(|s| !s.is_empty())
                {
                    return Err(invalid(
                        "The daemon scheduling strategy does not support placement strategies.",
                    ));
                }
            }
            record.deployment_configuration = deployment_configuration(
                wire_config.take(),
                record.deployment_configuration.clone(),
                strategy,
            )?;
            let constraints = req
                .placement_constraints
                .clone()
                .unwrap_or_else(|| record.placement_constraints.clone());
            let strategies = req
                .placement_strategy
                .clone()
                .unwrap_or_else(|| record.placement_strategy.clone());
            check_placement(&constraints, &strategies)?;
            record.placement_constraints = constraints;
            record.placement_strategy = strategies;
            if let Some(desired) = req.desired_count {
                record.desired_count = desired;
            }
            if let Some(grace) = req.health_check_grace_period_seconds {
                record.health_check_grace_period_seconds = Some(grace);
            }
            if let Some(propagate) = &req.propagate_tags {
                record.propagate_tags = propagate.clone();
            }
            if let Some(managed) = req.enable_ecs_managed_tags {
                record.enable_ecs_managed_tags = managed;
            }
            if let Some(exec) = req.enable_execute_command {
                record.enable_execute_command = exec;
            }
            let mut redeploy = req.force_new_deployment.unwrap_or(false);
            if let Some(network) = &req.network_configuration {
                redeploy |= record.network_configuration.as_ref() != Some(network);
                record.network_configuration = Some(network.clone());
            }
            let definition = match &new_definition {
                Some(definition) => definition.clone(),
                None => {
                    self.find_task_definition(cx, &record.task_definition)
                        .await?
                        .ok_or_else(|| client_error("TaskDefinition not found."))?
                        .value
                }
            };
            if definition.arn != record.task_definition {
                redeploy = true;
                record.task_definition = definition.arn.clone();
            }
            if let Some(lbs) = wire_lbs.take() {
                let checked = self.check_load_balancers(cx, lbs, &definition).await?;
                if checked != record.load_balancers {
                    redeploy = true;
                    record.load_balancers = checked;
                }
            } else if new_definition.is_some() {
                // The new revision must still have the containers and ports the
                // service's load balancers name.
                for lb in &record.load_balancers {
                    let ports = container_ports(&definition, &lb.container_name);
                    if !ports.is_some_and(|p| p.contains(&(lb.container_port as i64))) {
                        return Err(invalid(format!(
                            "The container {} did not have a container port {} defined.",
                            lb.container_name, lb.container_port
                        )));
                    }
                }
            }
            let desired = record.desired_count;
            if redeploy {
                for deployment in &mut record.deployments {
                    deployment.status = DeploymentStatus::Active;
                }
                let launch_type = record.launch_type.clone();
                record.deployments.insert(
                    0,
                    DeploymentRecord::new(
                        &record.task_definition,
                        desired,
                        &launch_type,
                        cx.now_millis,
                    ),
                );
                record.steady = false;
                // A new deployment starts with a clean slate: the back-off of the old
                // revision's failures does not hold up the new one.
                record.launch_failures = 0;
                record.next_launch_at = None;
            } else if let Some(primary) = record.primary_mut() {
                if strategy == SchedulingStrategy::Replica {
                    primary.desired_count = desired;
                }
                primary.updated_at = cx.now_millis;
            }
            if self.records.put_if(&key, &record, current.revision).await? {
                return Ok(json!({"service": record.to_wire(false)}));
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn delete_service(
        &self,
        cx: &Cx<'_>,
        req: DeleteServiceRequest,
    ) -> Result<Value, AwsError> {
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        let (key, _) = self.find_service(cx, &cluster.name, &req.service).await?;
        let _queued = self.key_locks.lock(&key).await;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let Some(current) = self.records.get::<ServiceRecord>(&key).await? else {
                return Err(service_not_found());
            };
            let mut record = current.value.clone();
            if !record.status.can_move_to(ServiceStatus::Draining) {
                return Err(service_not_found());
            }
            if record.scheduling_strategy == SchedulingStrategy::Replica
                && record.desired_count > 0
                && !req.force.unwrap_or(false)
            {
                return Err(invalid(
                    "The service cannot be stopped while it is scaled above 0.",
                ));
            }
            record.status = ServiceStatus::Draining;
            record.desired_count = 0;
            record.steady = false;
            for deployment in &mut record.deployments {
                deployment.desired_count = 0;
                deployment.updated_at = cx.now_millis;
            }
            if self.records.put_if(&key, &record, current.revision).await? {
                return Ok(json!({"service": record.to_wire(false)}));
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn describe_services(
        &self,
        cx: &Cx<'_>,
        req: DescribeServicesRequest,
    ) -> Result<Value, AwsError> {
        if req.services.is_empty() || req.services.len() > 10 {
            return Err(invalid("services must contain between 1 and 10 items."));
        }
        if let Some(bad) = req.include.iter().find(|i| i.as_str() != "TAGS") {
            return Err(invalid(format!("Invalid include value: {bad}")));
        }
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        let with_tags = !req.include.is_empty();
        let mut services = Vec::new();
        let mut failures = Vec::new();
        for reference in &req.services {
            let found = match service_name(reference) {
                Ok(name) => {
                    self.records
                        .get::<ServiceRecord>(&keys::service(cx.region, &cluster.name, &name))
                        .await?
                }
                Err(_) => None,
            };
            match found {
                Some(record) => services.push(record.value.to_wire(with_tags)),
                None => failures.push(cx.missing(
                    ResourceKind::Service,
                    reference,
                    &format!("{}/{reference}", cluster.name),
                )),
            }
        }
        Ok(json!({"services": services, "failures": failures}))
    }

    pub(crate) async fn list_services(
        &self,
        cx: &Cx<'_>,
        req: ListServicesRequest,
    ) -> Result<Value, AwsError> {
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        let services = self
            .records
            .list::<ServiceRecord>(&keys::services(cx.region, &cluster.name))
            .await?;
        let arns: Vec<String> = services
            .into_iter()
            .map(|s| s.value)
            .filter(|s| s.status == ServiceStatus::Active)
            .filter(|s| req.launch_type.as_ref().is_none_or(|l| *l == s.launch_type))
            .filter(|s| {
                req.scheduling_strategy
                    .as_deref()
                    .is_none_or(|st| st == s.scheduling_strategy.as_str())
            })
            .map(|s| s.arn)
            .collect();
        let (arns, next) = paging::page(
            arns,
            String::clone,
            req.next_token.as_deref(),
            req.max_results,
            10,
        )?;
        Ok(json!({"serviceArns": arns, "nextToken": next}))
    }
}

impl EcsService {
    /// Services are not attached to Service Connect namespaces in Wharf (it has no
    /// Cloud Map), so no namespace exists to list services of.
    pub(crate) async fn list_services_by_namespace(
        &self,
        _cx: &Cx<'_>,
        req: ListServicesByNamespaceRequest,
    ) -> Result<Value, AwsError> {
        Err(AwsError::client(
            "NamespaceNotFoundException",
            format!("The specified namespace {} wasn't found.", req.namespace),
        ))
    }
}
