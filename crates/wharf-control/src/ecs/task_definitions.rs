//! Task definitions: RegisterTaskDefinition, DescribeTaskDefinition,
//! ListTaskDefinitions, ListTaskDefinitionFamilies, DeregisterTaskDefinition,
//! DeleteTaskDefinitions.
//!
//! The rules a registration must satisfy live in `task_definition_rules`; this module
//! gives each family its revision numbers and keeps the revisions' status.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wharf_aws::AwsError;
use wharf_model::{arn, Arn, ResourceKind, TaskDefinitionStatus};
use wharf_store::Txn;

use super::tags::{wire_tags, Tag};
use super::task_definition_rules::validate_registration;
use super::{client_error, epoch_seconds, invalid, keys, paging, Cx, EcsService};
use crate::records::{encode, too_much_contention, Versioned, MAX_CONFLICT_RETRIES};

/// What placement needs to know about a task definition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct TaskResourceNeeds {
    pub cpu_units: i64,
    pub memory_mib: i64,
    pub host_ports_tcp: Vec<u16>,
    pub host_ports_udp: Vec<u16>,
    pub requires_attributes: Vec<(String, Option<String>)>,
    pub member_of: Vec<String>,
}

/// One revision of a task definition, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskDefinitionRecord {
    pub family: String,
    pub revision: i64,
    pub arn: String,
    pub status: TaskDefinitionStatus,
    /// The normalized definition in wire shape, without the members this module owns
    /// (ARN, revision, status, registration and deregistration times).
    pub wire: Value,
    pub needs: TaskResourceNeeds,
    pub registered_at: i64,
    pub registered_by: String,
    pub deregistered_at: Option<i64>,
    pub tags: Vec<Tag>,
}

impl TaskDefinitionRecord {
    /// The `TaskDefinition` wire shape.
    pub fn to_wire(&self) -> Value {
        let mut wire = self.wire.clone();
        if !wire.is_object() {
            wire = json!({});
        }
        wire["taskDefinitionArn"] = json!(self.arn);
        wire["family"] = json!(self.family);
        wire["revision"] = json!(self.revision);
        wire["status"] = json!(self.status.as_str());
        wire["registeredAt"] = epoch_seconds(self.registered_at);
        wire["registeredBy"] = json!(self.registered_by);
        if let Some(at) = self.deregistered_at {
            wire["deregisteredAt"] = epoch_seconds(at);
        }
        wire
    }
}

