//! Thread-safe wrappers of the lock state machines.
