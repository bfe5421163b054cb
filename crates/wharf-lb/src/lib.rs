//! The HTTP data plane of Wharf's load balancers, and the records it is configured by.
//!
//! [`records`] is the contract between the ELBv2 API (in `wharf-control`), which writes
//! load balancers, listeners, rules, target groups and targets into the store, the
//! service controller, which registers and drains task targets, and the data plane,
//! which watches those records, serves each listener's port and writes back the health
//! it observes.

pub mod records;
