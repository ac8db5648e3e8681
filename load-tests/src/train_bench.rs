//! `train-bench`: training throughput and peak memory of the same model, batch and sequence
//! length in Burn (the Flex CPU backend by default) and in PyTorch on the CPU, side by side,
//! with a LoRA step next to a full step. Writes one JSON report. Built with `--features cuda`,
//! `--backend cuda` compares Burn's CUDA backend with PyTorch on the same GPU instead.
//!
//! Every measurement runs in a child process of its own, so that its peak resident memory is
//! its own, and the cases run interleaved (Burn full, PyTorch full, Burn LoRA, PyTorch LoRA,
//! then again), so that a busy neighbour slows all of them alike. Figures are medians over the
//! rounds. The PyTorch side is `load-tests/torch/train_bench.py`, run by the Python of
//! `.tools/torch-venv` (`scripts/bootstrap.sh --torch`); the two build the same architecture
//! (see that script) and train on random byte tokens.

#![allow(clippy::print_stdout, reason = "the child's output is its JSON line; the parent prints the report path")]

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::Parser;
use model::backend::Backend;
use model::{Control, LoraSpec, LoraTarget, ModelConfig, StepReport, TrainConfig, Trainer, Transformer};
use provenant_load_tests::{median, peak_rss_mib};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Burn vs PyTorch training throughput on the CPU or a CUDA GPU (JSON report)")]
struct Arguments {
    /// Burn's backend: `flex` (CPU, PyTorch on the CPU beside it) or, in a `cuda` build,
    /// `cuda` (PyTorch on the GPU beside it).
    #[arg(long, default_value = "flex")]
    backend: Backend,
    /// Rounds of the four interleaved cases.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Timed steps per measurement.
    #[arg(long, default_value_t = 30)]
    steps: u64,
    /// Untimed steps first.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    #[arg(long, default_value_t = 4)]
    layers: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 128)]
    width: usize,
    #[arg(long, default_value_t = 128)]
    context: usize,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// PyTorch's intra-op threads. Burn's Flex backend runs each operation on one core (its `rayon`
    /// feature, tried, trained slower here) and the trainer splits a CPU batch into two shards on
    /// two threads, so the default of 2 gives PyTorch the same two cores.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value = ".tools/torch-venv/bin/python")]
    torch_python: PathBuf,
    #[arg(long, default_value = "load-tests/torch/train_bench.py")]
    torch_script: PathBuf,
    #[arg(long, default_value = "target/bench/train.json")]
    output: PathBuf,
    /// Internal: run one Burn measurement (`full` or `lora`) and print its JSON line.
    #[arg(long, hide = true)]
    child: Option<String>,
}

const LORA_RANK: usize = 8;
const LORA_ALPHA: f64 = 16.0;
const LORA_TARGETS: &str = "attention_query,attention_key,attention_value,attention_output,mlp_up,mlp_down";

fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    match arguments.child.as_deref() {
        Some(method) => {
            println!("{}", burn_measurement(&arguments, method)?);
            Ok(())
        }
        None => compare(&arguments),
    }
}

/// Random byte tokens from a fixed seed (SplitMix64), as many as the run draws.
fn random_tokens(count: usize, seed: u64) -> Vec<u32> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            u32::try_from((z ^ (z >> 31)) % 256).expect("a byte")
        })
        .collect()
}

fn burn_measurement(arguments: &Arguments, method: &str) -> anyhow::Result<Value> {
    let config = ModelConfig::new(259, arguments.layers, arguments.heads, arguments.width, arguments.context);
    let steps = arguments.warmup + arguments.steps;
    let train = TrainConfig {
        learning_rate: 3e-3,
        weight_decay: 0.01,
        batch_size: arguments.batch,
        sequence_length: arguments.context,
        steps,
        seed: 1,
        warmup_steps: 0,
    };
    // One window per row per step and one more token: no window repeats within the run.
    let tokens = random_tokens(usize::try_from(steps)? * arguments.batch * arguments.context + 1, 1);
    let device = arguments.backend.training_device();
    let mut trainer = match method {
        "full" => Trainer::full(&config, train, tokens, &device)?,
        "lora" => {
            let targets = LoraTarget::ALL.to_vec();
            Trainer::lora(Transformer::new(&config, 1, &device)?, &LoraSpec { rank: LORA_RANK, alpha: LORA_ALPHA, targets }, train, tokens)?
        }
        other => bail!("unknown method {other}"),
    };
    let warmup = arguments.warmup;
    let mut step_seconds = Vec::new();
    let mut final_loss = f32::NAN;
    let tokens_per_step = (arguments.batch * arguments.context) as f64;
    trainer.run(&mut |report: &StepReport| {
        if report.step > warmup {
            step_seconds.push(tokens_per_step / report.tokens_per_second);
        }
        final_loss = report.loss;
        Control::Continue
    })?;
    let total: f64 = step_seconds.iter().sum();
    Ok(json!({
        "framework": "burn",
        "version": "0.22.1",
        "backend": arguments.backend.name(),
        "device": if arguments.backend.is_gpu() { format!("{}:0", arguments.backend.name()) } else { "cpu".to_owned() },
        "method": method,
        "step_seconds": step_seconds,
        "tokens_per_second": tokens_per_step * step_seconds.len() as f64 / total,
        "median_step_tokens_per_second": tokens_per_step / median(&step_seconds),
        "final_loss": final_loss,
        "peak_rss_bytes": (peak_rss_mib() * 1024.0 * 1024.0).round(),
    }))
}

