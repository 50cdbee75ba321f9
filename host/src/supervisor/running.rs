//! A host running on a task of the current runtime, for programs that
//! embed it (the demo, the benchmarks, the tests).

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::plugin::Compiler;
use crate::shutdown::Shutdown;

use super::*;

/// A host running on a task of its own: for the demo and the tests.
#[derive(Debug)]
pub struct RunningHost {
    pub metrics: Arc<Metrics>,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl RunningHost {
    /// Starts a host; plugins are compiled by `compiler`.
    pub fn start(config: Config, redis: crate::redis::Redis, compiler: Compiler) -> Self {
        let metrics = Arc::new(Metrics::default());
        let shutdown = Shutdown::new();
        let task = tokio::spawn(run(
            config,
            redis,
            compiler,
            shutdown.clone(),
            metrics.clone(),
        ));
        RunningHost {
            metrics,
            shutdown,
            task,
        }
    }

    /// True once the host has stopped (an error at start, or after `stop`).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the host and waits for it to drain.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.drain.cancel();
        self.task.await.context("host task panicked")?
    }
}
