//! Placement for Wharf: which container instance each task of a request goes to.
//!
//! This crate owns the cluster query language ([`query`]), the placement constraints
//! and strategies and the resource accounting behind them ([`placement`]). It is a
//! pure function from a [`ClusterSnapshot`] and a [`PlacementRequest`] to a
//! [`PlacementPlan`]; the control plane's applier re-checks a plan against the latest
//! state before committing it.
//!
//! A caller that places into the same cluster again and again (the control plane's
//! view) keeps an [`IndexedSnapshot`] instead of a bare [`ClusterSnapshot`]: the same
//! plans, from indexes kept up to date as instances change, without reading every
//! instance's attributes and task groups on each call.
//!
//! The crate must not touch the store, the clock or the network, nor do anything
//! asynchronous: every input arrives in the snapshot or the request, and the only
//! randomness comes from the seed the request carries, so the same inputs always give
//! the same plan.

#![deny(missing_docs)]

pub mod placement;
pub mod query;
pub mod snapshot;

pub use placement::{
    place_tasks, rejection_reason, validate_placement, BinpackField, FailureReason,
    IndexedSnapshot, PlacementConstraint, PlacementFailure, PlacementInputError, PlacementPlan,
    PlacementRequest, PlacementStrategy, RequiredAttribute, SpreadField, TaskPlacement,
};
pub use query::{parse_expression, Expression, QueryError};
pub use snapshot::{ClusterSnapshot, InstanceSnapshot, InstanceStatus, Resources, TaskOnInstance};
