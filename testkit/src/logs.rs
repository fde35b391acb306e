//! What the layer logs, captured for tests that check a warning is given.
//!
//! One subscriber serves the whole test binary (the layer logs from the blocking pool and
//! other threads, which a thread-local subscriber would miss), so tests running side by side
//! share it: each looks only for events that name something of its own, like its file.

use std::fmt::Write;
use std::sync::{Mutex, Once, PoisonError};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Starts capturing; every test that reads the logs calls it first.
pub fn capture() {
    static START: Once = Once::new();
    START.call_once(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Capture))
            .expect("no other global subscriber in this test binary");
    });
}

/// The events logged so far that contain every one of `needles`, each as
/// `LEVEL field=value ...`.
pub fn containing(needles: &[&str]) -> Vec<String> {
    EVENTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|event| needles.iter().all(|needle| event.contains(needle)))
        .cloned()
        .collect()
}

struct Capture;

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut line = event.metadata().level().to_string();
        event.record(&mut Fields(&mut line));
        EVENTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }
}

/// Writes each field as ` name=value`, the message unquoted.
struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}
