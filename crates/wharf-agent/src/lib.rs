//! Wharf's node agent: one per machine that runs containers.
//!
//! The agent owns what happens on its node: registering the node as a container
//! instance, receiving task payloads and supervising their containers (pull, create,
//! start, stop, re-adopt after a restart), running health checks, serving the task
//! metadata and credentials endpoints to the containers, and reporting stats and state
//! changes back to the control plane. Every call to the container engine goes through
//! the [`runtime::ContainerRuntime`] trait; Docker (through bollard) is the real
//! implementation and a recording fake serves the unit tests.
//!
//! What the agent must not do: decide placement. Which task runs on which node is the
//! scheduler's decision, made in the control plane; the agent runs what it is given and
//! reports what happened.

#![warn(missing_docs)]

pub mod config;
pub mod engine;
pub mod hollow;
pub mod metadata;
pub mod node;
pub mod registration;
pub mod runtime;
