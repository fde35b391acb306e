//! Reading a YAML document with serde-saphyr, as the rules file and envoy ratelimit's
//! configuration both are: the value, or where (the path as the document writes it, and the
//! line and column) and why not.

use serde::de::DeserializeOwned;

use super::{InvalidRule, Location};

/// A YAML document that could not be read as the value asked for.
pub(crate) struct NotRead {
    pub(crate) location: Location,
    /// What is wrong, without the location.
    pub(crate) message: String,
    /// Whether serde said it (a missing or unknown field, a value of the wrong type), rather
    /// than the YAML reader.
    pub(crate) from_serde: bool,
}

impl NotRead {
    /// The problem, as a rules file's.
    pub(crate) fn into_rules_problem(self) -> (Location, InvalidRule) {
        let problem = if self.from_serde {
            InvalidRule::Json(self.message)
        } else {
            InvalidRule::NotYaml(self.message)
        };
        (self.location, problem)
    }
}

/// `text` read as a `T`; `path_of` writes serde's path to a problem as the document has it,
/// and `one_document` says why a file holds only one.
pub(crate) fn deserialize<T: DeserializeOwned>(
    text: &str,
    path_of: fn(&serde_path_to_error::Path) -> String,
    one_document: &str,
) -> Result<T, NotRead> {
    let mut json_path = None;
    let parsed = serde_saphyr::with_deserializer_from_str(text, |deserializer| {
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            json_path = Some(path_of(err.path()));
            err.into_inner()
        })
    });
    parsed.map_err(|err| {
        let err = err.without_snippet();
        let from_serde = matches!(
            err,
            serde_saphyr::Error::Message { .. }
                | serde_saphyr::Error::SerdeInvalidType { .. }
                | serde_saphyr::Error::SerdeInvalidValue { .. }
                | serde_saphyr::Error::SerdeUnknownVariant { .. }
                | serde_saphyr::Error::SerdeUnknownField { .. }
                | serde_saphyr::Error::SerdeMissingField { .. }
        );
        let location = err.location();
        let message = err.to_string();
        // The message ends with the location (and where aliases led), reported on its own.
        let message = message
            .find(" at line ")
            .map_or(message.as_str(), |at| &message[..at]);
        let message = match message {
            "invalid u32" => "expected an integer from 0 to 4294967295".to_owned(),
            other if other.starts_with("multiple YAML documents") => {
                format!("a second YAML document: {one_document}")
            }
            other => other
                .strip_suffix(", set DuplicateKeyPolicy in Options if acceptable")
                .unwrap_or(other)
                .to_owned(),
        };
        let json_path = json_path.unwrap_or_else(|| ".".into());
        let location = match location {
            Some(location) => located(json_path, &location),
            None => Location {
                json_path,
                line_column: None,
            },
        };
        NotRead {
            location,
            message,
            from_serde,
        }
    })
}

/// The place `location` names, at `json_path`.
pub(crate) fn located(json_path: String, location: &serde_saphyr::Location) -> Location {
    let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let line_column =
        (location.line() > 0).then(|| (narrow(location.line()), narrow(location.column())));
    Location {
        json_path,
        line_column,
    }
}
