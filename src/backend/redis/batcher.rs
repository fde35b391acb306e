//! On a single Redis, concurrent decisions share calls: a task takes whatever is queued (up
//! to [`MAX_BATCH`]) and sends it as one script call, with at most [`MAX_IN_FLIGHT`] calls
//! outstanding. Nothing waits for a batch to fill: a lone request goes out at once, alone.

use std::sync::Arc;

use redis::Script;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::connection::Connection;
use super::error::CallError;
use super::script::{BAND_VALUES, Reply, run};

/// Decisions sent in one script call at most.
pub(crate) const MAX_BATCH: usize = 64;
/// Script calls outstanding at once on a single Redis; while they are, decisions queue and
/// go out together in the next call.
pub(crate) const MAX_IN_FLIGHT: usize = 2;

/// A script reply shared by every decision in it, and the index where one decision's
/// answer starts.
pub(super) type Answer = Result<(Arc<Reply>, usize), CallError>;

/// A decision waiting for the batcher, and where its answer goes.
pub(super) struct Job {
    pub(super) key: String,
    /// The limit, and any lease asked for, as [`packed`].
    pub(super) spec: Vec<u8>,
    /// The limit's bands: the answer's length in the reply depends on it.
    pub(super) bands: usize,
    /// When the request gives up waiting: the job is not sent after that.
    pub(super) deadline: Instant,
    pub(super) reply: oneshot::Sender<Answer>,
}

/// Sends queued decisions in batches until every sender is gone.
pub(super) async fn batch(
    mut queue: mpsc::Receiver<Job>,
    connection: Connection,
    script: Arc<Script>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        if queue.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return;
        }
        // A request that gave up takes nothing from its bucket.
        let now = Instant::now();
        jobs.retain(|job| job.deadline > now && !job.reply.is_closed());
        let Some(deadline) = jobs.iter().map(|job| job.deadline).min() else {
            continue;
        };
        let taken = std::mem::replace(&mut jobs, Vec::with_capacity(MAX_BATCH));
        let (mut connection, script) = (connection.clone(), Arc::clone(&script));
        tokio::spawn(async move {
            let _permit = permit;
            let decisions = taken
                .iter()
                .map(|job| (job.key.as_str(), job.spec.as_slice()));
            let call = run(&script, &mut connection, decisions, &[]);
            let reply = match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(reply)) => Ok(Arc::new(reply)),
                Ok(Err(error)) => Err(CallError::Redis(error)),
                Err(_) => Err(CallError::Timeout),
            };
            let mut at = 1;
            for job in taken {
                let _ = job.reply.send(reply.clone().map(|reply| (reply, at)));
                at += 2 + BAND_VALUES * job.bands;
            }
        });
    }
}
