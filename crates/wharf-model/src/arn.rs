//! Amazon Resource Names for ECS resources, built and parsed.
//!
//! ECS accepts either a short name or a full ARN wherever it takes a reference
//! (`--cluster demo` or `--cluster arn:aws:ecs:us-east-1:000000000000:cluster/demo`);
//! [`Arn::parse`] and the `resolve_*` helpers turn both into the short form.

use std::fmt;

/// The kind of ECS resource an ARN names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// `cluster/<name>`
    Cluster,
    /// `task-definition/<family>:<revision>`
    TaskDefinition,
    /// `task/<cluster>/<id>`
    Task,
    /// `container-instance/<cluster>/<id>`
    ContainerInstance,
    /// `service/<cluster>/<name>`
    Service,
    /// `capacity-provider/<name>`
    CapacityProvider,
    /// `container/<cluster>/<task id>/<container id>`
    Container,
}

impl ResourceKind {
    /// The resource-type word that starts an ARN's resource part.
    pub fn word(self) -> &'static str {
        match self {
            ResourceKind::Cluster => "cluster",
            ResourceKind::TaskDefinition => "task-definition",
            ResourceKind::Task => "task",
            ResourceKind::ContainerInstance => "container-instance",
            ResourceKind::Service => "service",
            ResourceKind::CapacityProvider => "capacity-provider",
            ResourceKind::Container => "container",
        }
    }

    fn from_word(word: &str) -> Option<Self> {
        Some(match word {
            "cluster" => ResourceKind::Cluster,
            "task-definition" => ResourceKind::TaskDefinition,
            "task" => ResourceKind::Task,
            "container-instance" => ResourceKind::ContainerInstance,
            "service" => ResourceKind::Service,
            "capacity-provider" => ResourceKind::CapacityProvider,
            "container" => ResourceKind::Container,
            _ => return None,
        })
    }
}

/// Why a string is not an ECS ARN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArnError {
    /// It does not have the `arn:<partition>:ecs:<region>:<account>:<resource>` form.
    #[error("not an ECS ARN: {0}")]
    Malformed(String),
    /// The resource type is not one ECS uses.
    #[error("unknown ECS resource type in ARN: {0}")]
    UnknownResource(String),
}

/// A parsed ECS ARN.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Arn {
    /// The region part.
    pub region: String,
    /// The account part.
    pub account: String,
    /// What it names.
    pub kind: ResourceKind,
    /// The resource path after `<kind>/`, e.g. `demo` or `demo/0f3c…` or `web:3`.
    pub resource: String,
}

impl Arn {
    /// Builds an ARN in the `aws` partition.
    pub fn new(region: &str, account: &str, kind: ResourceKind, resource: &str) -> Self {
        Arn {
            region: region.to_owned(),
            account: account.to_owned(),
            kind,
            resource: resource.to_owned(),
        }
    }

    /// Parses `arn:<partition>:ecs:<region>:<account>:<kind>/<resource>`.
    pub fn parse(text: &str) -> Result<Self, ArnError> {
        let mut parts = text.splitn(6, ':');
        let (Some("arn"), Some(_partition), Some("ecs"), Some(region), Some(account), Some(rest)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(ArnError::Malformed(text.to_owned()));
        };
        let (word, resource) = rest
            .split_once('/')
            .ok_or_else(|| ArnError::Malformed(text.to_owned()))?;
        let kind =
            ResourceKind::from_word(word).ok_or_else(|| ArnError::UnknownResource(text.into()))?;
        if resource.is_empty() {
            return Err(ArnError::Malformed(text.to_owned()));
        }
        Ok(Arn {
            region: region.to_owned(),
            account: account.to_owned(),
            kind,
            resource: resource.to_owned(),
        })
    }

    /// The last path segment of the resource (a task id, a cluster name, `web:3`).
    pub fn last_segment(&self) -> &str {
        self.resource.rsplit('/').next().unwrap_or(&self.resource)
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:aws:ecs:{}:{}:{}/{}",
            self.region,
            self.account,
            self.kind.word(),
            self.resource
        )
    }
}

/// Whether a reference looks like an ARN rather than a short name.
pub fn is_arn(reference: &str) -> bool {
    reference.starts_with("arn:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        for (kind, resource) in [
            (ResourceKind::Cluster, "demo"),
            (ResourceKind::TaskDefinition, "web:3"),
            (ResourceKind::Task, "demo/0123456789abcdef"),
            (ResourceKind::ContainerInstance, "demo/abc"),
            (ResourceKind::Service, "demo/api"),
            (ResourceKind::CapacityProvider, "FARGATE"),
        ] {
            let arn = Arn::new("eu-west-1", "000000000000", kind, resource);
            let text = arn.to_string();
            assert_eq!(Arn::parse(&text).unwrap(), arn, "{text}");
        }
    }

    #[test]
    fn refuses_other_services_and_shapes() {
        assert!(Arn::parse("arn:aws:ecr:us-east-1:1:repository/x").is_err());
        assert!(Arn::parse("arn:aws:ecs:us-east-1:1:cluster").is_err());
        assert!(Arn::parse("arn:aws:ecs:us-east-1:1:cluster/").is_err());
        assert!(matches!(
            Arn::parse("arn:aws:ecs:us-east-1:1:bucket/x"),
            Err(ArnError::UnknownResource(_))
        ));
        assert!(Arn::parse("demo").is_err());
    }

    #[test]
    fn last_segment_is_the_id() {
        let arn = Arn::parse("arn:aws:ecs:us-east-1:1:task/demo/abc").unwrap();
        assert_eq!(arn.last_segment(), "abc");
    }
}
