//! placeholder
pub mod runtime;
