//! [`Limiter::check_descriptors`]: the descriptors of one Envoy rate limit call, each
//! decided under its rule, on one set of rules.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{CheckError, Checking, Hold, Limiter, Verdict, Weight};
use crate::backend::Mode;

/// One descriptor's decision on its way, from [`Limiter::check_descriptors`]: a future of
/// its [`Verdict`], as [`Checking`] is, and the descriptor rule's `name`.
///
/// # Example
///
/// ```
/// use tollgate::{DecidedBy, Limiter, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"unlimited": true}, "descriptors": {"edge": [
///     {"key": "user", "name": "per_user", "limit": "2/minute"}]}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let mut checks = limiter.check_descriptors("edge", [([("user", "alice")], 1)]);
/// let check = checks.remove(0).expect("a rule applies");
/// assert_eq!(check.name(), Some("per_user"));
/// let verdict = check.await?;
/// assert_eq!((verdict.rule(), verdict.decided_by()), ("@edge/user", DecidedBy::Memory));
/// assert_eq!(verdict.decision().unwrap().remaining, 1);
/// # Ok(())
/// # }
/// ```
#[must_use = "a check decides nothing until it is awaited"]
pub struct DescriptorCheck {
    name: Option<Box<str>>,
    checking: Checking,
}

impl DescriptorCheck {
    /// The descriptor rule's `name` (what its `replaces` entries name, and what Envoy
    /// shows), if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl fmt::Debug for DescriptorCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DescriptorCheck")
            .field("name", &self.name)
            .field("checking", &self.checking)
            .finish()
    }
}

impl Future for DescriptorCheck {
    type Output = Result<Verdict, CheckError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().checking).poll(cx)
    }
}

impl Limiter {
    /// Decides the descriptors of one Envoy rate limit call in `domain`, as envoy ratelimit
    /// does: each descriptor (its `(key, value)` entries, and the hits it takes) under the
    /// rule the rules file's `descriptors` give it (see
    /// [`Rules::descriptor`](crate::Rules::descriptor)), counted against the client its
    /// values make. Every descriptor is looked up in the same rules, once, and decided
    /// once.
    ///
    /// One answer per descriptor, in order: `None` when no rule applies, or when another
    /// descriptor of the call matched a rule that `replaces` this one's. Hits of 0 look
    /// without taking (a [`peek`](Self::peek) at the rule's cost). Hits more than the
    /// smallest capacity of the limit can never fit: refused at once, not counted, as
    /// [`DecidedBy::OverCapacity`](crate::DecidedBy::OverCapacity).
    ///
    /// ```
    /// use tollgate::{DecidedBy, Limiter, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"unlimited": true}, "descriptors": {"edge": [
    ///     {"key": "remote_address", "name": "per_address", "limit": "100/minute"},
    ///     {"key": "user", "limit": "5/minute", "replaces": ["per_address"]}]}}"#)?;
    /// let limiter = Limiter::builder().rules(rules).build().await?;
    /// let call = [
    ///     (vec![("remote_address", "10.0.0.7")], 1),
    ///     (vec![("user", "alice")], 1),
    ///     (vec![("user", "bob")], 9),
    ///     (vec![("path", "/")], 1),
    /// ];
    /// let checks = limiter.check_descriptors("edge", call);
    /// assert!(checks[0].is_none(), "replaced by the user's rule");
    /// assert!(checks[3].is_none(), "no rule for `path`");
    /// let [_, Some(alice), Some(bob), _] = <[_; 4]>::try_from(checks).unwrap() else {
    ///     panic!("rules apply to both users");
    /// };
    /// assert_eq!(alice.await?.decision().unwrap().remaining, 4);
    /// let bob = bob.await?;
    /// assert!(!bob.allowed());
    /// assert_eq!(bob.decided_by(), DecidedBy::OverCapacity);
    /// assert_eq!(bob.limit().unwrap().smallest_capacity(), 5);
    /// # Ok(())
    /// # }
    /// ```
    pub fn check_descriptors<'e, D, E>(
        &self,
        domain: &str,
        descriptors: D,
    ) -> Vec<Option<DescriptorCheck>>
    where
        D: IntoIterator<Item = (E, u64)>,
        E: IntoIterator<Item = (&'e str, &'e str)>,
        E::IntoIter: Clone,
    {
        let core = &self.core;
        let installed = core.installed.load();
        let rules = &installed.rules;
        let matched: Vec<_> = descriptors
            .into_iter()
            .map(|(entries, hits)| Some((rules.descriptor(domain, entries)?, hits)))
            .collect();
        // A limit that a matched rule replaces does not count.
        let replaced: Vec<&str> = matched
            .iter()
            .flatten()
            .flat_map(|(found, _)| found.rule.replaces())
            .collect();
        matched
            .into_iter()
            .map(|matched| {
                let (found, hits) = matched?;
                let name = found.rule.name();
                if name.is_some_and(|name| replaced.contains(&name)) {
                    return None;
                }
                let (weight, mode) = match hits {
                    0 => (Weight::RuleCost, Mode::Peek),
                    hits => (Weight::Hits(hits), Mode::Take),
                };
                let client = found.client.as_ref();
                Some(DescriptorCheck {
                    name: name.map(Into::into),
                    checking: core.decide(&installed, found.rule, client, weight, (mode, Hold::No)),
                })
            })
            .collect()
    }
}
