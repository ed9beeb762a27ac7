//! The config store and job queue conformance suites (`armada_core::backend::conformance`) on
//! every backend: in memory always, Redis with the `redis` feature and RabbitMQ with the
//! `rabbitmq` feature, at `ARMADA_STORE_URL` and `ARMADA_QUEUE_URL` (default: the local
//! services). A backend that cannot be reached fails its checks: none is skipped.

use armada_core::backend::memory::{MemoryQueue, MemoryStore};

armada_core::config_store_conformance!(memory_store, async { MemoryStore::default() });
armada_core::job_queue_conformance!(memory_queue, async { MemoryQueue::default() });

#[cfg(feature = "redis")]
armada_core::config_store_conformance!(redis_store, async {
    let url = std::env::var("ARMADA_STORE_URL").unwrap_or("redis://127.0.0.1:6379".into());
    armada_core::backend::redis::RedisStore::connect(&url)
        .await
        .unwrap_or_else(|error| panic!("Redis at {url}: {error}"))
});

#[cfg(feature = "rabbitmq")]
armada_core::job_queue_conformance!(rabbitmq_queue, async {
    let url =
        std::env::var("ARMADA_QUEUE_URL").unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f".into());
    armada_core::backend::rabbitmq::RabbitQueue::connect(&url)
        .await
        .unwrap_or_else(|error| panic!("RabbitMQ at {url}: {error}"))
});
