//! Reservations in Redis, kept beside the client's bucket so that a reservation, its
//! settlement and the bands they move are one script call (`decide.lua`, flags 4 and 2),
//! in one slot of a Redis Cluster too:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `<prefix>:{<rule id>:<client key>}:r:<32 hex digits>` | string | `<estimate>:<µs of Redis TIME when it was made>` while it is open, `s` once settled; it expires with the reservation |
//!
//! Any instance sharing the Redis settles a reservation from its id, which names the rule
//! and the client (see the limiter's `ticket`). A reservation is decided by Redis
//! itself, never from a lease; a refusal this instance remembers refuses it at once. When
//! Redis cannot decide, the failure policy answers and nothing is held.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::cluster::Server;
use super::error::CallError;
use super::script::{Call, Held, Reply, decode, packed, run};
use super::setup::Route;
use super::{REDIS, RedisBackend};
use crate::Decision;
use crate::backend::breaker::{Permit, PermitGuard};
use crate::backend::{Answer, Mode, Outcome, ReservationKey, Settlement, StoreError};
use crate::decision::DecidedBy;
use crate::rules::Limit;

impl RedisBackend {
    /// The key of `reservation`: beside its bucket, in the bucket's slot.
    fn reservation_key(&self, reservation: &ReservationKey<'_>) -> String {
        let bucket = self.key(&reservation.rule.id, reservation.client.0);
        format!("{bucket}:r:{}", reservation.nonce)
    }

    /// Decides a request as a take, by Redis, holding `reservation` when it admits.
    pub(super) fn reserve_in_redis(
        self: &Arc<Self>,
        limit: &Limit,
        cost: u32,
        reservation: ReservationKey<'_>,
        lasting: Duration,
    ) -> Answer {
        let (rule, client) = (reservation.rule, reservation.client.0);
        let (state, rules) = (rule.state, rule.generation);
        if let Some(refused) = self.refusals.cached(state, client, cost, rules) {
            self.refusal_hits.fetch_add(1, Ordering::Relaxed);
            return Answer::Now(Outcome::Decided(refused, DecidedBy::RememberedRefusal));
        }
        let key = self.key(&rule.id, client);
        let held = self.reservation_key(&reservation);
        let server = self.servers.for_key(&key);
        let permit = server.breaker.permit();
        if permit == Permit::Skip {
            return Answer::Now(self.without_redis(state, limit, cost, client, Mode::Take));
        }
        let guard = PermitGuard::new(Arc::clone(&server.breaker), permit);
        let call = Call {
            cost,
            lease: Duration::ZERO,
            mode: Mode::Take,
            deadline: Instant::now() + self.timeout,
            redis_deadline_us: server.clock.deadline_us(self.timeout),
            held: Held::Reserve(lasting),
        };
        let epoch = self.resets.load(Ordering::Acquire);
        let (client, limit, this) = (client.to_owned(), limit.clone(), Arc::clone(self));
        Answer::Later(Box::pin(async move {
            let answer = this.call_alone(&server, [&key, &held], &limit, &call).await;
            match answer.and_then(|reply| decode(&reply, 1, &limit)) {
                Ok((decision, _)) => {
                    guard.succeeded();
                    if decision.allowed {
                        return Outcome::Reserved(decision, DecidedBy::Redis);
                    }
                    let refused = (&decision, cost);
                    this.remember_refusal(state, client.as_ref(), refused, rules, epoch);
                    Outcome::Decided(decision, DecidedBy::Redis)
                }
                Err(error) => {
                    this.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%error, "Redis could not reserve");
                    guard.failed(&error);
                    this.without_redis(state, &limit, cost, client.as_ref(), Mode::Take)
                }
            }
        }))
    }

    /// Settles `reservation` with `used` units.
    pub(super) async fn settle_in_redis(
        &self,
        limit: &Limit,
        reservation: ReservationKey<'_>,
        used: u64,
    ) -> Result<Settlement, StoreError> {
        let (rule, client) = (reservation.rule, reservation.client.0);
        let key = self.key(&rule.id, client);
        let held = self.reservation_key(&reservation);
        let server = self.servers.for_key(&key);
        let call = Call {
            cost: 0,
            lease: Duration::ZERO,
            mode: Mode::Take,
            deadline: Instant::now() + self.command_timeout(),
            // Never dropped as late: a settlement Redis reaches is made.
            redis_deadline_us: 0,
            held: Held::Settle(used),
        };
        let failed = |error: CallError| StoreError::new(REDIS, error.to_string());
        let reply = self
            .call_alone(&server, [&key, &held], limit, &call)
            .await
            .map_err(failed)?;
        let settled = match reply.value(1) {
            Some(-2) => return Ok(Settlement::Unknown),
            Some(-3) => return Ok(Settlement::AlreadySettled),
            Some(estimate) => {
                u32::try_from(estimate).map_err(|_| failed(CallError::Reply(reply.len())))?
            }
            None => return Err(failed(CallError::Reply(reply.len()))),
        };
        let (decision, _): (Decision, _) = decode(&reply, 1, limit).map_err(failed)?;
        // A refusal this instance remembers may be out of date now: a refund makes room it
        // would deny. (Its leases stay: their units are taken in Redis already.)
        self.refusals.forget(rule.state, client);
        Ok(Settlement::Settled {
            estimate: settled,
            decision,
        })
    }

    /// Lets `reservation` go at its estimate: its key is deleted, in the background.
    pub(super) fn release_in_redis(self: &Arc<Self>, reservation: ReservationKey<'_>) {
        let held = self.reservation_key(&reservation);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = Arc::clone(self);
        runtime.spawn(async move {
            let Some(mut connection) = this.connection() else {
                return;
            };
            let mut delete = redis::cmd("DEL");
            delete.arg(&held);
            let deleted = delete.query_async::<u64>(&mut connection);
            let _ = tokio::time::timeout(this.command_timeout(), deleted).await;
        });
    }

    /// One script call of one decision, with the reservation key it names, over the
    /// command connection (a single Redis) or the cluster's.
    async fn call_alone(
        &self,
        server: &Server,
        [key, held]: [&str; 2],
        limit: &Limit,
        call: &Call,
    ) -> Result<Reply, CallError> {
        let spec = packed(limit, call);
        let mut connection = match &self.route {
            Route::Batched { connection, .. } => connection.clone(),
            Route::Cluster(connected) => connected.get().ok_or(CallError::NotConnected)?.clone(),
        };
        let also = [held];
        let run = run(
            &self.script,
            &mut connection,
            std::iter::once((key, spec.as_slice())),
            &also,
        );
        let reply = tokio::time::timeout_at(call.deadline, run)
            .await
            .map_err(|_| CallError::Timeout)??;
        if let Some(now_ms) = reply.now_ms() {
            server.clock.observe(now_ms);
        }
        Ok(reply)
    }
}
