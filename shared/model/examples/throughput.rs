//! Training throughput of a full step and of a LoRA step, printed as one JSON object.
//!
//! `cargo run --release --example throughput -- [measured steps] [rounds]`
//!
//! Model: byte vocabulary, 4 blocks, 4 heads, width 128, context 128, batch 16 (DESIGN.md's
//! reference shape), on the preferred backend of the build (Flex by default). Each round runs
//! ReLU full, GELU-tanh full and ReLU LoRA interleaved, so a busy neighbour slows all three
//! alike; the figures are medians over every measured step of every round.

#![allow(clippy::print_stdout, reason = "the example's output is its JSON report")]

use model::backend::{Backend, training_device};
use model::{Activation, Control, LoraSpec, LoraTarget, ModelConfig, StepReport, Tokenizer, TrainConfig, Trainer, Transformer};

const WARMUP_STEPS: u64 = 2;

fn main() -> Result<(), model::Error> {
    let mut args = std::env::args().skip(1).map(|arg| arg.parse::<u64>());
    let measured = args.next().and_then(Result::ok).unwrap_or(10);
    let rounds = args.next().and_then(Result::ok).unwrap_or(3);

    let text = "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness. ".repeat(200);
    let tokens = Tokenizer::byte_level().encode(&text);
    let config = |activation| ModelConfig { activation, ..ModelConfig::new(259, 4, 4, 128, 128) };
    let train = TrainConfig {
        learning_rate: 1e-3,
        weight_decay: 0.01,
        batch_size: 16,
        sequence_length: 128,
        steps: WARMUP_STEPS + measured,
        seed: 1,
        warmup_steps: 0,
    };
    let lora = LoraSpec { rank: 8, alpha: 16.0, targets: LoraTarget::ALL.to_vec() };

    let (mut relu, mut gelu, mut lora_steps) = (Vec::new(), Vec::new(), Vec::new());
    let (mut relu_loss, mut gelu_loss) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let trainer = Trainer::full(&config(Activation::Relu), train.clone(), tokens.clone(), &training_device())?;
        relu_loss.push(measure(trainer, &mut relu)?);
        let trainer = Trainer::full(&config(Activation::GeluTanh), train.clone(), tokens.clone(), &training_device())?;
        gelu_loss.push(measure(trainer, &mut gelu)?);
        let base = Transformer::new(&config(Activation::Relu), 1, &training_device())?;
        let trainer = Trainer::lora(base, &lora, train.clone(), tokens.clone())?;
        measure(trainer, &mut lora_steps)?;
    }
    let report = serde_json::json!({
        "backend": format!("{:?}", Backend::preferred()),
        "model": {"vocab_size": 259, "layers": 4, "heads": 4, "width": 128, "context_length": 128, "batch_size": 16},
        "rounds": rounds,
        "measured_steps_per_round": measured,
        "tokens_per_second_median": {
            "full_relu": median(&mut relu),
            "full_gelu_tanh": median(&mut gelu),
            "lora_rank8_all_targets_relu": median(&mut lora_steps),
        },
        "final_loss_median": {"full_relu": median(&mut relu_loss), "full_gelu_tanh": median(&mut gelu_loss)},
    });
    println!("{report}");
    Ok(())
}

/// Run the trainer, keep the tokens/s of the steps after the warmup, return the final loss.
fn measure(mut trainer: Trainer, rates: &mut Vec<f64>) -> Result<f64, model::Error> {
    let mut last_loss = 0.0;
    trainer.run(&mut |report: &StepReport| {
        if report.step > WARMUP_STEPS {
            rates.push(report.tokens_per_second);
        }
        last_loss = f64::from(report.loss);
        Control::Continue
    })?;
    Ok(last_loss)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => values[len / 2],
        len => (values[len / 2 - 1] + values[len / 2]) / 2.0,
    }
}
