//! The HTTP data plane of Wharf's load balancers, and the records it is configured by.
//!
//! [`records`] is the contract between the ELBv2 API (in `wharf-control`), which writes
//! load balancers, listeners, rules, target groups and targets into the store, the
//! service controller, which registers and drains task targets, and the data plane,
//! which watches those records, serves each listener's port and writes back the health
//! it observes.
//!
//! The data plane:
//! - [`routing`] compiles the records into an immutable [`routing::RouteTable`] and
//!   makes the pure decisions on it (which rule, which target group, which target);
//! - [`proxy`] serves listener ports (HTTP/1.1 and h2c) and forwards requests over
//!   keep-alive connections kept per target, reading the table through an `ArcSwap`;
//! - [`upstream`] sends requests without a body to HTTP/1.1 targets itself and reads
//!   their answers in the task serving the client;
//! - [`health`] runs the active health checks and writes health records on change;
//! - [`plane`] follows the store, rebuilds and swaps the table, opens and closes
//!   listener sockets and starts and stops health checkers;
//! - [`access_log`] writes one line per request;
//! - [`static_config`] reads a JSON file of records for running without a control
//!   plane;
//! - [`remote`] mirrors a remote control plane's records into a local store over its
//!   feed and posts the health the plane observes back (`wharf lb --control-plane`).
//!
//! What it must not do: write any record but [`records::TargetHealthRecord`], or
//! take a lock on the request path other than a target's idle-connection list, held
//! only to take one connection out or put one back.

pub mod access_log;
pub mod health;
pub mod plane;
pub mod proxy;
pub mod records;
pub mod remote;
pub mod routing;
pub mod static_config;
pub mod upstream;

pub use plane::{Plane, PlaneConfig, PlaneError};
