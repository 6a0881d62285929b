//! Drives the fake with the real kube-rs client (and the binary as a black box): one test binary,
//! so kube is linked once.

mod binary;
mod exec;
mod faults;
mod pods;
mod support;
mod watch;
mod wire;
