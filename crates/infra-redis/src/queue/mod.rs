//! The priority queue: pending jobs by score, leases by deadline, concurrency slots per user and project.

mod redis_queue;
mod scripts;

pub use redis_queue::RedisQueue;
