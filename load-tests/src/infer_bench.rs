//! `infer-bench`: decoding throughput and latency of the infer service's batcher with 1, 8 and
//! 64 distinct LoRA adapters in the mix, beside a naive server that merges each request's
//! adapter into a copy of the base and decodes it alone; cold adapter loads; memory with 1,000
//! adapters registered and loaded. Writes one JSON report.
//!
//! Both sides decode in this process, without HTTP or NATS (which the service adds equally to
//! both): the batched side submits every request at once to one `infer::batching::Batcher`
//! with one decoding thread per core (the service's default on a CPU); the naive side runs one
//! worker thread per core, each taking the next request, merging (`load_adapter` +
//! `merge_lora`) and decoding it with `infer::generation::generate`. Both decode from a cache
//! of keys and values (a prefill, then one position per token). Cases
//! run interleaved (batched 1, 8, 64, naive, then again) after one untimed round (a GPU backend
//! compiles its kernels on first use); figures are medians over the timed rounds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Parser;
use infer::batching::{Batcher, Job};
use infer::generation::{GenerationRequest, Sampling, generate, prompt_tokens};
use model::backend::Backend;
use model::{AdapterWeights, Control, LoraSpec, LoraTarget, ModelConfig, StepReport, TrainConfig, Trainer, Transformer};
use provenant_load_tests::{median, quantile};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Multi-adapter batched decoding vs merge-per-request (JSON report)")]
struct Arguments {
    /// Burn's backend (`flex`, the CPU, by default; a GPU one in a build with its feature).
    #[arg(long, default_value = "flex")]
    backend: Backend,
    /// Requests in flight at once, per case.
    #[arg(long, default_value_t = 64)]
    requests: usize,
    /// Most tokens each request generates (an early EOS ends one sooner; tokens are counted).
    #[arg(long, default_value_t = 32)]
    tokens: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Untimed rounds first (a GPU backend compiles its kernels on first use).
    #[arg(long, default_value_t = 1)]
    warmup_rounds: usize,
    #[arg(long, default_value_t = 2)]
    layers: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 64)]
    width: usize,
    #[arg(long, default_value_t = 64)]
    context: usize,
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// Rows per forward pass of a decoding thread.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Decoding threads of the batched server (0: one per core, as the naive server has
    /// workers; the infer service's default on a CPU).
    #[arg(long, default_value_t = 0)]
    decode_threads: usize,
    /// Adapters registered and loaded for the memory figure.
    #[arg(long, default_value_t = 1000)]
    registered: usize,
    #[arg(long, default_value = "target/bench/infer.json")]
    output: std::path::PathBuf,
}

const MIXES: [usize; 3] = [1, 8, 64];
const PROMPT: &str = "The old lighthouse keeper";

fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    let config = ModelConfig::new(259, arguments.layers, arguments.heads, arguments.width, arguments.context);
    let base = Transformer::new(&config, 1, &arguments.backend.device())?;
    let base_digest = base.weights_digest()?;
    let distinct = *MIXES.iter().max().expect("mixes");
    eprintln!("training {distinct} adapters (one step each, so that B is not zero)");
    let adapters = make_adapters(&base, distinct, arguments.rank, arguments.backend)?;
    let factors: Vec<Arc<AdapterWeights>> =
        adapters.iter().map(|bytes| AdapterWeights::from_bytes(bytes).map(Arc::new)).collect::<Result<_, _>>()?;
    let base = Arc::new(base);
    let load_before = provenant_load_tests::load_average();

    let mut runs: Vec<(String, Value)> = Vec::new();
    for round in 0..arguments.warmup_rounds + arguments.rounds {
        let timed = round >= arguments.warmup_rounds;
        for mix in MIXES {
            eprintln!("round {}: batched, {mix} distinct adapters", round + 1);
            let run = batched(&arguments, &base, &base_digest, &factors, mix)?;
            if timed {
                runs.push((format!("batched_{mix}"), run));
            }
        }
        eprintln!("round {}: naive merge-per-request, {distinct} adapters", round + 1);
        let run = naive(&arguments, &base, &adapters, distinct)?;
        if timed {
            runs.push((format!("naive_{distinct}"), run));
        }
    }
    let summary = |case: &str| {
        let of_case: Vec<&Value> = runs.iter().filter(|(name, _)| name == case).map(|(_, run)| run).collect();
        let figure = |field: &str| of_case.iter().filter_map(|run| run[field].as_f64()).collect::<Vec<f64>>();
        json!({
            "tokens_per_second_runs": figure("tokens_per_second"),
            "tokens_per_second_median": median(&figure("tokens_per_second")),
            "latency_p50_ms_median": median(&figure("latency_p50_ms")),
            "latency_p99_ms_median": median(&figure("latency_p99_ms")),
            "largest_batch": of_case.first().map(|run| run["largest_batch"].clone()),
        })
    };
    let cases = ["batched_1", "batched_8", "batched_64", "naive_64"];
    let results: serde_json::Map<String, Value> = cases.iter().map(|case| ((*case).to_owned(), summary(case))).collect();
    let rate = |case: &str| results[case]["tokens_per_second_median"].as_f64().unwrap_or(f64::NAN);

    let cold = cold_loads(&adapters, &base, &base_digest, &factors)?;
    let memory = registered_memory(&adapters, arguments.registered)?;
    let report = json!({
        "benchmark": "multi-adapter decoding: one forward pass per step for every adapter vs merge-per-request",
        "model": {"vocab_size": 259, "layers": arguments.layers, "heads": arguments.heads, "width": arguments.width,
                  "context_length": arguments.context, "lora_rank": arguments.rank, "lora_targets": "all six"},
        "workload": {"requests_in_flight": arguments.requests, "tokens_per_request": arguments.tokens, "prompt": PROMPT,
                     "sampling": "temperature 1, top_p 1, seed per request", "max_batch": arguments.max_batch,
                     "decode_threads": decode_threads(&arguments)},
        "rounds": arguments.rounds,
        "warmup_rounds": arguments.warmup_rounds,
        "backend": arguments.backend.name(),
        "machine": provenant_load_tests::machine_load(&load_before),
        "results": results,
        "ratios": {
            "batched_64_over_batched_1": rate("batched_64") / rate("batched_1"),
            "batched_64_over_naive_64": rate("batched_64") / rate("naive_64"),
        },
        "targets": {"batched_64_over_batched_1": ">= 0.7", "batched_64_over_naive_64": ">= 3"},
        "cold_adapter_load": cold,
        "memory": memory,
    });
    provenant_load_tests::write_report(&arguments.output, &report, "ratios")
}

/// `count` adapters of `base`, each one AdamW step from its seeded start (B moves off zero).
fn make_adapters(base: &Transformer, count: usize, rank: usize, backend: Backend) -> anyhow::Result<Vec<Vec<u8>>> {
    let bytes = base.to_bytes()?;
    let tokens: Vec<u32> = PROMPT.repeat(40).bytes().map(u32::from).collect();
    (0..count)
        .map(|index| {
            let on_training = Transformer::from_bytes(base.config(), &bytes, &backend.training_device())?;
            let spec = LoraSpec { rank, alpha: 2.0 * rank as f64, targets: LoraTarget::ALL.to_vec() };
            let train = TrainConfig {
                learning_rate: 1e-2,
                weight_decay: 0.0,
                batch_size: 2,
                sequence_length: 32,
                steps: 1,
                seed: index as u64,
                warmup_steps: 0,
            };
            let mut trainer = Trainer::lora(on_training, &spec, train, tokens.clone())?;
            trainer.run(&mut |_: &StepReport| Control::Continue)?;
            Ok(trainer.into_model().adapter_to_bytes()?)
        })
        .collect()
}

fn request(arguments: &Arguments, index: usize) -> GenerationRequest {
    GenerationRequest {
        prompt: prompt_tokens(PROMPT),
        max_tokens: arguments.tokens,
        stop: Vec::new(),
        sampling: Sampling { temperature: 1.0, top_p: 1.0, seed: index as u64 },
    }
}

/// Every request submitted at once to one batcher; adapters round-robin over `mix` of them.
fn batched(
    arguments: &Arguments,
    base: &Arc<Transformer>,
    base_digest: &str,
    factors: &[Arc<AdapterWeights>],
    mix: usize,
) -> anyhow::Result<Value> {
    let batcher = Batcher::start(Arc::clone(base), base_digest.to_owned(), arguments.max_batch, decode_threads(arguments))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = Instant::now();
    let answers = runtime.block_on(async {
        let mut pending = Vec::new();
        for index in 0..arguments.requests {
            let (done, answer) = tokio::sync::oneshot::channel();
            let slot = index % mix;
            let adapter = Some((format!("adapter-{slot}"), Arc::clone(&factors[slot])));
            batcher.submit(Job { request: request(arguments, index), adapter, pieces: None, done })?;
            pending.push(answer);
        }
        let mut answers = Vec::new();
        for answer in pending {
            let generated = answer.await??;
            answers.push((started.elapsed().as_secs_f64() * 1e3, generated.output_tokens));
        }
        anyhow::Ok(answers)
    })?;
    let mut figures = decoding_figures(&answers, started.elapsed().as_secs_f64());
    figures["largest_batch"] = json!(batcher.stats().largest_batch);
    Ok(figures)
}

