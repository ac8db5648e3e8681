//! A period's settlement report, as a pure function of its ledger rows (which are a pure
//! function of the log): the canonical JSON (whose SHA-256 the `SettlementReportIssued` event
//! names), and the same evidence as CSV and Parquet for finance tools.
//!
//! Canonical means: fields in a fixed order, lists in a fixed order (accounts, models, Datanets
//! and currencies by name, evidence by stream position), amounts as decimal strings of minor
//! units, no floats, no whitespace. Replaying the log from scratch gives the same bytes.
//!
//! Per-Datanet totals and the Datanet of a posting came later: both are left out of the JSON
//! when empty, so a period whose postings name no Datanet renders exactly as it did before.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde::Serialize;

use crate::domain::period::Period;
use crate::domain::split::Totals;
use crate::projections::ledger::{PeriodPosting, transactions};

pub const FORMAT: &str = "provenant.settlement-report.v1";

/// The columns of the CSV and Parquet evidence tables: one row per posting. `datanet_id` is
/// empty on lines not earned through a Datanet.
pub const EVIDENCE_COLUMNS: [&str; 13] = [
    "period_id",
    "settlement_id",
    "kind",
    "inference_event_id",
    "request_id",
    "model_id",
    "revenue_policy_version",
    "occurred_at",
    "account",
    "currency",
    "exponent",
    "amount_minor_units",
    "datanet_id",
];

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CurrencyTotals {
    pub currency: String,
    pub exponent: u32,
    pub fees_in: String,
    pub payable: String,
    pub protocol: String,
    pub pooled: String,
    pub held: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Payout {
    pub account: String,
    pub currency: String,
    pub exponent: u32,
    pub amount: String,
    /// How many settlements of the period credited the account.
    pub settlements: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ModelRevenue {
    pub model_id: String,
    pub currency: String,
    pub exponent: u32,
    pub revenue: String,
    pub settlements: u64,
}

/// What a Datanet earned in a period, in one currency: its owner's credits and its
/// contributors' (net of reversals).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DatanetRevenue {
    pub datanet_id: String,
    pub currency: String,
    pub exponent: u32,
    /// Credited to the Datanet's owner (the policy's Datanet owners' part).
    pub owner: String,
    /// Credited to contributors for their records in the Datanet.
    pub contributors: String,
    /// `owner` + `contributors`.
    pub total: String,
    /// How many settlements of the period credited the Datanet.
    pub settlements: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EvidencePosting {
    pub account: String,
    pub amount: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub datanet_id: String,
}

/// One settlement: the inference event it settles, the policy version, and its postings.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Evidence {
    pub settlement_id: String,
    /// "inference"; "attribution" (the held contributors' part of an inference's settlement,
    /// paid out by its late receipt; fee 0); or "reversal" (every posting of the reversed
    /// settlement negated).
    pub kind: String,
    pub inference_event_id: String,
    pub request_id: String,
    pub model_id: String,
    pub revenue_policy_version: i64,
    pub occurred_at: String,
    pub currency: String,
    pub exponent: u32,
    pub fee: String,
    pub postings: Vec<EvidencePosting>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    pub format: &'static str,
    pub period_id: String,
    pub starts_at: String,
    pub ends_at: String,
    pub through_sequence: u64,
    pub settlement_count: u64,
    pub currencies: Vec<CurrencyTotals>,
    pub payouts: Vec<Payout>,
    pub models: Vec<ModelRevenue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub datanets: Vec<DatanetRevenue>,
    pub evidence: Vec<Evidence>,
}

/// The report's three renderings.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub json: Vec<u8>,
    pub csv: Vec<u8>,
    pub parquet: Vec<u8>,
    /// SHA-256 of `json`.
    pub sha256: String,
}

