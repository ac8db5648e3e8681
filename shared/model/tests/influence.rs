//! The batched probe path against the batch-size-1 parameter-gradient oracle, for a plain
//! model and for a LoRA adapter.

use model::backend::training_device;
use model::{Control, Featurizer, LoraSpec, LoraTarget, ModelConfig, Sequence, StepReport, Tokenizer, TrainConfig, Trainer, Transformer};

const TEXT: &str = "The old lighthouse keeper climbed the stairs every evening to light the lamp. \
Ships passed the rocky point at night, and the sailors trusted the light to guide them home. ";

const OTHER: &str = "El viejo farero subía la escalera cada tarde para encender la lámpara. \
Los barcos pasaban junto a la punta rocosa por la noche. ";

fn tiny() -> ModelConfig {
    ModelConfig::new(259, 2, 2, 32, 32)
}

fn config(steps: u64) -> TrainConfig {
    TrainConfig { learning_rate: 3e-3, weight_decay: 0.01, batch_size: 4, sequence_length: 32, steps, seed: 9, warmup_steps: 2 }
}

fn trained(text: &str, steps: u64) -> Transformer {
    let tokens = Tokenizer::byte_level().encode(&text.repeat(3));
    let mut trainer = Trainer::full(&tiny(), config(steps), tokens, &training_device()).expect("valid run");
    trainer.run(&mut |_: &StepReport| Control::Continue).expect("runs");
    trainer.into_model()
}

fn sequences(tokens: &[Vec<u32>]) -> Vec<Sequence<'_>> {
    // Rows of different lengths (padding), one longer than the context (cut), and a query whose
    // loss counts only after its "prompt".
    vec![
        Sequence::trained(&tokens[0][..20]),
        Sequence::trained(&tokens[0][5..40]),
        Sequence::trained(&tokens[1][..12]),
        Sequence::answer(&tokens[1][3..30], 10),
    ]
}

fn relative_difference(left: &[f32], right: &[f32]) -> f64 {
    assert_eq!(left.len(), right.len());
    let difference: f64 = left.iter().zip(right).map(|(l, r)| f64::from(l - r).powi(2)).sum();
    let norm: f64 = right.iter().map(|r| f64::from(*r).powi(2)).sum();
    assert!(norm > 0.0, "the oracle's features are not all zero");
    (difference / norm).sqrt()
}

fn check_against_oracle(model: &Transformer) {
    let tokenizer = Tokenizer::byte_level();
    let tokens = vec![tokenizer.encode(TEXT), tokenizer.encode(OTHER)];
    let batch = sequences(&tokens);
    let featurizer = Featurizer::new(model, 17, 4).expect("valid projection");
    // The batched path runs on the inference copy (frozen weights, probes only).
    let batched = featurizer.features(&model.inference(), &batch).expect("features");
    assert_eq!(batched.len(), batch.len() * featurizer.dim());
    for (row, sequence) in batch.iter().enumerate() {
        let oracle = featurizer.features_by_parameters(model, *sequence).expect("oracle");
        let got = &batched[row * featurizer.dim()..(row + 1) * featurizer.dim()];
        let difference = relative_difference(got, &oracle);
        assert!(difference < 1e-5, "row {row}: batched and oracle features differ by {difference:e} (relative)");
    }
    let again = Featurizer::new(model, 17, 4).expect("valid projection").features(&model.inference(), &batch).expect("features");
    assert_eq!(again, batched, "the same seed gives the same projection");
    let other = Featurizer::new(model, 18, 4).expect("valid projection").features(&model.inference(), &batch).expect("features");
    assert_ne!(other, batched, "another seed gives another projection");
}

#[test]
fn batched_probe_features_agree_with_per_example_parameter_gradients() {
    let model = trained(TEXT, 8);
    let featurizer = Featurizer::new(&model, 17, 4).expect("valid projection");
    assert_eq!(featurizer.dim(), 2 * 6 * 16, "two blocks of six layers, 4x4 each");
    check_against_oracle(&model);
}

#[test]
fn a_trained_examples_feature_is_its_summed_loss_gradient_a_querys_its_mean() {
    let model = trained(TEXT, 8);
    let tokens = Tokenizer::byte_level().encode(TEXT);
    let featurizer = Featurizer::new(&model, 17, 4).expect("valid projection");
    let frozen = model.inference();
    let summed = featurizer.features(&frozen, &[Sequence::trained(&tokens[..25])]).expect("features");
    let mean = featurizer.features(&frozen, &[Sequence::answer(&tokens[..25], 0)]).expect("features");
    // 25 tokens make 24 next-token predictions: training weighs the example by all of them.
    let scaled: Vec<f32> = mean.iter().map(|value| value * 24.0).collect();
    let difference = relative_difference(&summed, &scaled);
    assert!(difference < 1e-5, "summed and 24 x mean features differ by {difference:e} (relative)");
}

#[test]
fn adapter_features_are_the_adapter_gradients() {
    let base = trained(TEXT, 8);
    let spec = LoraSpec { rank: 2, alpha: 4.0, targets: vec![LoraTarget::AttentionQuery, LoraTarget::MlpDown] };
    let tokens = Tokenizer::byte_level().encode(&OTHER.repeat(3));
    let mut trainer = Trainer::lora(base, &spec, config(6), tokens).expect("valid run");
    trainer.run(&mut |_: &StepReport| Control::Continue).expect("runs");
    let adapted = trainer.into_model();
    let featurizer = Featurizer::new(&adapted, 17, 4).expect("valid projection");
    assert_eq!(featurizer.dim(), 2 * 2 * (4 * 2 + 2 * 4), "two blocks, two targets, A and B sketches");
    check_against_oracle(&adapted);
}