fn decode_threads(arguments: &Arguments) -> usize {
    match arguments.decode_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        threads => threads,
    }
}

/// Tokens/s and latency quantiles from (milliseconds to answer, tokens) per request.
fn decoding_figures(answers: &[(f64, u32)], seconds: f64) -> Value {
    let tokens: u64 = answers.iter().map(|(_, tokens)| u64::from(*tokens)).sum();
    let latencies: Vec<f64> = answers.iter().map(|(milliseconds, _)| *milliseconds).collect();
    json!({
        "tokens_per_second": tokens as f64 / seconds,
        "latency_p50_ms": quantile(&latencies, 0.5),
        "latency_p99_ms": quantile(&latencies, 0.99),
        "tokens": tokens,
    })
}

/// One worker per core; each request merges its adapter into a copy of the base, then decodes.
fn naive(arguments: &Arguments, base: &Arc<Transformer>, adapters: &[Vec<u8>], mix: usize) -> anyhow::Result<Value> {
    let next = AtomicUsize::new(0);
    let answers = Mutex::new(Vec::new());
    let started = Instant::now();
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= arguments.requests {
                            return Ok(());
                        }
                        let merged = (**base).clone().load_adapter(&adapters[index % mix])?.merge_lora();
                        let generated = generate(&merged, &request(arguments, index), &mut |_| true)?;
                        answers.lock().expect("not poisoned").push((started.elapsed().as_secs_f64() * 1e3, generated.output_tokens));
                    }
                })
            })
            .collect();
        // A worker's failure fails the benchmark rather than thinning its figures.
        handles.into_iter().try_for_each(|handle| handle.join().map_err(|_| anyhow::anyhow!("a naive worker panicked"))?)
    })?;
    let answers = answers.into_inner().expect("not poisoned");
    let mut figures = decoding_figures(&answers, started.elapsed().as_secs_f64());
    figures["largest_batch"] = json!(1);
    figures["workers"] = json!(workers);
    Ok(figures)
}

/// What a first request for an adapter pays beyond the object store read: parsing its factors,
/// and rebuilding the bank of the adapters in flight (here: all of them).
fn cold_loads(adapters: &[Vec<u8>], base: &Transformer, base_digest: &str, factors: &[Arc<AdapterWeights>]) -> anyhow::Result<Value> {
    let mut parse = Vec::new();
    for bytes in adapters {
        let started = Instant::now();
        let _ = AdapterWeights::from_bytes(bytes)?;
        parse.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let mut rebuild = Vec::new();
    let all: Vec<&AdapterWeights> = factors.iter().map(Arc::as_ref).collect();
    for _ in 0..5 {
        let started = Instant::now();
        let _ = model::AdapterBank::new(base, base_digest, &all)?;
        rebuild.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(json!({
        "adapter_bytes": adapters.first().map_or(0, Vec::len),
        "parse_ms_median": median(&parse),
        "bank_rebuild_ms_median": median(&rebuild),
        "bank_adapters": factors.len(),
    }))
}

/// Resident memory for `count` adapters registered in a catalogue and their factors loaded.
fn registered_memory(adapters: &[Vec<u8>], count: usize) -> anyhow::Result<Value> {
    let before = current_rss_mib();
    let catalog = infer::catalog::Catalog::default();
    let mut loaded = Vec::with_capacity(count);
    for index in 0..count {
        let blob = |sha: String| Some(provenant_events::proto::common::v1::BlobRef { sha256: sha, ..Default::default() });
        let event = provenant_events::proto::training::v1::ModelRegistered {
            model_id: format!("adapter-{index}"),
            name: format!("adapter-{index}"),
            kind: provenant_events::proto::training::v1::ModelKind::Adapter.into(),
            base_model_id: "base".to_owned(),
            weights: blob(format!("{index:064x}")),
            config: blob("0".repeat(64)),
            ..Default::default()
        };
        catalog.register(&event, 0).map_err(anyhow::Error::msg)?;
        loaded.push(Arc::new(AdapterWeights::from_bytes(&adapters[index % adapters.len()])?));
    }
    let after = current_rss_mib();
    Ok(json!({
        "adapters": count,
        "rss_before_mib": before,
        "rss_after_mib": after,
        "per_adapter_kib": (after - before) * 1024.0 / count as f64,
        "loaded": loaded.len(),
    }))
}

fn current_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}
