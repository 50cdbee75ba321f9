//! Waiting for replicas after a step (`redis.wait_replicas`): an ingress
//! entry routed, a message settled. `WAIT` holds its connection until the
//! replicas answer, and it applies to the writes of the connection it is
//! sent on, so a step that waits is written, and waited for, on a
//! connection of the host's own, from a small pool, never on the shared one
//! (which it would stall for everything else).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::redis::{Conn, Redis, StreamError, StreamResult};

/// How long the host goes on without waiting after replicas fell short.
pub const SHORT_PAUSE: Duration = Duration::from_secs(5);

/// Connections for steps that wait, at most, per host: a step waits about
/// a replication round trip, and a step carries a batch (of routed entries,
/// of acks).
const WRITERS: usize = 16;

/// Steps that wait for replicas, as configured now; shared by a host's
/// loops. When the replicas do not answer in time the host goes on (the
/// step is done on the master) and does not wait again for
/// [`SHORT_PAUSE`]: a host whose replicas are gone keeps working, slower
/// by one timeout every pause, not one per step.
#[derive(Clone)]
pub struct Replicas {
    /// None: steps never wait.
    setup: Option<Setup>,
    metrics: Arc<Metrics>,
    /// Until when (ms since the epoch) steps do not wait.
    short_until: Arc<AtomicU64>,
}

#[derive(Clone)]
struct Setup {
    settings: Arc<ArcSwap<Config>>,
    redis: Redis,
    /// Connections of finished steps, to use again.
    idle: Arc<Mutex<Vec<Conn>>>,
    /// At most [`WRITERS`] of them in use.
    writers: Arc<Semaphore>,
}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicas").finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Replicas {
    pub fn new(settings: Arc<ArcSwap<Config>>, metrics: Arc<Metrics>, redis: Redis) -> Self {
        Replicas {
            setup: Some(Setup {
                settings,
                redis,
                idle: Arc::default(),
                writers: Arc::new(Semaphore::new(WRITERS)),
            }),
            metrics,
            short_until: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Steps that never wait for replicas.
    pub fn off() -> Self {
        Replicas {
            setup: None,
            metrics: Default::default(),
            short_until: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The connection a step is to be written on: `shared` when it need
    /// not wait, else one of the host's own.
    pub async fn writer(&self, shared: &Conn) -> StreamResult<Writer> {
        let plain = Writer {
            conn: shared.clone(),
            waits: None,
        };
        let Some(setup) = &self.setup else {
            return Ok(plain);
        };
        let (wanted, timeout) = {
            let s = setup.settings.load();
            (s.redis.wait_replicas, s.redis.wait_timeout)
        };
        if wanted == 0 || now_ms() < self.short_until.load(Ordering::Relaxed) {
            return Ok(plain);
        }
        let permit = setup
            .writers
            .clone()
            .acquire_owned()
            .await
            .expect("the writers' semaphore never closes");
        let reused = setup.idle.lock().expect("writers lock").pop();
        let conn = match reused {
            Some(c) => c,
            None => setup.redis.connect().await.map_err(|e| {
                StreamError::outage("opening a connection for steps that wait", format!("{e:#}"))
            })?,
        };
        Ok(Writer {
            conn,
            waits: Some(Waits {
                wanted,
                // `WAIT 0` waits for ever.
                timeout: timeout.max(Duration::from_millis(1)),
                replicas: self.clone(),
                _permit: permit,
            }),
        })
    }
}

/// The connection one step is written on, and what it then waits for.
pub struct Writer {
    conn: Conn,
    waits: Option<Waits>,
}

struct Waits {
    wanted: u32,
    timeout: Duration,
    replicas: Replicas,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("waits", &self.waits.as_ref().map(|w| w.wanted))
            .finish_non_exhaustive()
    }
}

impl Writer {
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// The step was written: waits until the replicas asked for have it
    /// (those of `key`'s node), then gives the connection back.
    pub async fn replicated(mut self, key: &str) {
        let Some(w) = self.waits.take() else {
            return;
        };
        let started = std::time::Instant::now();
        let got = self.conn.wait_replicas(key, w.wanted, w.timeout).await;
        crate::events::replicas_waited(&w.replicas.metrics, started.elapsed());
        let got = match got {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::debug!(error = %e, "Waiting for replicas failed.");
                None
            }
        };
        if got.is_none_or(|n| n < w.wanted) {
            w.replicas
                .short_until
                .store(now_ms() + SHORT_PAUSE.as_millis() as u64, Ordering::Relaxed);
            crate::events::replicas_short(
                &w.replicas.metrics,
                key,
                w.wanted,
                got.unwrap_or(0),
                w.timeout,
                SHORT_PAUSE,
            );
        }
        if let Some(setup) = &w.replicas.setup {
            setup
                .idle
                .lock()
                .expect("writers lock")
                .push(self.conn.clone());
        }
    }
}
