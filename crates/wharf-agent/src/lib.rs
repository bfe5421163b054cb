//! Wharf's node agent: one per machine that runs containers.
//!
//! The agent owns what happens on its node: its configuration ([`config`], the ECS
//! agent's `ecs.config` keys), registering the node as a container instance
//! ([`registration`]), receiving task payloads and supervising their containers
//! ([`engine`]: pull, create, start in dependency order, health, stop, re-adopt after a
//! restart, clean up), serving the task metadata endpoint v4 to the containers
//! ([`metadata`]), and reporting state changes back to the control plane; [`node`]
//! wires these together. [`hollow`] simulates instances for scale tests with the same
//! channel code. Every call to the container engine goes through the
//! [`runtime::ContainerRuntime`] trait; Docker (through bollard) is the real
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
