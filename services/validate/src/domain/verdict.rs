//! From a contribution's bytes to what validation thinks of its content: decoding, records,
//! quality and personal-data policy. Duplicate detection needs the history of the Datanet and
//! is done by the handler with [`super::near_duplicates`] and the projections.

use super::quality::{self, Flag, Limits};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    PlainText,
    JsonLines,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersonalDataAction {
    Reject,
    AcceptWithFlag,
}

/// Why (part of) a contribution cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: String,
    pub message: String,
    pub record_index: Option<u32>,
}

impl Reason {
    pub fn new(code: &str, message: impl Into<String>, record_index: Option<usize>) -> Reason {
        Reason { code: code.to_owned(), message: message.into(), record_index: record_index.and_then(|index| u32::try_from(index).ok()) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentAssessment {
    /// Mean quality of the records, parts per million.
    pub score_ppm: u32,
    /// Flag codes kept on an accepted contribution.
    pub flags: Vec<String>,
    /// Empty when the content is acceptable.
    pub reasons: Vec<Reason>,
    /// The records' text, for duplicate detection.
    pub text: String,
}

/// What a Datanet asks of its records.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub format: RecordFormat,
    pub personal_data: PersonalDataAction,
    pub limits: Limits,
    /// JSON Schema every JSON-lines record must satisfy.
    pub schema: Option<&'a jsonschema::Validator>,
}

/// Compiles a Datanet's JSON Schema. Remote and file references are not resolved (the crate is
/// built without them): a schema from a Datanet owner must not make this service fetch anything.
pub fn compile_schema(schema: &str) -> Result<jsonschema::Validator, String> {
    let value: serde_json::Value = serde_json::from_str(schema).map_err(|error| error.to_string())?;
    jsonschema::validator_for(&value).map_err(|error| error.to_string())
}

pub fn assess_content(bytes: &[u8], rules: Rules<'_>) -> ContentAssessment {
    let Rules { format, personal_data, limits, schema } = rules;
    let rejected = |reason: Reason| ContentAssessment { score_ppm: 0, flags: Vec::new(), reasons: vec![reason], text: String::new() };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return rejected(Reason::new("record.not_utf8", "the content is not UTF-8 text", None));
    };
    let mut reasons = Vec::new();
    let records: Vec<String> = match format {
        RecordFormat::PlainText => vec![text.to_owned()],
        RecordFormat::JsonLines => {
            let mut records = Vec::new();
            for (index, line) in text.lines().filter(|line| !line.trim().is_empty()).enumerate() {
                match serde_json::from_str::<serde_json::Value>(line) {
                    Ok(value @ serde_json::Value::Object(_)) => {
                        if let Some(error) = schema.and_then(|schema| schema.iter_errors(&value).next()) {
                            reasons.push(Reason::new(
                                "record.schema_violation",
                                format!("{error} at {}", error.instance_path()),
                                Some(index),
                            ));
                        }
                        let mut record = String::new();
                        provenant_events::records::json_text(&value, &mut record);
                        records.push(record);
                    }
                    Ok(_) => reasons.push(Reason::new("record.not_an_object", "each JSON line must be an object", Some(index))),
                    Err(error) => reasons.push(Reason::new("record.invalid_json", error.to_string(), Some(index))),
                }
            }
            records
        }
    };
    if records.is_empty() && reasons.is_empty() {
        return rejected(Reason::new("record.empty", "no records", None));
    }
    let mut flags: Vec<Flag> = Vec::new();
    let mut total_score: u64 = 0;
    for (index, record) in records.iter().enumerate() {
        let assessment = quality::assess(record, limits);
        total_score += u64::from(assessment.score_ppm);
        let record_index = (format == RecordFormat::JsonLines).then_some(index);
        for problem in assessment.problems {
            reasons.push(Reason::new(problem, format!("record fails the {problem} check"), record_index));
        }
        for flag in assessment.flags {
            if personal_data == PersonalDataAction::Reject {
                reasons.push(Reason::new(flag.code(), "the Datanet does not accept personal data or secrets", record_index));
            }
            flags.push(flag);
        }
    }
    flags.sort();
    flags.dedup();
    let score_ppm = u32::try_from(total_score / records.len().max(1) as u64).unwrap_or(u32::MAX);
    ContentAssessment {
        score_ppm,
        flags: flags.into_iter().map(|flag| flag.code().to_owned()).collect(),
        reasons,
        text: records.join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assess(bytes: &[u8], format: RecordFormat, action: PersonalDataAction) -> ContentAssessment {
        assess_content(bytes, Rules { format, personal_data: action, limits: Limits::default(), schema: None })
    }

    #[test]
    fn json_lines_records_must_satisfy_the_datanets_schema() {
        let schema = compile_schema(r#"{"type":"object","required":["text"],"properties":{"text":{"type":"string","maxLength":200}}}"#)
            .expect("valid schema");
        let content = b"{\"text\":\"A record that satisfies the schema perfectly well.\"}\n{\"title\":\"no text field here at all\"}\n";
        let rules = Rules {
            format: RecordFormat::JsonLines,
            personal_data: PersonalDataAction::Reject,
            limits: Limits::default(),
            schema: Some(&schema),
        };
        let assessment = assess_content(content, rules);
        let codes: Vec<(&str, Option<u32>)> = assessment.reasons.iter().map(|reason| (reason.code.as_str(), reason.record_index)).collect();
        assert_eq!(codes, [("record.schema_violation", Some(1))]);
        assert!(compile_schema(r#"{"type": 12}"#).is_err());
        assert!(compile_schema("not json").is_err());
    }

    #[test]
    fn good_text_is_acceptable_and_bad_bytes_are_not() {
        let good =
            assess(b"Nothing is so firmly believed as that which we least know.", RecordFormat::PlainText, PersonalDataAction::Reject);
        assert!(good.reasons.is_empty(), "{good:?}");
        let binary = assess(&[0xff, 0xfe, 0x00], RecordFormat::PlainText, PersonalDataAction::Reject);
        assert_eq!(binary.reasons[0].code, "record.not_utf8");
    }

    #[test]
    fn json_lines_are_checked_record_by_record() {
        let content = b"{\"text\":\"A perfectly reasonable sentence about the weather.\"}\n[1,2]\n{broken\n{\"text\":\"ok?\"}\n";
        let assessment = assess(content, RecordFormat::JsonLines, PersonalDataAction::Reject);
        let codes: Vec<(&str, Option<u32>)> = assessment.reasons.iter().map(|reason| (reason.code.as_str(), reason.record_index)).collect();
        assert_eq!(codes, [("record.not_an_object", Some(1)), ("record.invalid_json", Some(2)), ("quality.too_short", Some(1))]);
    }

    #[test]
    fn the_datanet_policy_decides_what_a_personal_data_flag_does() {
        let text = b"For a copy of the full text write to jane.doe@example.org today.";
        let strict = assess(text, RecordFormat::PlainText, PersonalDataAction::Reject);
        assert_eq!(strict.reasons[0].code, "personal_data.email");
        let lenient = assess(text, RecordFormat::PlainText, PersonalDataAction::AcceptWithFlag);
        assert!(lenient.reasons.is_empty());
        assert_eq!(lenient.flags, ["personal_data.email"]);
    }
}