fn exponent(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

fn units(text: &str) -> i128 {
    // Ledger rows are written from checked amounts only.
    provenant_events::money::parse_minor_units(text).unwrap_or(0)
}

/// Running figures per (name, currency, exponent), found without allocating a key for a name
/// seen before: a period of 10^6 settlements credits the same few thousand accounts millions
/// of times.
struct Tally<V>(HashMap<(String, u32), HashMap<String, V>>);

impl<V: Default> Tally<V> {
    fn new() -> Self {
        Tally(HashMap::new())
    }

    /// Applies `update` to the figures of `name` in `currency` (a callback, not a returned
    /// reference: returning the borrow of a found-or-inserted entry would need a second lookup).
    fn update(&mut self, name: &str, currency: &(String, u32), update: impl FnOnce(&mut V)) {
        let names = match self.0.get_mut(currency) {
            Some(names) => names,
            None => self.0.entry(currency.clone()).or_default(),
        };
        let value = match names.get_mut(name) {
            Some(value) => value,
            None => names.entry(name.to_owned()).or_default(),
        };
        update(value);
    }

    /// (name, currency, exponent, figures), ordered by name, currency, exponent.
    fn into_sorted(self) -> Vec<(String, String, u32, V)> {
        let mut rows: Vec<_> = self
            .0
            .into_iter()
            .flat_map(|((currency, exponent), names)| names.into_iter().map(move |(name, value)| (name, currency.clone(), exponent, value)))
            .collect();
        rows.sort_unstable_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
        rows
    }
}

/// A sum and how many postings (or settlements) made it.
#[derive(Default)]
struct Counted {
    sum: i128,
    count: u64,
}

impl Counted {
    fn add(&mut self, amount: i128) {
        self.sum += amount;
        self.count += 1;
    }
}

/// A Datanet's credits in one currency: its owner's, its contributors', and how many
/// settlements credited it (`last` is the last settlement counted, so a settlement with several
/// lines for one Datanet counts once).
#[derive(Default)]
struct DatanetSums {
    owner: i128,
    contributors: i128,
    settlements: u64,
    last: Option<usize>,
}

impl DatanetSums {
    fn add(&mut self, account: &str, amount: i128, settlement: usize) {
        if account.starts_with("payable:datanet_owner:") {
            self.owner += amount;
        } else {
            self.contributors += amount;
        }
        if self.last != Some(settlement) {
            self.last = Some(settlement);
            self.settlements += 1;
        }
    }
}

/// Builds the report from the period's transactions (in stream order) and their postings,
/// taking them over: their strings move into the evidence instead of being copied.
pub fn build(period: Period, through_sequence: u64, settled: Vec<(transactions::Model, Vec<PeriodPosting>)>) -> Report {
    let mut currencies: BTreeMap<(String, u32), Totals> = BTreeMap::new();
    let mut payouts = Tally::<Counted>::new();
    let mut models = Tally::<Counted>::new();
    let mut datanets = Tally::<DatanetSums>::new();
    let settlement_count = settled.len() as u64;
    let mut evidence = Vec::with_capacity(settled.len());
    for (index, (transaction, lines)) in settled.into_iter().enumerate() {
        let currency = (transaction.currency, exponent(transaction.exponent));
        let fee = units(&transaction.fee);
        // A release moves money already counted as its inference's revenue.
        if transaction.kind != "attribution" && !(transaction.kind == "reversal" && fee == 0) {
            models.update(&transaction.model_id, &currency, |revenue| revenue.add(fee));
        }
        let totals = match currencies.get_mut(&currency) {
            Some(totals) => totals,
            None => currencies.entry(currency.clone()).or_default(),
        };
        let mut postings = Vec::with_capacity(lines.len());
        for line in lines {
            let amount = units(&line.amount);
            totals.add(&line.account, amount);
            if !line.account.starts_with("fees:") {
                payouts.update(&line.account, &currency, |paid| paid.add(amount));
            }
            if !line.datanet_id.is_empty() {
                datanets.update(&line.datanet_id, &currency, |sums| sums.add(&line.account, amount, index));
            }
            postings.push(EvidencePosting { account: line.account, amount: line.amount, datanet_id: line.datanet_id });
        }
        evidence.push(Evidence {
            settlement_id: transaction.settlement_id,
            kind: transaction.kind,
            inference_event_id: transaction.inference_event_id,
            request_id: transaction.request_id,
            model_id: transaction.model_id,
            revenue_policy_version: transaction.policy_version,
            occurred_at: transaction.occurred_at,
            currency: currency.0,
            exponent: currency.1,
            fee: transaction.fee,
            postings,
        });
    }
    Report {
        format: FORMAT,
        period_id: period.id(),
        starts_at: period.starts_at().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ends_at: period.ends_at().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        through_sequence,
        settlement_count,
        currencies: currencies
            .into_iter()
            .map(|((currency, exponent), totals)| CurrencyTotals {
                currency,
                exponent,
                fees_in: totals.fees_in().to_string(),
                payable: totals.payable.to_string(),
                protocol: totals.protocol.to_string(),
                pooled: totals.pooled.to_string(),
                held: totals.held.to_string(),
            })
            .collect(),
        payouts: payouts
            .into_sorted()
            .into_iter()
            .map(|(account, currency, exponent, paid)| Payout {
                account,
                currency,
                exponent,
                amount: paid.sum.to_string(),
                settlements: paid.count,
            })
            .collect(),
        models: models
            .into_sorted()
            .into_iter()
            .map(|(model_id, currency, exponent, revenue)| ModelRevenue {
                model_id,
                currency,
                exponent,
                revenue: revenue.sum.to_string(),
                settlements: revenue.count,
            })
            .collect(),
        datanets: datanets
            .into_sorted()
            .into_iter()
            .map(|(datanet_id, currency, exponent, sums)| DatanetRevenue {
                datanet_id,
                currency,
                exponent,
                owner: sums.owner.to_string(),
                contributors: sums.contributors.to_string(),
                total: (sums.owner + sums.contributors).to_string(),
                settlements: sums.settlements,
            })
            .collect(),
        evidence,
    }
}

impl Report {
    /// Renders JSON, CSV and Parquet.
    pub fn render(&self) -> anyhow::Result<Rendered> {
        let json = serde_json::to_vec(self)?;
        let sha256 = provenant_bus::sha256_hex(&json);
        Ok(Rendered { csv: self.csv(), parquet: self.parquet()?, json, sha256 })
    }

    /// One row per posting, with its settlement's evidence, borrowed (a report of 10^6
    /// settlements has 6·10^6 rows; copying twelve strings for each dominated rendering).
    fn rows(&self) -> impl Iterator<Item = (&Evidence, &EvidencePosting)> + '_ {
        self.evidence.iter().flat_map(|settlement| settlement.postings.iter().map(move |posting| (settlement, posting)))
    }

    /// Column `index` of [`EVIDENCE_COLUMNS`] for one row, where it is text.
    fn text<'a>(&'a self, index: usize, settlement: &'a Evidence, posting: &'a EvidencePosting) -> &'a str {
        match index {
            0 => &self.period_id,
            1 => &settlement.settlement_id,
            2 => &settlement.kind,
            3 => &settlement.inference_event_id,
            4 => &settlement.request_id,
            5 => &settlement.model_id,
            7 => &settlement.occurred_at,
            8 => &posting.account,
            9 => &settlement.currency,
            11 => &posting.amount,
            12 => &posting.datanet_id,
            // 6 (policy version) and 10 (exponent) are numbers.
            _ => "",
        }
    }

    /// RFC 4180 CSV with a header row.
    pub fn csv(&self) -> Vec<u8> {
        let mut out = String::with_capacity(256 + self.rows().count() * 140);
        out.push_str(&EVIDENCE_COLUMNS.join(","));
        out.push_str("\r\n");
        for (settlement, posting) in self.rows() {
            for index in 0..EVIDENCE_COLUMNS.len() {
                if index > 0 {
                    out.push(',');
                }
                // Numbers written in place: a to_string per row was 12 million allocations.
                let _infallible = match index {
                    6 => write!(out, "{}", settlement.revenue_policy_version),
                    10 => write!(out, "{}", settlement.exponent),
                    _ => {
                        push_csv_field(&mut out, self.text(index, settlement, posting));
                        Ok(())
                    }
                };
            }
            out.push_str("\r\n");
        }
        out.into_bytes()
    }

    /// The evidence table as Parquet (strings UTF-8; amounts as decimal strings because they are
    /// 128-bit and a file mixes currencies of different exponents).
    pub fn parquet(&self) -> anyhow::Result<Vec<u8>> {
        let schema = Arc::new(parse_message_type(
            "message settlement_evidence {
                REQUIRED BYTE_ARRAY period_id (UTF8);
                REQUIRED BYTE_ARRAY settlement_id (UTF8);
                REQUIRED BYTE_ARRAY kind (UTF8);
                REQUIRED BYTE_ARRAY inference_event_id (UTF8);
                REQUIRED BYTE_ARRAY request_id (UTF8);
                REQUIRED BYTE_ARRAY model_id (UTF8);
                REQUIRED INT64 revenue_policy_version;
                REQUIRED BYTE_ARRAY occurred_at (UTF8);
                REQUIRED BYTE_ARRAY account (UTF8);
                REQUIRED BYTE_ARRAY currency (UTF8);
                REQUIRED INT32 exponent;
                REQUIRED BYTE_ARRAY amount_minor_units (UTF8);
                REQUIRED BYTE_ARRAY datanet_id (UTF8);
            }",
        )?);
        let rows: Vec<(&Evidence, &EvidencePosting)> = self.rows().collect();
        let properties = Arc::new(WriterProperties::builder().set_created_by("provenant settle".to_owned()).build());
        let mut writer = SerializedFileWriter::new(Vec::new(), schema, properties)?;
        let mut group = writer.next_row_group()?;
        let mut index = 0;
        while let Some(mut column) = group.next_column()? {
            match index {
                6 => {
                    let values: Vec<i64> = rows.iter().map(|(settlement, _)| settlement.revenue_policy_version).collect();
                    column.typed::<Int64Type>().write_batch(&values, None, None)?;
                }
                10 => {
                    let values: Vec<i32> =
                        rows.iter().map(|(settlement, _)| i32::try_from(settlement.exponent).unwrap_or_default()).collect();
                    column.typed::<Int32Type>().write_batch(&values, None, None)?;
                }
                _ => {
                    let values = packed(rows.iter().map(|(settlement, posting)| self.text(index, settlement, posting)));
                    column.typed::<ByteArrayType>().write_batch(&values, None, None)?;
                }
            }
            column.close()?;
            index += 1;
        }
        group.close()?;
        Ok(writer.into_inner()?)
    }
}

