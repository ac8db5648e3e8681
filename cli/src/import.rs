//! `provenant datanet import`: loads text files into a Datanet as contributions, one record per
//! fortune (records separated by lines holding only `%`, as in fortune(6) files; a file without
//! separators is one record), one contributor per file.
//!
//! Each file's contributor is the API key mapped to its stem in `--keys` (a JSON object
//! `{"art": "pvk_…"}`), or `--key` for every file. Records go to the ingest API concurrently,
//! with a progress bar; the summary counts what was accepted for validation and what was refused.

#![allow(clippy::print_stdout, reason = "the summary is the command's output")]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, clap::Args)]
pub struct ImportArguments {
    /// The ingest service.
    #[arg(long, default_value = "http://127.0.0.1:8081", env = "PROVENANT_INGEST_URL")]
    ingest_url: String,
    /// The Datanet to contribute to.
    #[arg(long)]
    datanet: String,
    /// One API key for every file.
    #[arg(long, env = "PROVENANT_API_KEY", conflicts_with = "keys")]
    key: Option<String>,
    /// A JSON file mapping file stems to API keys: one contributor per file.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Records to take from each file (all when absent).
    #[arg(long)]
    per_file: Option<usize>,
    /// Submissions in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Files, or folders whose files are imported (index files `*.dat` and symbolic links are skipped).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// The stem that names a file's contributor: `arte.fortunes` → `arte`, `art` → `art`.
fn stem(path: &Path) -> String {
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    name.split('.').next().unwrap_or_default().to_owned()
}

fn files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        let metadata = std::fs::symlink_metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if metadata.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
                .filter_map(Result::ok)
                .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_none_or(|extension| extension != "dat"))
                .collect();
            entries.sort();
            files.extend(entries);
        } else if metadata.is_file() {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// The records of a fortune-style file.
pub fn records(text: &str) -> Vec<String> {
    let mut records = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim() == "%" {
            records.push(std::mem::take(&mut current));
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    records.push(current);
    records.into_iter().map(|record| record.trim().to_owned()).filter(|record| !record.is_empty()).collect()
}

pub async fn run(arguments: ImportArguments) -> anyhow::Result<()> {
    provenant_telemetry::install_crypto_provider();
    let keys: HashMap<String, String> = match &arguments.keys {
        Some(path) => serde_json::from_slice(&std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?)
            .context("--keys must be a JSON object of file stem to API key")?,
        None => HashMap::new(),
    };
    let mut work = Vec::new();
    for file in files(&arguments.paths)? {
        let key = keys.get(&stem(&file)).or(arguments.key.as_ref()).with_context(|| format!("no API key for {}", file.display()))?;
        let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let mut file_records = records(&String::from_utf8_lossy(&bytes));
        if let Some(limit) = arguments.per_file {
            file_records.truncate(limit);
        }
        work.extend(file_records.into_iter().map(|record| (key.clone(), record)));
    }
    if work.is_empty() {
        bail!("nothing to import");
    }
    let client = reqwest::Client::new();
    let url = format!("{}/v1/datanets/{}/contributions", arguments.ingest_url.trim_end_matches('/'), arguments.datanet);
    let progress = ProgressBar::new(work.len() as u64);
    progress.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} records  {per_sec}  eta {eta}").context("progress template")?);
    let started = Instant::now();
    let outcomes: Vec<Result<u16, String>> = futures::stream::iter(work)
        .map(|(key, record)| {
            let request = client.post(&url).bearer_auth(key).header("content-type", "text/plain; charset=utf-8").body(record);
            let progress = progress.clone();
            async move {
                let outcome = match request.send().await {
                    Ok(response) => Ok(response.status().as_u16()),
                    Err(error) => Err(error.to_string()),
                };
                progress.inc(1);
                outcome
            }
        })
        .buffer_unordered(arguments.concurrency.max(1))
        .collect()
        .await;
    progress.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for outcome in &outcomes {
        let label = match outcome {
            Ok(202) => "submitted (202)".to_owned(),
            Ok(status) => format!("refused ({status})"),
            Err(error) => format!("failed ({error})"),
        };
        *by_status.entry(label).or_default() += 1;
    }
    let summary: Vec<String> = by_status.iter().map(|(label, count)| format!("{count} {label}")).collect();
    println!("{} records in {elapsed:.1} s ({:.0}/s): {}", outcomes.len(), outcomes.len() as f64 / elapsed.max(1e-9), summary.join(", "));
    if outcomes.iter().any(|outcome| !matches!(outcome, Ok(202))) {
        bail!("some records were not submitted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fortune_files_split_on_percent_lines() {
        let text = "First fortune,\non two lines.\n%\nSecond.\n%\n\n%\nThird, 50% off.\n";
        assert_eq!(records(text), ["First fortune,\non two lines.", "Second.", "Third, 50% off."]);
        assert_eq!(records("Just one record.\n"), ["Just one record."]);
        assert_eq!(stem(Path::new("/x/es/arte.fortunes")), "arte");
    }
}
