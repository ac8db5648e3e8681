use std::collections::HashMap;

use bytes::Bytes;

use crate::{Envelope, Error, Event};

/// Turns the payload of `event_type` at version `n` into the payload at version `n + 1`.
pub type UpcastStep = fn(Bytes) -> Result<Bytes, String>;

/// The registry of upcasters: how to read an event written under an older schema version.
///
/// Within a version the schema only gains fields, which protobuf reads without help; a
/// breaking change is a new package version plus a step here. Readers call
/// [`Upcasters::decode`], which applies the steps in order and then decodes.
#[derive(Debug, Clone, Default)]
pub struct Upcasters {
    steps: HashMap<(String, u32), UpcastStep>,
}

impl Upcasters {
    /// Every upcaster of the contract. The contract is at v1 everywhere, so there are none yet.
    pub fn contract() -> Upcasters {
        Upcasters::default()
    }

    /// Registers the step from `from_version` to `from_version + 1` of `event_type`.
    #[must_use]
    pub fn with_step(mut self, event_type: &str, from_version: u32, step: UpcastStep) -> Upcasters {
        self.steps.insert((event_type.to_owned(), from_version), step);
        self
    }

    /// Decodes `payload` as `E`, upcasting it first when it was written under an older version.
    pub fn decode<E: Event>(&self, envelope: &Envelope, payload: &[u8]) -> Result<E, Error> {
        self.decode_stored(&envelope.event_type, envelope.schema_version, payload)
    }

    /// [`Upcasters::decode`] for an event kept outside its message (type, version and the
    /// original payload bytes), such as a submission held for approval.
    pub fn decode_stored<E: Event>(&self, event_type: &str, schema_version: u32, payload: &[u8]) -> Result<E, Error> {
        if event_type != E::TYPE {
            return Err(Error::TypeMismatch { expected: E::TYPE, actual: event_type.to_owned() });
        }
        if schema_version > E::VERSION {
            return Err(Error::VersionFromTheFuture { event_type: event_type.to_owned(), version: schema_version, supported: E::VERSION });
        }
        let mut bytes = Bytes::copy_from_slice(payload);
        for version in schema_version..E::VERSION {
            let step = self
                .steps
                .get(&(event_type.to_owned(), version))
                .ok_or_else(|| Error::NoUpcaster { event_type: event_type.to_owned(), version })?;
            bytes = step(bytes).map_err(|reason| Error::Upcast { event_type: event_type.to_owned(), version, reason })?;
        }
        E::decode(bytes).map_err(|source| Error::Decode { event_type: event_type.to_owned(), source })
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::Context;

    /// A v2 event whose v1 ancestor stored the name in field 1 and v2 renumbered it to 2.
    #[derive(Clone, PartialEq, prost::Message)]
    struct RenamedV2 {
        #[prost(string, tag = "2")]
        name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct RenamedV1 {
        #[prost(string, tag = "1")]
        name: String,
    }

    impl Event for RenamedV2 {
        const CONTEXT: Context = Context::Datanet;
        const AGGREGATE: &'static str = "test";
        const TYPE: &'static str = "datanet.Renamed";
        const VERSION: u32 = 2;
        fn aggregate_id(&self) -> &str {
            &self.name
        }
    }

    fn v1_to_v2(bytes: Bytes) -> Result<Bytes, String> {
        let old = RenamedV1::decode(bytes).map_err(|error| error.to_string())?;
        Ok(RenamedV2 { name: old.name }.encode_to_vec().into())
    }

    fn envelope_at(version: u32) -> Envelope {
        let mut envelope = Envelope::new(&RenamedV2 { name: "n".into() }, "test");
        envelope.schema_version = version;
        envelope
    }

    #[test]
    fn an_old_event_is_upcast_before_decoding() {
        let upcasters = Upcasters::default().with_step("datanet.Renamed", 1, v1_to_v2);
        let stored = RenamedV1 { name: "alice".into() }.encode_to_vec();
        let event: RenamedV2 = upcasters.decode(&envelope_at(1), &stored).expect("upcasts");
        assert_eq!(event.name, "alice");
    }

    #[test]
    fn a_missing_step_or_a_future_version_is_a_permanent_error() {
        let stored = RenamedV1 { name: "alice".into() }.encode_to_vec();
        let error = Upcasters::default().decode::<RenamedV2>(&envelope_at(1), &stored).expect_err("no step");
        assert_eq!(error.code(), "event.no_upcaster");
        let error = Upcasters::default().decode::<RenamedV2>(&envelope_at(3), &stored).expect_err("future");
        assert_eq!(error.code(), "event.version_unsupported");
    }
}
