//! Wharf's control plane: the ECS API and the state behind it.
//!
//! This crate owns the ECS operations (clusters, task definitions, container
//! instances, tasks, attributes, tags, account settings, capacity providers), the
//! records they keep in the store, and the plan-then-apply path that places tasks:
//! the scheduler plans against a snapshot, and the applier commits the plan with a
//! compare-and-swap on every instance it touches, re-planning when another writer got
//! there first, so that concurrent RunTask calls never over-commit an instance.
//!
//! It also owns the control plane's end of the agent channel ([`agent_channel`]: the
//! WebSocket that pushes task payloads to agents, and the logs endpoint that reads a
//! task's logs through its agent), and an in-memory view of every cluster's instances
//! and tasks fed by the store's watch, which placement and the channel read.
//!
//! It also owns the ELBv2 API ([`elbv2`]): load balancers, target groups, listeners,
//! rules and targets as the records `wharf-lb`'s data plane is configured by, and the
//! sweeper that removes targets once they have drained.
//!
//! It must not run containers (agents do). Apart from the agent channel and the
//! remote load balancers' feed ([`lb_feed`]) it does not speak HTTP itself:
//! `wharf-aws` decodes requests and encodes responses, and this crate sees typed,
//! authenticated calls.

pub mod agent_channel;
pub mod clock;
pub mod ecs;
pub mod elbv2;
mod endpoints;
pub mod lb_feed;
pub mod records;

pub use clock::{Clock, SystemClock};
pub use ecs::{EcsConfig, EcsService};
