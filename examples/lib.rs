//! Examples of embedding scoutfs-core.

pub mod agent;
