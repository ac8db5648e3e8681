use crate::{Context, Error, Event};

/// The subject and stream naming scheme under one root token.
///
/// Production uses the root `pv`: events go to `pv.<context>.<aggregate>.<id>`, stored in the
/// stream `PV_<CONTEXT>`; dead letters go to `pv.deadletter.<consumer>` in `PV_DEADLETTER`.
/// Tests use a random root each, so they share one server without seeing each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    root: String,
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace { root: "pv".to_owned() }
    }
}

impl Namespace {
    pub fn new(root: &str) -> Result<Namespace, Error> {
        let valid = !root.is_empty() && root.len() <= 32 && root.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(Error::InvalidName { what: "subject root", value: root.to_owned(), reason: "use 1-32 of [a-z0-9_]" });
        }
        Ok(Namespace { root: root.to_owned() })
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// The subject of one aggregate instance: `<root>.<context>.<aggregate>.<id>`.
    pub fn subject(&self, context: Context, aggregate: &str, aggregate_id: &str) -> Result<String, Error> {
        validate_token("aggregate id", aggregate_id)?;
        Ok(format!("{}.{}.{aggregate}.{aggregate_id}", self.root, context.as_str()))
    }

    /// The subject an event is appended to.
    pub fn subject_of<E: Event>(&self, event: &E) -> Result<String, Error> {
        self.subject(E::CONTEXT, E::AGGREGATE, event.aggregate_id())
    }

    /// Every subject of one aggregate kind: `<root>.<context>.<aggregate>.*`.
    pub fn aggregate_filter(&self, context: Context, aggregate: &str) -> String {
        format!("{}.{}.{aggregate}.*", self.root, context.as_str())
    }

    /// Every subject of a context, the filter of its stream: `<root>.<context>.>`.
    pub fn context_filter(&self, context: Context) -> String {
        format!("{}.{}.>", self.root, context.as_str())
    }

    pub fn stream(&self, context: Context) -> String {
        format!("{}_{}", self.root.to_uppercase(), context.as_str().to_uppercase())
    }

    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DEADLETTER", self.root.to_uppercase())
    }

    pub fn dead_letter_filter(&self) -> String {
        format!("{}.deadletter.>", self.root)
    }

    pub fn dead_letter_subject(&self, consumer: &str) -> Result<String, Error> {
        validate_token("consumer name", consumer)?;
        Ok(format!("{}.deadletter.{consumer}", self.root))
    }
}

/// A subject token must not contain the separators or wildcards of NATS subjects.
fn validate_token(what: &'static str, value: &str) -> Result<(), Error> {
    let reason = if value.is_empty() {
        Some("empty")
    } else if value.len() > 128 {
        Some("longer than 128 characters")
    } else if !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        Some("use only [A-Za-z0-9_-]")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName { what, value: value.to_owned(), reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_context_aggregate_id() {
        let namespace = Namespace::default();
        assert_eq!(namespace.subject(Context::Datanet, "datanet", "abc-1").expect("valid"), "pv.datanet.datanet.abc-1");
        assert_eq!(namespace.stream(Context::Settlement), "PV_SETTLEMENT");
        assert_eq!(namespace.context_filter(Context::Training), "pv.training.>");
    }

    #[test]
    fn ids_that_would_escape_their_subject_are_refused() {
        let namespace = Namespace::default();
        for bad in ["", "a.b", "a*", ">", "a b", &"x".repeat(129)] {
            assert!(namespace.subject(Context::Datanet, "datanet", bad).is_err(), "{bad:?} accepted");
        }
        assert!(Namespace::new("Bad.Root").is_err());
    }
}
