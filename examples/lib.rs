//! Examples of embedding scoutfs-core.
