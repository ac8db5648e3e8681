//! A Datanet's description, parsed from outside input and turned into its event form.

use provenant_events::proto::datanet::v1 as proto;
use serde::{Deserialize, Serialize};

/// A refusal of outside input, with a stable code (API clients and dead letters match on it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub code: &'static str,
    pub message: String,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ValidationError {
    ValidationError { code, message: message.into() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    PlainText,
    JsonLines,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    Public,
    Private,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContributionPolicy {
    Open,
    OwnerApproval,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PersonalDataAction {
    Reject,
    AcceptWithFlag,
}

/// What a Datanet is: every field checked, ready to become an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatanetSpec {
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub licence: String,
    pub record_format: RecordFormat,
    pub json_schema: Option<String>,
    pub visibility: Visibility,
    pub contribution_policy: ContributionPolicy,
    pub personal_data_action: PersonalDataAction,
    pub seal_every_accepted: u32,
}

/// The unchecked form, as an HTTP body.
/// What a Datanet owner sends to create or replace a Datanet. The schema mirrors the checks in
/// `TryFrom<DatanetSpecInput>` where JSON Schema can say them; the rest are 422s with codes.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatanetSpecInput {
    /// 1 to 128 printable characters (surrounding spaces are trimmed).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        example = "English fortunes"
    )]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 4000)]
    pub description: String,
    /// Up to 16 tags of `[a-z0-9-]`; duplicates are dropped.
    #[serde(default)]
    #[schema(max_items = 16, inline, value_type = Vec<Tag>)]
    pub tags: Vec<String>,
    /// An SPDX licence identifier, such as `CC-BY-4.0`.
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,63}$", example = "CC-BY-4.0")]
    pub licence: String,
    #[serde(default = "default_record_format")]
    pub record_format: RecordFormat,
    /// Required for `json_lines` Datanets (a JSON Schema object, without remote references, at
    /// most 64 KiB), refused for `plain_text` ones.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub json_schema: Option<serde_json::Value>,
    #[serde(default = "default_visibility")]
    pub visibility: Visibility,
    #[serde(default = "default_contribution_policy")]
    pub contribution_policy: ContributionPolicy,
    #[serde(default = "default_personal_data_action")]
    pub personal_data_action: PersonalDataAction,
    /// Seal a snapshot after every N accepted contributions; 0 seals only on the owner's request.
    #[serde(default, deserialize_with = "provenant_runtime::api_error::whole_number")]
    #[schema(minimum = 0, maximum = 4_294_967_295_u64)]
    pub seal_every_accepted: u32,
}

/// A tag: 1 to 32 of `[a-z0-9-]`.
#[derive(utoipa::ToSchema)]
#[schema(pattern = "^[a-z0-9-]{1,32}$")]
#[allow(dead_code)] // Documentation only: tags travel as plain strings.
struct Tag(String);

fn default_record_format() -> RecordFormat {
    RecordFormat::PlainText
}
fn default_visibility() -> Visibility {
    Visibility::Public
}
fn default_contribution_policy() -> ContributionPolicy {
    ContributionPolicy::Open
}
fn default_personal_data_action() -> PersonalDataAction {
    PersonalDataAction::Reject
}

pub const MAX_NAME_CHARS: usize = 128;
pub const MAX_DESCRIPTION_CHARS: usize = 4_000;
pub const MAX_TAGS: usize = 16;
pub const MAX_JSON_SCHEMA_BYTES: usize = 64 * 1024;

impl TryFrom<DatanetSpecInput> for DatanetSpec {
    type Error = ValidationError;

