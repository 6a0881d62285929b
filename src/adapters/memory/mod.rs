//! In-process adapters, for state that only one process needs to see.

mod ratelimit;

pub use ratelimit::MemoryRateLimiter;
