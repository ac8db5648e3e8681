//! A GPU backend (`cuda` or `wgpu`) checked against Flex, the CPU reference.
//!
//! Compiled only with `--features cuda` or `--features wgpu` (both keep the default `flex`),
//! and run on a machine with a GPU and its driver; CI has neither, so `make test` never builds
//! this file (`scripts/gpu-check.sh` does). With a GPU backend compiled, `training_device()`
//! prefers it, so `tests/model.rs` (determinism, resume, LoRA round trips) runs on the GPU in
//! the same build; this file adds what only a comparison of the two backends can show: that
//! the GPU computes the same model.

#![cfg(all(feature = "flex", any(feature = "cuda", feature = "wgpu")))]

use model::backend::Backend;
use model::{Control, LoraSpec, LoraTarget, ModelConfig, StepReport, Tokenizer, TrainConfig, Trainer, Transformer, token_batch};

const TEXT: &str = "The old lighthouse keeper climbed the stairs every evening to light the lamp. \
Ships passed the rocky point at night, and the sailors trusted the light to guide them home. ";

const OTHER_TEXT: &str = "El viejo farero subía la escalera cada tarde para encender la lámpara. \
Los barcos pasaban junto a la punta rocosa por la noche, y los marineros confiaban en la luz. ";

/// The GPU backend this build has (CUDA when both are compiled).
fn gpu() -> Backend {
    Backend::available().into_iter().find(|backend| backend.is_gpu()).expect("a GPU backend is compiled")
}

fn tiny() -> ModelConfig {
    ModelConfig::new(259, 2, 2, 32, 32)
}

fn train_config(steps: u64) -> TrainConfig {
    TrainConfig { learning_rate: 3e-3, weight_decay: 0.01, batch_size: 8, sequence_length: 32, steps, seed: 11, warmup_steps: 5 }
}

fn tokens(text: &str, copies: usize) -> Vec<u32> {
    Tokenizer::byte_level().encode(&text.repeat(copies))
}

/// Logits of the first 32 bytes of `text`, read back to the host.
fn logits(model: &Transformer, text: &str) -> Vec<f32> {
    let model = model.inference();
    let tokens = Tokenizer::byte_level().encode(text);
    let batch = token_batch(&[&tokens[..32]], 259, &model.device()).expect("valid batch");
    model.forward(batch).into_data().try_to_vec::<f32>().expect("f32 logits")
}

fn max_difference(left: &[f32], right: &[f32]) -> f32 {
    assert_eq!(left.len(), right.len());
    left.iter().zip(right).map(|(l, r)| (l - r).abs()).fold(0.0, f32::max)
}

/// Trains with `trainer` and returns every step's loss.
fn losses_of(trainer: &mut Trainer) -> Vec<f32> {
    let mut losses = Vec::new();
    trainer
        .run(&mut |report: &StepReport| {
            losses.push(report.loss);
            Control::Continue
        })
        .expect("training runs");
    losses
}

#[test]
fn one_seed_gives_the_same_weights_and_logits_on_the_gpu_as_on_flex() {
    let cpu = Transformer::new(&tiny(), 3, &Backend::Flex.device()).expect("valid config");
    let gpu = Transformer::new(&tiny(), 3, &gpu().device()).expect("valid config");
    assert_eq!(gpu.weights_digest().expect("serialisable"), cpu.weights_digest().expect("serialisable"));

    let difference = max_difference(&logits(&gpu, TEXT), &logits(&cpu, TEXT));
    assert!(difference < 1e-4, "GPU logits differ from Flex's by {difference}");
}

#[test]
fn full_training_on_the_gpu_follows_the_cpu_loss_curve() {
    let steps = 40;
    let data = tokens(TEXT, 4);
    let mut on_cpu = Trainer::full(&tiny(), train_config(steps), data.clone(), &Backend::Flex.training_device()).expect("valid run");
    let mut on_gpu = Trainer::full(&tiny(), train_config(steps), data, &gpu().training_device()).expect("valid run");
    let cpu_losses = losses_of(&mut on_cpu);
    let gpu_losses = losses_of(&mut on_gpu);

    assert_eq!(gpu_losses.len(), cpu_losses.len());
    // Summation order differs between the backends, so the curves drift apart by rounding only.
    let worst = max_difference(&gpu_losses, &cpu_losses);
    assert!(worst < 2e-2, "GPU losses drift from Flex's by up to {worst}: {gpu_losses:?} vs {cpu_losses:?}");
    let (first, last) = (gpu_losses[0], gpu_losses[gpu_losses.len() - 1]);
    assert!(last < first - 1.0, "the loss on GPU fell only from {first} to {last}");

    // The trained weights, moved to the CPU, predict what the CPU-trained model predicts.
    let gpu_bytes = on_gpu.into_model().to_bytes().expect("serialisable");
    let moved = Transformer::from_bytes(&tiny(), &gpu_bytes, &Backend::Flex.device()).expect("loads on the CPU");
    let difference = max_difference(&logits(&moved, TEXT), &logits(on_cpu.model(), TEXT));
    assert!(difference < 5e-2, "GPU-trained logits differ from Flex-trained ones by {difference}");
}

#[test]
fn training_twice_on_the_gpu_with_one_seed_gives_one_digest() {
    let run = || {
        let mut trainer = Trainer::full(&tiny(), train_config(15), tokens(TEXT, 4), &gpu().training_device()).expect("valid run");
        losses_of(&mut trainer);
        trainer.into_model().weights_digest().expect("serialisable")
    };
    assert_eq!(run(), run(), "GPU training is not bit-reproducible for one seed");
}

#[test]
fn a_lora_adapter_trained_on_the_gpu_serves_from_the_cpu_base() {
    let base = Transformer::new(&tiny(), 5, &Backend::Flex.device()).expect("valid config");
    let base_bytes = base.to_bytes().expect("serialisable");
    let gpu_base = Transformer::from_bytes(&tiny(), &base_bytes, &gpu().training_device()).expect("loads on the GPU");
    let spec = LoraSpec { rank: 4, alpha: 8.0, targets: LoraTarget::ALL.to_vec() };
    let lora =
        TrainConfig { learning_rate: 1e-2, weight_decay: 0.0, batch_size: 8, sequence_length: 32, steps: 30, seed: 5, warmup_steps: 3 };
    let mut trainer = Trainer::lora(gpu_base, &spec, lora, tokens(OTHER_TEXT, 4)).expect("valid run");
    let losses = losses_of(&mut trainer);
    assert!(losses[losses.len() - 1] < losses[0], "LoRA on GPU did not lower the loss: {losses:?}");
    let adapted = trainer.into_model();
    assert_eq!(
        adapted.base_weights_digest().expect("serialisable"),
        base.weights_digest().expect("serialisable"),
        "the base stayed frozen"
    );

    let on_cpu = base.load_adapter(&adapted.adapter_to_bytes().expect("has an adapter")).expect("same base");
    let difference = max_difference(&logits(&on_cpu, OTHER_TEXT), &logits(&adapted, OTHER_TEXT));
    assert!(difference < 1e-4, "the adapter's logits on the CPU differ from the GPU's by {difference}");
}