/// A family's revision counter. Revisions are never reused, even after deletion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FamilyRecord {
    pub last_revision: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeTaskDefinitionRequest {
    task_definition: String,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListTaskDefinitionsRequest {
    family_prefix: Option<String>,
    status: Option<String>,
    sort: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListTaskDefinitionFamiliesRequest {
    family_prefix: Option<String>,
    status: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeregisterTaskDefinitionRequest {
    task_definition: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeleteTaskDefinitionsRequest {
    task_definitions: Vec<String>,
}

/// A task definition reference: `family`, `family:revision`, or an ARN.
pub(crate) enum TaskDefinitionRef {
    /// The latest ACTIVE revision of a family.
    Latest(String),
    /// One revision.
    Revision(String, i64),
}

impl TaskDefinitionRef {
    pub fn parse(reference: &str) -> Result<Self, AwsError> {
        let short = if arn::is_arn(reference) {
            let parsed = Arn::parse(reference).map_err(|e| invalid(e.to_string()))?;
            if parsed.kind != ResourceKind::TaskDefinition {
                return Err(invalid(format!("{reference} is not a task definition ARN")));
            }
            parsed.resource
        } else {
            reference.to_owned()
        };
        match short.rsplit_once(':') {
            Some((family, revision)) => {
                let revision = revision
                    .parse::<i64>()
                    .ok()
                    .filter(|r| *r >= 1)
                    .ok_or_else(|| {
                        invalid(format!("Invalid revision number. Number: {revision}"))
                    })?;
                Ok(TaskDefinitionRef::Revision(family.to_owned(), revision))
            }
            None if short.is_empty() => Err(invalid("Task definition cannot be empty.")),
            None => Ok(TaskDefinitionRef::Latest(short)),
        }
    }
}

fn unable_to_describe() -> AwsError {
    client_error("Unable to describe task definition.")
}

impl EcsService {
    /// Resolves a reference to a stored revision (the latest ACTIVE one for a bare
    /// family), or None.
    pub(crate) async fn find_task_definition(
        &self,
        cx: &Cx<'_>,
        reference: &str,
    ) -> Result<Option<Versioned<TaskDefinitionRecord>>, AwsError> {
        match TaskDefinitionRef::parse(reference)? {
            TaskDefinitionRef::Revision(family, revision) => {
                self.records
                    .get(&keys::task_definition(cx.region, &family, revision))
                    .await
            }
            TaskDefinitionRef::Latest(family) => Ok(self
                .records
                .list::<TaskDefinitionRecord>(&keys::task_definitions_of(cx.region, &family))
                .await?
                .into_iter()
                .rev()
                .find(|r| r.value.status == TaskDefinitionStatus::Active)),
        }
    }

    pub(crate) async fn register_task_definition(
        &self,
        cx: &Cx<'_>,
        input: Value,
    ) -> Result<Value, AwsError> {
        let spec = validate_registration(&input)?;
        let family_key = keys::family(cx.region, &spec.family);
        let _queued = self.key_locks.lock(&family_key).await;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let family = self.records.get::<FamilyRecord>(&family_key).await?;
            let (last, family_revision) = family
                .map(|f| (f.value.last_revision, f.revision))
                .unwrap_or((0, 0));
            let revision = last + 1;
            let record = TaskDefinitionRecord {
                family: spec.family.clone(),
                revision,
                arn: cx.arn(
                    ResourceKind::TaskDefinition,
                    &format!("{}:{revision}", spec.family),
                ),
                status: TaskDefinitionStatus::Active,
                wire: spec.wire.clone(),
                needs: TaskResourceNeeds {
                    cpu_units: spec.placement.cpu_units,
                    memory_mib: spec.placement.memory_mib,
                    host_ports_tcp: spec.placement.host_ports_tcp.clone(),
                    host_ports_udp: spec.placement.host_ports_udp.clone(),
                    requires_attributes: spec.placement.requires_attributes.clone(),
                    member_of: spec.placement.member_of.clone(),
                },
                registered_at: cx.now_millis,
                registered_by: format!("arn:aws:iam::{}:root", cx.account),
                deregistered_at: None,
                tags: spec
                    .tags
                    .iter()
                    .map(|(key, value)| Tag {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect(),
            };
            let key = keys::task_definition(cx.region, &spec.family, revision);
            let txn = Txn::new()
                .when_mod_revision(&family_key, family_revision)
                .when_mod_revision(&key, 0)
                .put(
                    &family_key,
                    encode(&FamilyRecord {
                        last_revision: revision,
                    }),
                )
                .put(&key, encode(&record));
            if self.records.commit(txn).await? {
                return Ok(json!({
                    "taskDefinition": record.to_wire(),
                    "tags": wire_tags(&record.tags),
                }));
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn describe_task_definition(
        &self,
        cx: &Cx<'_>,
        req: DescribeTaskDefinitionRequest,
    ) -> Result<Value, AwsError> {
        let record = self
            .find_task_definition(cx, &req.task_definition)
            .await?
            .ok_or_else(unable_to_describe)?;
        let mut out = json!({"taskDefinition": record.value.to_wire()});
        if req.include.iter().any(|i| i == "TAGS") {
            out["tags"] = wire_tags(&record.value.tags);
        }
        Ok(out)
    }

    pub(crate) async fn list_task_definitions(
        &self,
        cx: &Cx<'_>,
        req: ListTaskDefinitionsRequest,
    ) -> Result<Value, AwsError> {
        let status = req
            .status
            .as_deref()
            .map(|s| {
                TaskDefinitionStatus::parse(s)
                    .ok_or_else(|| invalid(format!("Invalid status: {s}")))
            })
            .transpose()?
            .unwrap_or(TaskDefinitionStatus::Active);
        let descending = match req.sort.as_deref() {
            None | Some("ASC") => false,
            Some("DESC") => true,
            Some(other) => return Err(invalid(format!("Invalid sort: {other}"))),
        };
        // `familyPrefix` names a whole family, despite its name, as in ECS.
        let prefix = match &req.family_prefix {
            Some(family) => keys::task_definitions_of(cx.region, family),
            None => keys::task_definitions(cx.region),
        };
        let mut records: Vec<TaskDefinitionRecord> = self
            .records
            .list::<TaskDefinitionRecord>(&prefix)
            .await?
            .into_iter()
            .map(|r| r.value)
            .filter(|r| r.status == status)
            .collect();
        records.sort_by(|a, b| (&a.family, a.revision).cmp(&(&b.family, b.revision)));
        if descending {
            records.reverse();
        }
        let (page, next) = paging::page_in_order(
            records,
            |r| format!("{}\u{0}{:010}", r.family, r.revision),
            req.next_token.as_deref(),
            req.max_results,
            100,
            descending,
        )?;
        let arns: Vec<&str> = page.iter().map(|r| r.arn.as_str()).collect();
        Ok(json!({"taskDefinitionArns": arns, "nextToken": next}))
    }

    pub(crate) async fn list_task_definition_families(
        &self,
        cx: &Cx<'_>,
        req: ListTaskDefinitionFamiliesRequest,
    ) -> Result<Value, AwsError> {
        let want = req.status.as_deref().unwrap_or("ACTIVE");
        if !["ACTIVE", "INACTIVE", "ALL"].contains(&want) {
            return Err(invalid(format!("Invalid status: {want}")));
        }
        let records = self
            .records
            .list::<TaskDefinitionRecord>(&keys::task_definitions(cx.region))
            .await?;
        // A family is ACTIVE while any of its revisions is ACTIVE.
        let mut families: std::collections::BTreeMap<String, bool> = Default::default();
        for record in records {
            let active = families.entry(record.value.family.clone()).or_insert(false);
            *active |= record.value.status == TaskDefinitionStatus::Active;
        }
        let prefix = req.family_prefix.unwrap_or_default();
        let names: Vec<String> = families
            .into_iter()
            .filter(|(name, active)| {
                name.starts_with(&prefix)
                    && match want {
                        "ACTIVE" => *active,
                        "INACTIVE" => !*active,
                        _ => true,
                    }
            })
            .map(|(name, _)| name)
            .collect();
        let (names, next) = paging::page(
            names,
            String::clone,
            req.next_token.as_deref(),
            req.max_results,
            100,
        )?;
        Ok(json!({"families": names, "nextToken": next}))
    }

    pub(crate) async fn deregister_task_definition(
        &self,
        cx: &Cx<'_>,
        req: DeregisterTaskDefinitionRequest,
    ) -> Result<Value, AwsError> {
        let TaskDefinitionRef::Revision(family, revision) =
            TaskDefinitionRef::parse(&req.task_definition)?
        else {
            return Err(client_error(
                "The specified task definition identifier is invalid. Specify a valid name or ARN and try again.",
            ));
        };
        let key = keys::task_definition(cx.region, &family, revision);
        for _ in 0..MAX_CONFLICT_RETRIES {
            let Some(current) = self.records.get::<TaskDefinitionRecord>(&key).await? else {
                return Err(client_error(
                    "The specified task definition does not exist.",
                ));
            };
            let mut record = current.value.clone();
            if record.status != TaskDefinitionStatus::Active {
                return Ok(json!({"taskDefinition": record.to_wire()}));
            }
            record.status = TaskDefinitionStatus::Inactive;
            record.deregistered_at = Some(cx.now_millis);
            if self.records.put_if(&key, &record, current.revision).await? {
                return Ok(json!({"taskDefinition": record.to_wire()}));
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn delete_task_definitions(
        &self,
        cx: &Cx<'_>,
        req: DeleteTaskDefinitionsRequest,
    ) -> Result<Value, AwsError> {
        if req.task_definitions.is_empty() || req.task_definitions.len() > 10 {
            return Err(invalid(
                "taskDefinitions must have between 1 and 10 entries.",
            ));
        }
        let mut deleted = Vec::new();
        let mut failures = Vec::new();
        'refs: for reference in &req.task_definitions {
            let TaskDefinitionRef::Revision(family, revision) =
                TaskDefinitionRef::parse(reference)?
            else {
                failures.push(json!({"arn": reference, "reason": "The specified task definition identifier is invalid. Specify a valid name or ARN and try again."}));
                continue;
            };
            let key = keys::task_definition(cx.region, &family, revision);
            for _ in 0..MAX_CONFLICT_RETRIES {
                let Some(current) = self.records.get::<TaskDefinitionRecord>(&key).await? else {
                    failures.push(json!({"arn": reference, "reason": "The specified task definition does not exist."}));
                    continue 'refs;
                };
                let mut record = current.value.clone();
                if !record
                    .status
                    .can_move_to(TaskDefinitionStatus::DeleteInProgress)
                {
                    if record.status == TaskDefinitionStatus::DeleteInProgress {
                        deleted.push(record.to_wire());
                    } else {
                        failures.push(json!({
                            "arn": record.arn,
                            "reason": "The specified task definition is still in ACTIVE status. Please deregister the target and try again.",
                        }));
                    }
                    continue 'refs;
                }
                record.status = TaskDefinitionStatus::DeleteInProgress;
                if self.records.put_if(&key, &record, current.revision).await? {
                    deleted.push(record.to_wire());
                    continue 'refs;
                }
            }
            return Err(too_much_contention());
        }
        Ok(json!({"taskDefinitions": deleted, "failures": failures}))
    }
}
