//! Where each record lives in the store, and how references resolve to it.
//!
//! Every key starts with `ecs/<region>/`: state is regional, as in AWS, so a cluster
//! created through `eu-west-1` is invisible through `us-east-1`.

use wharf_aws::AwsError;
use wharf_model::{arn, Arn, ResourceKind};

use super::{invalid, Cx};

pub(crate) fn cluster(region: &str, name: &str) -> String {
    format!("ecs/{region}/cluster/{name}")
}
pub(crate) fn clusters(region: &str) -> String {
    format!("ecs/{region}/cluster/")
}
pub(crate) fn family(region: &str, family: &str) -> String {
    format!("ecs/{region}/family/{family}")
}
/// Revisions are zero-padded so that key order is revision order.
pub(crate) fn task_definition(region: &str, family: &str, revision: i64) -> String {
    format!("ecs/{region}/taskdef/{family}/{revision:010}")
}
pub(crate) fn task_definitions_of(region: &str, family: &str) -> String {
    format!("ecs/{region}/taskdef/{family}/")
}
pub(crate) fn task_definitions(region: &str) -> String {
    format!("ecs/{region}/taskdef/")
}
pub(crate) fn instance(region: &str, cluster: &str, id: &str) -> String {
    format!("ecs/{region}/instance/{cluster}/{id}")
}
pub(crate) fn instances(region: &str, cluster: &str) -> String {
    format!("ecs/{region}/instance/{cluster}/")
}
pub(crate) fn task(region: &str, cluster: &str, id: &str) -> String {
    format!("ecs/{region}/task/{cluster}/{id}")
}
pub(crate) fn client_token(region: &str, cluster: &str, token: &str) -> String {
    format!("ecs/{region}/client-token/{cluster}/{token}")
}
/// What a CreateService `clientToken` was first used for.
pub(crate) fn service_client_token(region: &str, cluster: &str, token: &str) -> String {
    format!("ecs/{region}/service-client-token/{cluster}/{token}")
}
pub(crate) fn capacity_provider(region: &str, name: &str) -> String {
    format!("ecs/{region}/capacity-provider/{name}")
}
pub(crate) fn capacity_providers(region: &str) -> String {
    format!("ecs/{region}/capacity-provider/")
}
pub(crate) fn service(region: &str, cluster: &str, name: &str) -> String {
    format!("ecs/{region}/service/{cluster}/{name}")
}
pub(crate) fn services(region: &str, cluster: &str) -> String {
    format!("ecs/{region}/service/{cluster}/")
}
pub(crate) fn account_setting(region: &str, principal: &str, name: &str) -> String {
    format!("ecs/{region}/account-setting/{principal}/{name}")
}

/// The short name behind a cluster reference (a name or an ARN); `default` when the
/// caller gave none, as ECS does. An ARN of another region or account names no cluster
/// here: it resolves to the ARN itself, which no cluster name can equal (names have no
/// `:` or `/`), so lookups find nothing.
pub(crate) fn cluster_name(cx: &Cx<'_>, reference: Option<&str>) -> Result<String, AwsError> {
    let reference = reference.unwrap_or("default");
    if arn::is_arn(reference) {
        let parsed = Arn::parse(reference).map_err(|e| invalid(e.to_string()))?;
        if parsed.kind != ResourceKind::Cluster {
            return Err(invalid(format!("{reference} is not a cluster ARN")));
        }
        if parsed.region != cx.region || parsed.account != cx.account {
            return Ok(reference.to_owned());
        }
        Ok(parsed.resource)
    } else if reference.is_empty() {
        Err(invalid("Cluster name cannot be empty."))
    } else {
        Ok(reference.to_owned())
    }
}

/// The id behind a task or container-instance reference (an id or an ARN of the form
/// `<kind>/<cluster>/<id>` or the older `<kind>/<id>`).
pub(crate) fn resource_id(reference: &str, kind: ResourceKind) -> Result<String, AwsError> {
    if arn::is_arn(reference) {
        let parsed = Arn::parse(reference).map_err(|e| invalid(e.to_string()))?;
        if parsed.kind != kind {
            return Err(invalid(format!("{reference} is not a {} ARN", kind.word())));
        }
        Ok(parsed.last_segment().to_owned())
    } else if reference.is_empty() || reference.contains('/') {
        Err(invalid(format!(
            "Invalid {} id: {reference:?}",
            kind.word()
        )))
    } else {
        Ok(reference.to_owned())
    }
}
