//! What can go wrong in an ELBv2 operation, mapped to the wire codes the botocore
//! model gives (`error.code` of each exception shape) in one place.

use wharf_aws::AwsError;

/// An ELBv2 failure a client caused. Store failures stay [`AwsError`]s (server errors)
/// and pass through unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Elbv2Error {
    /// The request is malformed or breaks a documented constraint.
    #[error("{0}")]
    Validation(String),
    /// A combination of settings ELBv2 does not allow.
    #[error("{0}")]
    InvalidConfiguration(String),
    /// No load balancer has this ARN or name.
    #[error("{0}")]
    LoadBalancerNotFound(String),
    /// No target group has this ARN or name.
    #[error("{0}")]
    TargetGroupNotFound(String),
    /// No listener has this ARN.
    #[error("{0}")]
    ListenerNotFound(String),
    /// No rule has this ARN.
    #[error("{0}")]
    RuleNotFound(String),
    /// A load balancer of this name exists.
    #[error("A load balancer with the same name '{0}' exists, but with different settings")]
    DuplicateLoadBalancerName(String),
    /// A target group of this name exists.
    #[error("A target group with the same name '{0}' exists, but with different settings")]
    DuplicateTargetGroupName(String),
    /// The load balancer already listens on this port.
    #[error("A listener already exists on this port for this load balancer")]
    DuplicateListener,
    /// Another rule of the listener has this priority.
    #[error("Priority '{0}' is currently in use")]
    PriorityInUse(u32),
    /// A target is not valid for its target group.
    #[error("{0}")]
    InvalidTarget(String),
    /// The resource is referenced by another one.
    #[error("{0}")]
    ResourceInUse(String),
    /// Too many targets in one target group.
    #[error("You cannot register more than {0} targets in a target group")]
    TooManyTargets(usize),
    /// Too many tags on one resource.
    #[error("The quota for the number of tags that can be assigned to a load balancing resource has been reached")]
    TooManyTags,
    /// The same tag key twice in one request.
    #[error("Tag key '{0}' was specified more than once")]
    DuplicateTagKeys(String),
    /// Too many rules on one listener.
    #[error("The maximum number of rules for this listener has been reached")]
    TooManyRules,
    /// Too many actions in one rule or listener.
    #[error("{0}")]
    TooManyActions(String),
    /// A protocol Wharf's data plane does not serve.
    #[error("{0}")]
    UnsupportedProtocol(String),
    /// An action that cannot be used here.
    #[error("{0}")]
    InvalidLoadBalancerAction(String),
    /// An operation that cannot be applied to this resource.
    #[error("{0}")]
    OperationNotPermitted(String),
    /// The target group already belongs to another load balancer.
    #[error("The target group '{0}' is already associated with a different load balancer")]
    TargetGroupAssociationLimit(String),
    /// An operation or feature Wharf does not implement.
    #[error("{0}")]
    NotImplemented(String),
}

impl Elbv2Error {
    /// The wire code, as the botocore model spells it.
    pub fn code(&self) -> &'static str {
        match self {
            Elbv2Error::Validation(_) => "ValidationError",
            Elbv2Error::InvalidConfiguration(_) => "InvalidConfigurationRequest",
            Elbv2Error::LoadBalancerNotFound(_) => "LoadBalancerNotFound",
            Elbv2Error::TargetGroupNotFound(_) => "TargetGroupNotFound",
            Elbv2Error::ListenerNotFound(_) => "ListenerNotFound",
            Elbv2Error::RuleNotFound(_) => "RuleNotFound",
            Elbv2Error::DuplicateLoadBalancerName(_) => "DuplicateLoadBalancerName",
            Elbv2Error::DuplicateTargetGroupName(_) => "DuplicateTargetGroupName",
            Elbv2Error::DuplicateListener => "DuplicateListener",
            Elbv2Error::PriorityInUse(_) => "PriorityInUse",
            Elbv2Error::InvalidTarget(_) => "InvalidTarget",
            Elbv2Error::ResourceInUse(_) => "ResourceInUse",
            Elbv2Error::TooManyTargets(_) => "TooManyTargets",
            Elbv2Error::TooManyTags => "TooManyTags",
            Elbv2Error::DuplicateTagKeys(_) => "DuplicateTagKeys",
            Elbv2Error::TooManyRules => "TooManyRules",
            Elbv2Error::TooManyActions(_) => "TooManyActions",
            Elbv2Error::UnsupportedProtocol(_) => "UnsupportedProtocol",
            Elbv2Error::InvalidLoadBalancerAction(_) => "InvalidLoadBalancerAction",
            Elbv2Error::OperationNotPermitted(_) => "OperationNotPermitted",
            Elbv2Error::TargetGroupAssociationLimit(_) => "TargetGroupAssociationLimit",
            Elbv2Error::NotImplemented(_) => "InvalidAction",
        }
    }
}

impl From<Elbv2Error> for AwsError {
    fn from(err: Elbv2Error) -> Self {
        AwsError::client(err.code(), err.to_string())
    }
}

/// Shorthand for a `ValidationError`.
pub(crate) fn validation(message: impl Into<String>) -> AwsError {
    Elbv2Error::Validation(message.into()).into()
}