    fn try_from(input: DatanetSpecInput) -> Result<Self, Self::Error> {
        let name = input.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(invalid("datanet.name_invalid", format!("name must be 1 to {MAX_NAME_CHARS} printable characters")));
        }
        if input.description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(invalid("datanet.description_too_long", format!("description is limited to {MAX_DESCRIPTION_CHARS} characters")));
        }
        if input.tags.len() > MAX_TAGS {
            return Err(invalid("datanet.too_many_tags", format!("at most {MAX_TAGS} tags")));
        }
        let mut tags = Vec::with_capacity(input.tags.len());
        for tag in input.tags {
            let valid = !tag.is_empty() && tag.len() <= 32 && tag.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid {
                return Err(invalid("datanet.tag_invalid", format!("tag {tag:?}: use 1 to 32 of [a-z0-9-]")));
            }
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        if !is_spdx_identifier(&input.licence) {
            return Err(invalid("datanet.licence_invalid", format!("licence {:?} is not an SPDX identifier", input.licence)));
        }
        let json_schema = match (input.record_format, input.json_schema) {
            (RecordFormat::JsonLines, Some(schema @ serde_json::Value::Object(_))) => {
                let text = schema.to_string();
                if text.len() > MAX_JSON_SCHEMA_BYTES {
                    return Err(invalid("datanet.json_schema_too_large", "the JSON Schema is limited to 64 KiB"));
                }
                // Compiled without remote or file reference resolution (see the workspace manifest).
                jsonschema::validator_for(&schema)
                    .map_err(|error| invalid("datanet.json_schema_invalid", format!("invalid JSON Schema: {error}")))?;
                Some(text)
            }
            (RecordFormat::JsonLines, _) => {
                return Err(invalid("datanet.json_schema_required", "JSON-lines Datanets need a JSON Schema object"));
            }
            (RecordFormat::PlainText, None) => None,
            (RecordFormat::PlainText, Some(_)) => {
                return Err(invalid("datanet.json_schema_unexpected", "plain-text Datanets take no JSON Schema"));
            }
        };
        Ok(DatanetSpec {
            name,
            description: input.description,
            tags,
            licence: input.licence,
            record_format: input.record_format,
            json_schema,
            visibility: input.visibility,
            contribution_policy: input.contribution_policy,
            personal_data_action: input.personal_data_action,
            seal_every_accepted: input.seal_every_accepted,
        })
    }
}

/// SPDX short identifiers (`MIT`, `CC-BY-4.0`, `GPL-3.0-or-later`, `LicenseRef-acme`): the
/// syntax only; which licences a Datanet accepts is policy for the validate service.
fn is_spdx_identifier(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
}

/// Principal ids are subject-safe tokens (events from other producers are checked too).
pub fn parse_principal_id(value: &str) -> Result<String, ValidationError> {
    provenant_runtime::identity::parse_principal_id(value).map_err(|message| invalid("principal.invalid", message))
}

impl From<&DatanetSpec> for proto::DatanetSpec {
    fn from(spec: &DatanetSpec) -> Self {
        proto::DatanetSpec {
            name: spec.name.clone(),
            description: spec.description.clone(),
            tags: spec.tags.clone(),
            licence_spdx: spec.licence.clone(),
            modality: proto::Modality::Text.into(),
            record_format: match spec.record_format {
                RecordFormat::PlainText => proto::RecordFormat::PlainText,
                RecordFormat::JsonLines => proto::RecordFormat::JsonLines,
            }
            .into(),
            json_schema: spec.json_schema.clone().unwrap_or_default(),
            visibility: match spec.visibility {
                Visibility::Public => proto::Visibility::Public,
                Visibility::Private => proto::Visibility::Private,
            }
            .into(),
            contribution_policy: match spec.contribution_policy {
                ContributionPolicy::Open => proto::ContributionPolicy::Open,
                ContributionPolicy::OwnerApproval => proto::ContributionPolicy::OwnerApproval,
            }
            .into(),
            personal_data_action: match spec.personal_data_action {
                PersonalDataAction::Reject => proto::PersonalDataAction::Reject,
                PersonalDataAction::AcceptWithFlag => proto::PersonalDataAction::AcceptWithFlag,
            }
            .into(),
            seal_every_accepted: spec.seal_every_accepted,
        }
    }
}

/// Events from other producers are outside input too: the same rules apply to them.
impl TryFrom<proto::DatanetSpec> for DatanetSpec {
    type Error = ValidationError;

