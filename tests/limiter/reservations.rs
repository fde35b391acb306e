//! Reservations in memory, through the public API: an estimate taken at the check and the
//! difference settled afterwards, refunded or owed; settled once; by id after a detach;
//! let go when dropped; expired at the estimate; concurrent settlements adding up exactly.
//! Rules refill so slowly that nothing moves during a test.

use std::time::Duration;

use tollgate::{ClientKey, Limiter, Query, SettleError};

use testkit::rules;

/// 1,000 units, one back every 1,000 s.
const SLOW: &str = r#"{"default": {"capacity": 1000, "refill_rate": 0.001}}"#;

async fn limiter(json: &str) -> Limiter {
    Limiter::builder().rules(rules(json)).build().await.unwrap()
}

async fn remaining(limiter: &Limiter, client: &ClientKey) -> u32 {
    let peeked = limiter.peek(Query::new(client)).await.unwrap();
    peeked.decision().unwrap().remaining
}

#[tokio::test]
async fn what_was_not_used_is_given_back_and_an_overrun_is_owed() {
    let limiter = limiter(SLOW).await;
    let ann = ClientKey::id("ann");
    let reserved = limiter.reserve(Query::new(&ann).cost(500)).await.unwrap();
    assert_eq!(reserved.verdict().decision().unwrap().remaining, 500);
    let reservation = reserved.into_reservation().expect("held");
    assert_eq!(reservation.estimate(), 500);
    let settled = reservation.settle(120).await.unwrap();
    assert_eq!((settled.estimate(), settled.used()), (500, 120));
    assert_eq!(remaining(&limiter, &ann).await, 880, "380 given back");

    // Reserved 10, used 2,000: 1,000 more than there was, owed.
    let reservation = limiter
        .reserve(Query::new(&ann).cost(10))
        .await
        .unwrap()
        .into_reservation()
        .unwrap();
    reservation.settle(2_000).await.unwrap();
    assert_eq!(remaining(&limiter, &ann).await, 0);
    let refused = limiter.check(Query::new(&ann)).await.unwrap();
    assert!(!refused.allowed(), "owed, not forgiven");
    let wait = refused.decision().unwrap().retry_after;
    // 880 - 10 - 1,990 = -1,120: 1,121 units at one per 1,000 s.
    assert!(
        (1_120_000..=1_121_000).contains(&wait.as_secs()),
        "{wait:?}"
    );
    let refused = limiter.reserve(Query::new(&ann).cost(1)).await.unwrap();
    assert!(!refused.verdict().allowed());
    assert!(
        refused.reservation().is_none(),
        "nothing held for a refusal"
    );
}

#[tokio::test]
async fn a_reservation_is_settled_once_and_by_id_anywhere_on_the_limiter() {
    let limiter = limiter(SLOW).await;
    let bo = ClientKey::Ip("203.0.113.9".parse().unwrap());
    let reservation = limiter
        .reserve(Query::new(&bo).cost(100))
        .await
        .unwrap()
        .into_reservation()
        .unwrap();
    let id = reservation.detach();
    assert_eq!(
        remaining(&limiter, &bo).await,
        900,
        "still reserved once detached"
    );
    let clone = limiter.clone();
    clone.settle(&id, 40).await.unwrap();
    assert_eq!(remaining(&limiter, &bo).await, 960);
    assert_eq!(
        limiter.settle(&id, 40).await,
        Err(SettleError::AlreadySettled)
    );
    // An id altered in its random part, and ones that are not ids at all.
    let mut forged = id.clone();
    forged.replace_range(0..1, if id.starts_with('0') { "1" } else { "0" });
    assert_eq!(limiter.settle(&forged, 1).await, Err(SettleError::Unknown));
    for junk in ["", "nope", "0.0.0"] {
        assert_eq!(limiter.settle(junk, 1).await, Err(SettleError::Unknown));
    }
}

#[tokio::test]
async fn dropped_or_expired_it_stays_at_the_estimate() {
    let limiter = Limiter::builder()
        .rules(rules(SLOW))
        .reservation_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let cy = ClientKey::id("cy");
    let dropped = limiter
        .reserve(Query::new(&cy).cost(100))
        .await
        .unwrap()
        .into_reservation()
        .unwrap();
    let id = dropped.id().to_owned();
    drop(dropped);
    assert_eq!(limiter.settle(&id, 1).await, Err(SettleError::Unknown));
    assert_eq!(remaining(&limiter, &cy).await, 900);

    let expiring = limiter
        .reserve(Query::new(&cy).cost(100))
        .await
        .unwrap()
        .into_reservation()
        .unwrap()
        .detach();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        limiter.settle(&expiring, 1).await,
        Err(SettleError::Unknown)
    );
    assert_eq!(remaining(&limiter, &cy).await, 800);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_settlements_add_up_exactly() {
    let limiter = limiter(r#"{"default": {"capacity": 100000, "refill_rate": 0.001}}"#).await;
    let dee = ClientKey::id("dee");
    let tasks: Vec<_> = (0..200u64)
        .map(|n| {
            let (limiter, dee) = (limiter.clone(), dee.clone());
            tokio::spawn(async move {
                let reservation = limiter
                    .reserve(Query::new(&dee).cost(50))
                    .await
                    .unwrap()
                    .into_reservation()
                    .unwrap();
                // Half use less than reserved, half more.
                reservation.settle(n % 2 * 100).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    // 100 used nothing, 100 used 100: 10,000 in all.
    assert_eq!(remaining(&limiter, &dee).await, 90_000);
}

#[tokio::test]
async fn an_unlimited_rule_holds_nothing_to_settle() {
    let limiter = limiter(r#"{"default": {"unlimited": true}}"#).await;
    let reserved = limiter
        .reserve(Query::new(&ClientKey::id("eve")).cost(5))
        .await
        .unwrap();
    assert!(reserved.verdict().allowed());
    assert!(reserved.reservation().is_none());
}
