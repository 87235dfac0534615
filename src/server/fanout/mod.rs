//! Fan-out: committed events to every subscriber of a thread, in memory.

pub mod hub;