fn run_child(mut command: Command, what: &str) -> anyhow::Result<Value> {
    let output = command.output().with_context(|| format!("cannot start the {what} measurement"))?;
    if !output.status.success() {
        bail!("the {what} measurement failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let stdout = String::from_utf8(output.stdout)?;
    let line = stdout.lines().rev().find(|line| line.starts_with('{')).with_context(|| format!("no JSON from the {what} measurement"))?;
    Ok(serde_json::from_str(line)?)
}

fn compare(arguments: &Arguments) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let shape = |command: &mut Command| {
        command.args(["--steps", &arguments.steps.to_string(), "--layers", &arguments.layers.to_string()]);
        command.args(["--heads", &arguments.heads.to_string(), "--width", &arguments.width.to_string()]);
        command.args(["--batch", &arguments.batch.to_string()]);
    };
    let torch_device = if arguments.backend.is_gpu() { "cuda" } else { "cpu" };
    let torch_available = arguments.torch_python.exists();
    // Both frameworks' children get the allocator settings the services run with (unless the
    // caller chose their own).
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_else(|_| model::backend::GLIBC_TUNABLES.to_owned());
    let load_before = provenant_load_tests::load_average();
    let mut runs: Vec<(String, Value)> = Vec::new();
    for round in 0..arguments.rounds {
        for method in ["full", "lora"] {
            let mut burn = Command::new(&exe);
            burn.env("GLIBC_TUNABLES", &tunables);
            shape(&mut burn);
            burn.args(["--warmup", &arguments.warmup.to_string(), "--context", &arguments.context.to_string(), "--child", method]);
            burn.args(["--backend", arguments.backend.name()]);
            eprintln!("round {}: burn {method}", round + 1);
            runs.push((format!("burn_{method}"), run_child(burn, "Burn")?));
            if torch_available {
                let mut torch = Command::new(&arguments.torch_python);
                torch.env("GLIBC_TUNABLES", &tunables);
                torch.arg(&arguments.torch_script);
                shape(&mut torch);
                torch.args(["--warmup-steps", &arguments.warmup.to_string(), "--context", &arguments.context.to_string()]);
                torch.args(["--seq", &arguments.context.to_string(), "--threads", &arguments.threads.to_string(), "--method", method]);
                torch.args(["--device", torch_device]);
                torch.args(["--rank", &LORA_RANK.to_string(), "--alpha", &LORA_ALPHA.to_string(), "--targets", LORA_TARGETS]);
                eprintln!("round {}: pytorch {method}", round + 1);
                runs.push((format!("pytorch_{method}"), run_child(torch, "PyTorch")?));
            }
        }
    }
    let summary = |case: &str| {
        let of_case: Vec<&Value> = runs.iter().filter(|(name, _)| name == case).map(|(_, run)| run).collect();
        let figure = |field: &str| of_case.iter().filter_map(|run| run[field].as_f64()).collect::<Vec<f64>>();
        let throughput = figure("tokens_per_second");
        json!({
            "tokens_per_second_runs": throughput,
            "tokens_per_second_median": median(&throughput),
            "peak_rss_mib_median": median(&figure("peak_rss_bytes")) / 1024.0 / 1024.0,
            "peak_device_mib_median": Some(figure("peak_device_bytes")).filter(|bytes| !bytes.is_empty()).map(|bytes| median(&bytes) / 1024.0 / 1024.0),
            "device": of_case.first().map(|run| run["device"].clone()),
            "final_loss_median": median(&figure("final_loss")),
            "version": of_case.first().map(|run| run["version"].clone()),
            "parameters_trainable": of_case.first().map(|run| run["parameters_trainable"].clone()),
        })
    };
    let cases: Vec<&str> =
        if torch_available { vec!["burn_full", "pytorch_full", "burn_lora", "pytorch_lora"] } else { vec!["burn_full", "burn_lora"] };
    let results: serde_json::Map<String, Value> = cases.iter().map(|case| ((*case).to_owned(), summary(case))).collect();
    let rate = |case: &str| results.get(case).and_then(|result| result["tokens_per_second_median"].as_f64());
    let ratio = |numerator: &str, denominator: &str| rate(numerator).zip(rate(denominator)).map(|(top, bottom)| top / bottom);
    let report = json!({
        "benchmark": format!("training throughput, Burn vs PyTorch on the {}", if arguments.backend.is_gpu() { "GPU" } else { "CPU" }),
        "burn_backend": arguments.backend.name(),
        "burn_cpu_shards": model::training::CPU_SHARDS,
        "glibc_tunables": tunables,
        "model": {"vocab_size": 259, "layers": arguments.layers, "heads": arguments.heads, "width": arguments.width,
                  "context_length": arguments.context, "mlp_ratio": 4, "activation": "relu", "batch_size": arguments.batch,
                  "sequence_length": arguments.context, "optimizer": "AdamW lr 3e-3 wd 0.01", "data": "random bytes"},
        "lora": {"rank": LORA_RANK, "alpha": LORA_ALPHA, "targets": LORA_TARGETS},
        "rounds": arguments.rounds,
        "measured_steps": arguments.steps,
        "warmup_steps": arguments.warmup,
        "pytorch_threads": arguments.threads,
        "machine": provenant_load_tests::machine_load(&load_before),
        "results": results,
        "ratios": {
            "burn_over_pytorch_full": ratio("burn_full", "pytorch_full"),
            "burn_over_pytorch_lora": ratio("burn_lora", "pytorch_lora"),
            "burn_lora_over_full": ratio("burn_lora", "burn_full"),
            "pytorch_lora_over_full": ratio("pytorch_lora", "pytorch_full"),
        },
        "target": "Burn at >= 0.7x PyTorch tokens/s",
        "pytorch": if torch_available { "measured" } else { "not installed: scripts/bootstrap.sh --torch" },
    });
    provenant_load_tests::write_report(&arguments.output, &report, "ratios")
}
