//! Wharf's domain model: the nouns of ECS and the rules about how they may change.
//!
//! This crate owns resource names and ARNs ([`arn`]), and the lifecycles of tasks,
//! container instances, task definitions, clusters and capacity providers as status
//! types whose transitions are asked of the type (`can_move_to`) and refused when
//! illegal ([`lifecycle`]). Callers never re-derive which moves are legal.
//!
//! It must not do I/O, read the clock, generate random ids (ids and timestamps are
//! passed in), or know the AWS wire casing: the API layer maps these types to and from
//! the wire shapes. Types derive serde only so that the store can persist them.

pub mod arn;
pub mod lifecycle;
pub mod names;

pub use arn::{Arn, ArnError, ResourceKind};
pub use lifecycle::{
    CapacityProviderStatus, ClusterStatus, ContainerInstanceStatus, DesiredTaskStatus,
    IllegalTransition, StopCode, TaskDefinitionStatus, TaskLifecycle, TaskStatus,
};