/// One text column as slices of a single buffer, without an allocation per value (they were
/// most of the Parquet rendering time of a large report); a value that is the very string of
/// the row before (the period, or a settlement's fields on each of its postings) is stored once.
fn packed<'a>(values: impl Iterator<Item = &'a str>) -> Vec<ByteArray> {
    let mut buffer = Vec::new();
    let mut ranges = Vec::new();
    let mut previous: Option<(&str, std::ops::Range<usize>)> = None;
    for value in values {
        let range = match &previous {
            Some((last, range)) if std::ptr::eq(*last, value) => range.clone(),
            _ => {
                let start = buffer.len();
                buffer.extend_from_slice(value.as_bytes());
                start..buffer.len()
            }
        };
        previous = Some((value, range.clone()));
        ranges.push(range);
    }
    let buffer = bytes::Bytes::from(buffer);
    ranges.into_iter().map(|range| ByteArray::from(buffer.slice(range))).collect()
}

/// Appends `field` to a CSV line, quoted where RFC 4180 asks for it.
fn push_csv_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csv_has_a_row_per_posting_quoted_where_rfc_4180_asks_and_parquet_the_same_rows() {
        let posting = |account: &str, amount: &str, datanet_id: &str| EvidencePosting {
            account: account.into(),
            amount: amount.into(),
            datanet_id: datanet_id.into(),
        };
        let report = Report {
            format: FORMAT,
            period_id: "2026-11".into(),
            starts_at: "2026-11-01T00:00:00Z".into(),
            ends_at: "2026-12-01T00:00:00Z".into(),
            through_sequence: 9,
            settlement_count: 1,
            currencies: Vec::new(),
            payouts: Vec::new(),
            models: Vec::new(),
            datanets: Vec::new(),
            evidence: vec![Evidence {
                settlement_id: "s1".into(),
                kind: "inference".into(),
                inference_event_id: "e1".into(),
                request_id: "a,\"b\"".into(),
                model_id: "m".into(),
                revenue_policy_version: 3,
                occurred_at: "2026-11-02T00:00:00.000000Z".into(),
                currency: "EUR".into(),
                exponent: 2,
                fee: "100".into(),
                postings: vec![posting("fees:caller:c", "-100", ""), posting("payable:datanet_owner:o", "100", "de")],
            }],
        };
        let csv = String::from_utf8(report.csv()).expect("utf-8");
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], EVIDENCE_COLUMNS.join(","));
        assert_eq!(lines[1], "2026-11,s1,inference,e1,\"a,\"\"b\"\"\",m,3,2026-11-02T00:00:00.000000Z,fees:caller:c,EUR,2,-100,");
        assert_eq!(
            lines[2],
            "2026-11,s1,inference,e1,\"a,\"\"b\"\"\",m,3,2026-11-02T00:00:00.000000Z,payable:datanet_owner:o,EUR,2,100,de"
        );
        assert_eq!(lines[3..], [""]);

        let parquet = report.parquet().expect("renders");
        let reader = parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(parquet)).expect("reads");
        let rows: Vec<String> = parquet::file::reader::FileReader::get_row_iter(&reader, None)
            .expect("rows")
            .map(|row| row.expect("row").to_string())
            .collect();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].contains("fees:caller:c") && rows[0].contains("revenue_policy_version: 3"), "{}", rows[0]);
        assert!(rows[1].contains("account: \"payable:datanet_owner:o\"") && rows[1].contains("datanet_id: \"de\""), "{}", rows[1]);
    }

    fn settled(sequence: i64, kind: &str, fee: &str, lines: &[(&str, &str, &str)]) -> (transactions::Model, Vec<PeriodPosting>) {
        let transaction = transactions::Model {
            settlement_id: format!("s{sequence}"),
            kind: kind.into(),
            inference_event_id: format!("e{sequence}"),
            request_id: format!("r{sequence}"),
            model_id: "m".into(),
            period_id: "2026-11".into(),
            currency: "EUR".into(),
            exponent: 2,
            fee: fee.into(),
            policy_version: 1,
            occurred_at: "2026-11-02T00:00:00.000000Z".into(),
            stream_sequence: sequence,
        };
        let postings = lines
            .iter()
            .map(|(account, amount, datanet_id)| PeriodPosting {
                stream_sequence: sequence,
                account: (*account).into(),
                amount: (*amount).into(),
                datanet_id: (*datanet_id).into(),
            })
            .collect();
        (transaction, postings)
    }

    #[test]
    fn datanet_totals_sum_owner_and_contributor_credits_net_of_reversals_and_are_left_out_when_none() {
        let period = Period::from_id("2026-11").expect("a month");
        let first = [
            ("fees:caller:app", "-100", ""),
            ("payable:contributor:ann", "30", "de"),
            ("payable:contributor:ann", "10", "it"),
            ("payable:datanet_owner:olga", "5", "de"),
            ("payable:datanet_owner:olga", "5", "it"),
            ("payable:protocol", "50", ""),
        ];
        let second = [("fees:caller:app", "-10", ""), ("payable:contributor:bea", "7", "de"), ("pool:base:m", "3", "")];
        let reversal: Vec<(&str, String, &str)> = second
            .iter()
            .map(|(account, amount, datanet)| (*account, format!("{}", -amount.parse::<i128>().expect("number")), *datanet))
            .collect();
        let reversal: Vec<(&str, &str, &str)> =
            reversal.iter().map(|(account, amount, datanet)| (*account, amount.as_str(), *datanet)).collect();
        let report = build(
            period,
            3,
            vec![settled(1, "inference", "100", &first), settled(2, "inference", "10", &second), settled(3, "reversal", "-10", &reversal)],
        );
        let totals: Vec<(&str, &str, &str, &str, u64)> = report
            .datanets
            .iter()
            .map(|row| (row.datanet_id.as_str(), row.owner.as_str(), row.contributors.as_str(), row.total.as_str(), row.settlements))
            .collect();
        assert_eq!(totals, [("de", "5", "30", "35", 3), ("it", "5", "10", "15", 1)]);
        let json = String::from_utf8(report.render().expect("renders").json).expect("utf-8");
        assert!(json.contains(r#"{"account":"payable:contributor:ann","amount":"30","datanet_id":"de"}"#), "{json}");
        assert!(json.contains(r#"{"account":"fees:caller:app","amount":"-100"}"#), "{json}");

        // Postings that name no Datanet: no totals and no field, as before Datanets were booked.
        let plain =
            build(period, 1, vec![settled(1, "inference", "10", &[("fees:caller:app", "-10", ""), ("payable:protocol", "10", "")])]);
        let json = String::from_utf8(plain.render().expect("renders").json).expect("utf-8");
        assert!(!json.contains("datanet"), "{json}");
    }
}