    fn try_from(spec: proto::DatanetSpec) -> Result<Self, Self::Error> {
        let record_format = match spec.record_format() {
            proto::RecordFormat::PlainText => RecordFormat::PlainText,
            proto::RecordFormat::JsonLines => RecordFormat::JsonLines,
            proto::RecordFormat::Unspecified => return Err(invalid("datanet.record_format_missing", "record format unspecified")),
        };
        let visibility = match spec.visibility() {
            proto::Visibility::Public => Visibility::Public,
            proto::Visibility::Private => Visibility::Private,
            proto::Visibility::Unspecified => return Err(invalid("datanet.visibility_missing", "visibility unspecified")),
        };
        let contribution_policy = match spec.contribution_policy() {
            proto::ContributionPolicy::Open => ContributionPolicy::Open,
            proto::ContributionPolicy::OwnerApproval => ContributionPolicy::OwnerApproval,
            proto::ContributionPolicy::Unspecified => {
                return Err(invalid("datanet.contribution_policy_missing", "contribution policy unspecified"));
            }
        };
        let personal_data_action = match spec.personal_data_action() {
            proto::PersonalDataAction::AcceptWithFlag => PersonalDataAction::AcceptWithFlag,
            // Absent means the safe default.
            proto::PersonalDataAction::Reject | proto::PersonalDataAction::Unspecified => PersonalDataAction::Reject,
        };
        let json_schema = if spec.json_schema.is_empty() {
            None
        } else {
            Some(serde_json::from_str(&spec.json_schema).map_err(|_| invalid("datanet.json_schema_invalid", "JSON Schema is not JSON"))?)
        };
        DatanetSpec::try_from(DatanetSpecInput {
            name: spec.name,
            description: spec.description,
            tags: spec.tags,
            licence: spec.licence_spdx,
            record_format,
            json_schema,
            visibility,
            contribution_policy,
            personal_data_action,
            seal_every_accepted: spec.seal_every_accepted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> DatanetSpecInput {
        serde_json::from_value(
            serde_json::json!({ "name": "  English fortunes ", "licence": "CC0-1.0", "tags": ["fortunes", "fortunes", "en"] }),
        )
        .expect("valid input")
    }

    #[test]
    fn a_valid_input_is_normalised() {
        let spec = DatanetSpec::try_from(input()).expect("valid");
        assert_eq!(spec.name, "English fortunes");
        assert_eq!(spec.tags, ["fortunes", "en"]);
        assert_eq!(spec.record_format, RecordFormat::PlainText);
    }

    #[test]
    fn each_bad_field_has_its_own_code() {
        type Spoil = fn(&mut DatanetSpecInput);
        let cases: [(Spoil, &str); 7] = [
            (|input| input.name = " ".into(), "datanet.name_invalid"),
            (|input| input.licence = "not a licence".into(), "datanet.licence_invalid"),
            (|input| input.tags = vec!["Bad Tag".into()], "datanet.tag_invalid"),
            (|input| input.description = "x".repeat(MAX_DESCRIPTION_CHARS + 1), "datanet.description_too_long"),
            (|input| input.record_format = RecordFormat::JsonLines, "datanet.json_schema_required"),
            (|input| input.json_schema = Some(serde_json::json!({})), "datanet.json_schema_unexpected"),
            (
                |input| {
                    input.record_format = RecordFormat::JsonLines;
                    input.json_schema = Some(serde_json::json!({ "type": 12 }));
                },
                "datanet.json_schema_invalid",
            ),
        ];
        for (spoil, code) in cases {
            let mut bad = input();
            spoil(&mut bad);
            assert_eq!(DatanetSpec::try_from(bad).expect_err(code).code, code);
        }
    }

    #[test]
    fn the_event_form_round_trips() {
        let spec = DatanetSpec::try_from(input()).expect("valid");
        let event_form = proto::DatanetSpec::from(&spec);
        assert_eq!(DatanetSpec::try_from(event_form).expect("valid event"), spec);
    }
}
