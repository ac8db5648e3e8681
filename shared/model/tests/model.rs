//! Training, determinism, resume and LoRA, end to end on a tiny model and the Flex backend.

use model::backend::{inference_device, training_device};
use model::{
    AdapterWeights, Checkpoint, Control, Error, LoraSpec, LoraTarget, ModelConfig, StepReport, Tokenizer, TrainConfig, Trainer,
    Transformer, evaluate, token_batch,
};

const ENGLISH: &str = "The old lighthouse keeper climbed the stairs every evening to light the lamp. \
Ships passed the rocky point at night, and the sailors trusted the light to guide them home. \
In winter the wind was strong and the waves were high, but the keeper never missed a night. \
He wrote in his logbook the weather, the ships he saw, and the birds that rested on the rail. ";

const SPANISH_TRAIN: &str = "El viejo farero subía la escalera cada tarde para encender la lámpara. \
Los barcos pasaban junto a la punta rocosa por la noche, y los marineros confiaban en la luz. \
En invierno el viento era fuerte y las olas eran altas, pero el farero nunca faltó una noche. \
Escribía en su cuaderno el tiempo, los barcos que veía y los pájaros que descansaban en la baranda. \
Mañana, decía, el mar estará más tranquilo, y la niña del pueblo vendrá a visitarlo con pan. ";

const SPANISH_HELD_OUT: &str = "Una noche de tormenta, el farero vio un barco pequeño cerca de las rocas. \
Bajó corriendo la escalera, encendió otra lámpara y la movió de un lado a otro para avisar a los marineros. ";

fn tiny() -> ModelConfig {
    ModelConfig::new(259, 2, 2, 32, 32)
}

fn train_config(steps: u64, seed: u64) -> TrainConfig {
    TrainConfig { learning_rate: 3e-3, weight_decay: 0.01, batch_size: 8, sequence_length: 32, steps, seed, warmup_steps: 5 }
}

fn tokens(text: &str, copies: usize) -> Vec<u32> {
    Tokenizer::byte_level().encode(&text.repeat(copies))
}

fn collect_losses(losses: &mut Vec<f32>) -> impl FnMut(&StepReport) -> Control + '_ {
    |report: &StepReport| {
        losses.push(report.loss);
        Control::Continue
    }
}

fn train_full(config: TrainConfig, text: &[u32]) -> Transformer {
    let mut trainer = Trainer::full(&tiny(), config, text.to_vec(), &training_device()).expect("valid run");
    trainer.run(&mut |_: &StepReport| Control::Continue).expect("training runs");
    trainer.into_model()
}

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

fn mean(values: &[f32]) -> f32 {
    values.iter().sum::<f32>() / values.len() as f32
}

#[test]
fn a_tiny_model_overfits_a_short_repeated_text() {
    let text = tokens(ENGLISH, 4);
    let mut trainer = Trainer::full(&tiny(), train_config(100, 1), text, &training_device()).expect("valid run");
    let mut losses = Vec::new();
    let outcome = trainer.run(&mut collect_losses(&mut losses)).expect("training runs");

    assert_eq!((outcome.steps_completed, outcome.stopped), (100, false));
    assert_eq!(losses.len(), 100);
    let (first, last) = (mean(&losses[..5]), mean(&losses[95..]));
    assert!((first - 259f32.ln()).abs() < 0.3, "an untrained model starts near ln(259): {first}");
    assert!(last < 0.5 * first, "loss should at least halve over 100 steps: {first} -> {last}");
}

#[test]
fn training_twice_with_one_seed_gives_one_digest_and_another_seed_another() {
    let text = tokens(ENGLISH, 2);
    let first = train_full(train_config(8, 7), &text).weights_digest().expect("serialisable");
    let second = train_full(train_config(8, 7), &text).weights_digest().expect("serialisable");
    let other = train_full(train_config(8, 8), &text).weights_digest().expect("serialisable");
    assert_eq!(first, second);
    assert_ne!(first, other);
}

#[test]
fn a_run_stopped_checkpointed_and_resumed_elsewhere_matches_a_straight_run() {
    let text = tokens(ENGLISH, 2);
    let config = train_config(12, 3);

    let mut straight = Trainer::full(&tiny(), config.clone(), text.clone(), &training_device()).expect("valid run").checkpoint_every(6);
    let mut periodic = Vec::new();
    let mut observer = Checkpoints { saved: &mut periodic, stop_at: None };
    straight.run(&mut observer).expect("training runs");
    let straight_digest = straight.model().weights_digest().expect("serialisable");

    let mut interrupted = Trainer::full(&tiny(), config, text.clone(), &training_device()).expect("valid run");
    let outcome =
        interrupted.run(&mut |report: &StepReport| if report.step == 6 { Control::Stop } else { Control::Continue }).expect("runs");
    assert_eq!((outcome.steps_completed, outcome.stopped), (6, true));
    let bytes = interrupted.checkpoint().expect("checkpointable").to_bytes().expect("serialisable");
    drop(interrupted);

    // The checkpoint the straight run handed out at step 6 is the same bytes.
    assert_eq!(periodic.len(), 2, "checkpoints at steps 6 and 12");
    assert_eq!(periodic[0], bytes, "checkpoint bytes are deterministic");

    let checkpoint = Checkpoint::from_bytes(&bytes).expect("parses");
    assert_eq!(checkpoint.step, 6);
    let mut resumed = Trainer::resume(&checkpoint, text.clone(), &training_device()).expect("resumable");
    let outcome = resumed.run(&mut |_: &StepReport| Control::Continue).expect("runs");
    assert_eq!((outcome.steps_completed, outcome.stopped), (12, false));
    assert_eq!(resumed.model().weights_digest().expect("serialisable"), straight_digest, "resume is bit-exact");

    let mut other_text = text;
    other_text[0] = u32::from(b'X');
    assert!(matches!(Trainer::resume(&checkpoint, other_text, &training_device()), Err(Error::InvalidConfig(_))));
}

struct Checkpoints<'a> {
    saved: &'a mut Vec<Vec<u8>>,
    stop_at: Option<u64>,
}

impl model::Observer for Checkpoints<'_> {
    fn on_step(&mut self, report: &StepReport) -> Control {
        if Some(report.step) == self.stop_at { Control::Stop } else { Control::Continue }
    }

    fn on_checkpoint(&mut self, checkpoint: Checkpoint) -> Control {
        self.saved.push(checkpoint.to_bytes().expect("serialisable"));
        Control::Continue
    }
}

#[test]
fn weights_round_trip_through_bytes_with_a_stable_digest() {
    let model = Transformer::new(&tiny(), 11, &inference_device()).expect("valid config");
    let bytes = model.to_bytes().expect("serialisable");
    assert_eq!(bytes, model.to_bytes().expect("serialisable"), "same weights, same bytes");
    assert_eq!(bytes, Transformer::new(&tiny(), 11, &inference_device()).expect("valid").to_bytes().expect("serialisable"));

    let loaded = Transformer::from_bytes(&tiny(), &bytes, &inference_device()).expect("loads");
    assert_eq!(loaded.weights_digest().expect("serialisable"), model.weights_digest().expect("serialisable"));
    assert_eq!(logits(&loaded, ENGLISH), logits(&model, ENGLISH));

    let wider = ModelConfig { width: 64, ..tiny() };
    assert!(matches!(Transformer::from_bytes(&wider, &bytes, &inference_device()), Err(Error::Record(_))));
}

fn lora_spec() -> LoraSpec {
    LoraSpec { rank: 4, alpha: 8.0, targets: LoraTarget::ALL.to_vec() }
}

fn lora_config(steps: u64) -> TrainConfig {
    TrainConfig { learning_rate: 1e-2, weight_decay: 0.0, batch_size: 8, sequence_length: 32, steps, seed: 5, warmup_steps: 3 }
}

/// A base trained briefly on English, on the training device.
fn english_base() -> Transformer {
    train_full(train_config(60, 21), &tokens(ENGLISH, 3))
}

#[test]
fn lora_training_leaves_the_base_weights_untouched() {
    let base = english_base();
    let base_digest = base.weights_digest().expect("serialisable");
    let mut trainer = Trainer::lora(base, &lora_spec(), lora_config(10), tokens(SPANISH_TRAIN, 2)).expect("valid run");
    trainer.run(&mut |_: &StepReport| Control::Continue).expect("runs");
    let adapted = trainer.into_model();

    assert_eq!(adapted.base_weights_digest().expect("serialisable"), base_digest);
    assert_ne!(adapted.weights_digest().expect("serialisable"), base_digest, "the adapter itself changed");
    let weights = adapted.adapter_weights().expect("has an adapter");
    assert!(weights.matrices.iter().all(|pair| pair.b.values.iter().any(|&value| value != 0.0)), "every B moved off zero");
}

#[test]
fn an_adapter_round_trips_onto_a_fresh_copy_of_the_base_and_merges() {
    let base = english_base();
    let base_bytes = base.to_bytes().expect("serialisable");
    let mut trainer = Trainer::lora(base, &lora_spec(), lora_config(10), tokens(SPANISH_TRAIN, 2)).expect("valid run");
    trainer.run(&mut |_: &StepReport| Control::Continue).expect("runs");
    let adapted = trainer.into_model();
    let adapter = adapted.adapter_to_bytes().expect("has an adapter");
    assert_eq!(adapter, adapted.adapter_to_bytes().expect("has an adapter"), "adapter bytes are deterministic");
    let expected = logits(&adapted, SPANISH_HELD_OUT);

    let fresh_base = Transformer::from_bytes(&tiny(), &base_bytes, &inference_device()).expect("loads");
    let reloaded = fresh_base.clone().load_adapter(&adapter).expect("same base");
    assert_eq!(logits(&reloaded, SPANISH_HELD_OUT), expected, "reloaded adapter gives identical logits");
    assert_ne!(logits(&fresh_base, SPANISH_HELD_OUT), expected, "the adapter changes the output");

    let merged = reloaded.merge_lora();
    assert!(merged.lora_spec().is_none());
    let difference = max_difference(&logits(&merged, SPANISH_HELD_OUT), &expected);
    assert!(difference < 1e-4, "merged logits differ by {difference}");

    let other_base = Transformer::new(&tiny(), 99, &inference_device()).expect("valid config");
    assert!(matches!(other_base.load_adapter(&adapter), Err(Error::AdapterBaseMismatch { .. })));
}

#[test]
fn exported_factors_rebuild_the_merged_weight_update() {
    let base = english_base();
    let spec = LoraSpec { rank: 2, alpha: 3.0, targets: vec![LoraTarget::AttentionValue, LoraTarget::MlpUp] };
    let mut trainer = Trainer::lora(base.clone(), &spec, lora_config(5), tokens(SPANISH_TRAIN, 2)).expect("valid run");
    trainer.run(&mut |_: &StepReport| Control::Continue).expect("runs");
    let adapted = trainer.into_model();

    let weights = AdapterWeights::from_bytes(&adapted.adapter_to_bytes().expect("has an adapter")).expect("parses");
    assert_eq!(weights.scale, 1.5);
    assert_eq!(weights.base_digest, base.weights_digest().expect("serialisable"));
    assert_eq!(weights.matrices.len(), 2 * 2, "two targets in each of two blocks");
    let up = weights.matrices.iter().find(|pair| pair.layer == 1 && pair.target == LoraTarget::MlpUp).expect("layer 1 mlp.up");
    assert_eq!((up.a.rows, up.a.cols, up.b.rows, up.b.cols), (32, 2, 2, 128));

    // W_merged - W_base must equal scale · A B, element by element.
    let merged = named_tensor(&adapted.merge_lora().to_bytes().expect("serialisable"), "blocks.1.mlp.up.weight");
    let original = named_tensor(&base.to_bytes().expect("serialisable"), "blocks.1.mlp.up.weight");
    let mut worst = 0.0f32;
    for row in 0..32 {
        for col in 0..128 {
            let product: f32 = (0..2).map(|k| up.a.values[row * 2 + k] * up.b.values[k * 128 + col]).sum();
            let update = merged[row * 128 + col] - original[row * 128 + col];
            worst = worst.max((update - weights.scale * product).abs());
        }
    }
    assert!(worst < 1e-5, "factors disagree with the merged update by {worst}");
    assert!(up.b.values.iter().any(|&value| value.abs() > 1e-4), "the update is not trivially zero");
}

fn named_tensor(burnpack: &[u8], name: &str) -> Vec<f32> {
    let reader = burn_pack::Reader::from_bytes(burn_pack::Bytes::from_bytes_vec(burnpack.to_vec())).expect("burnpack");
    let tensor = reader.into_tensors().expect("tensors").into_iter().find(|tensor| tensor.name == name).expect("named tensor");
    tensor.to_bytes().expect("resident").chunks_exact(4).map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]])).collect()
}

#[test]
fn an_impossible_rank_is_a_typed_error() {
    let base = Transformer::new(&tiny(), 1, &training_device()).expect("valid config");
    let spec = LoraSpec { rank: 64, alpha: 1.0, targets: vec![LoraTarget::AttentionQuery] };
    match base.with_lora(&spec, 0) {
        Err(Error::ImpossibleRank { rank: 64, target: LoraTarget::AttentionQuery, max: 32, .. }) => {}
        other => panic!("expected an impossible rank, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn lora_lowers_the_loss_on_new_text_against_the_frozen_base() {
    let base = english_base();
    let held_out = Tokenizer::byte_level().encode(SPANISH_HELD_OUT);
    let before = evaluate(&base, &held_out).expect("evaluable");
    assert!((before.perplexity - before.mean_loss.exp()).abs() < 1e-9);
    assert_eq!(before.predicted_tokens as usize, held_out.len() - 1);

    let mut trainer = Trainer::lora(base, &lora_spec(), lora_config(60), tokens(SPANISH_TRAIN, 2)).expect("valid run");
    trainer.run(&mut |_: &StepReport| Control::Continue).expect("runs");
    let after = evaluate(trainer.model(), &held_out).expect("evaluable");
    assert!(after.mean_loss < before.mean_loss - 0.25, "held-out Spanish loss {:.3} -> {:.3}", before.mean_loss, after.mean_loss);
}

#[test]
fn a_run_that_cannot_start_is_refused_before_training() {
    let short = Tokenizer::byte_level().encode("too short");
    let refused = Trainer::full(&tiny(), train_config(5, 1), short, &training_device());
    assert!(matches!(refused, Err(Error::NotEnoughTokens { needed: 33, available: 9 })));

    let mut out_of_range = tokens(ENGLISH, 1);
    out_of_range[3] = 259;
    let refused = Trainer::full(&tiny(), train_config(5, 1), out_of_range, &training_device());
    assert!(matches!(refused, Err(Error::TokenOutOfRange { token: 259, vocab_size: 259 })));

    let too_long = TrainConfig { sequence_length: 33, ..train_config(5, 1) };
    assert!(matches!(Trainer::full(&tiny(), too_long, tokens(ENGLISH, 1), &training_device()), Err(Error::InvalidConfig(_))));

    let without_autodiff = Trainer::full(&tiny(), train_config(5, 1), tokens(ENGLISH, 1), &inference_device());
    assert!(matches!(without_autodiff, Err(Error::InvalidConfig(_))));

    let trainer = Trainer::full(&tiny(), train_config(5, 1), tokens(ENGLISH, 1), &training_device()).expect("valid run");
    let mut bytes = trainer.checkpoint().expect("checkpointable").to_bytes().expect("serialisable");
    bytes.truncate(bytes.len() - 1);
    assert!(matches!(Checkpoint::from_bytes(&bytes), Err(Error::Corrupt { artifact: "checkpoint", .. })));
}

#[test]
fn one_batch_serves_several_adapters_as_each_would_alone_and_as_merged_weights() {
    let base = english_base().inference();
    let base_digest = base.weights_digest().expect("serialisable");
    let train = |text: &str, rank: usize, seed: u64| {
        let spec = LoraSpec { rank, alpha: 2.0 * rank as f64, targets: LoraTarget::ALL.to_vec() };
        let config = TrainConfig { seed, ..lora_config(8) };
        let base = Transformer::from_bytes(&tiny(), &base.to_bytes().expect("bytes"), &training_device()).expect("loads");
        let mut trainer = Trainer::lora(base, &spec, config, tokens(text, 2)).expect("valid run");
        trainer.run(&mut |_: &StepReport| Control::Continue).expect("runs");
        trainer.into_model().adapter_to_bytes().expect("an adapter")
    };
    // Two ranks and a partial target set, so the bank pads and zero-fills.
    let spanish = train(SPANISH_TRAIN, 4, 1);
    let english = train(ENGLISH, 2, 2);
    let partial = {
        let spec = LoraSpec { rank: 3, alpha: 3.0, targets: vec![LoraTarget::MlpUp, LoraTarget::AttentionValue] };
        let base = Transformer::from_bytes(&tiny(), &base.to_bytes().expect("bytes"), &training_device()).expect("loads");
        let mut trainer = Trainer::lora(base, &spec, lora_config(8), tokens(SPANISH_TRAIN, 2)).expect("valid run");
        trainer.run(&mut |_: &StepReport| Control::Continue).expect("runs");
        trainer.into_model().adapter_to_bytes().expect("an adapter")
    };
    let adapters: Vec<AdapterWeights> =
        [&spanish, &english, &partial].iter().map(|bytes| AdapterWeights::from_bytes(bytes).expect("parses")).collect();
    let bank = model::AdapterBank::new(&base, &base_digest, &adapters.iter().collect::<Vec<_>>()).expect("one base");

    let texts = [SPANISH_HELD_OUT, ENGLISH, SPANISH_HELD_OUT, ENGLISH];
    let slots = [1, 2, 0, 3];
    let rows: Vec<Vec<u32>> = texts.iter().map(|text| Tokenizer::byte_level().encode(text)[..32].to_vec()).collect();
    let row_refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
    let batched =
        base.forward_with_adapters(token_batch(&row_refs, 259, &base.device()).expect("batch"), &bank, &slots).expect("valid slots");
    let batched = batched.into_data().try_to_vec::<f32>().expect("f32");
    let per_row = batched.len() / rows.len();
    for (row, (&slot, text)) in slots.iter().zip(texts).enumerate() {
        let alone = match slot {
            0 => base.clone(),
            slot => base.clone().load_adapter([&spanish, &english, &partial][slot - 1]).expect("same base"),
        };
        let ours = &batched[row * per_row..(row + 1) * per_row];
        let difference = max_difference(ours, &logits(&alone, text));
        assert!(difference < 1e-5, "row {row} (slot {slot}) differs from its adapter alone by {difference}");
        let merged = max_difference(ours, &logits(&alone.merge_lora(), text));
        assert!(merged < 1e-4, "row {row} (slot {slot}) differs from merged weights by {merged}");
    }

    let other = Transformer::new(&tiny(), 99, &inference_device()).expect("valid config");
    let other_digest = other.weights_digest().expect("serialisable");
    assert!(matches!(model::AdapterBank::new(&other, &other_digest, &[&adapters[0]]), Err(Error::AdapterBaseMismatch { .. })));
    let single = token_batch(&row_refs[..1], 259, &base.device()).expect("batch");
    assert!(matches!(base.forward_with_adapters(single, &bank, &[4]), Err(Error::MalformedBatch(_))), "slot 4 is not in the bank");
}

#[test]
fn decoding_from_the_cache_gives_the_logits_of_running_the_whole_window() {
    let base = english_base().inference();
    let base_digest = base.weights_digest().expect("serialisable");
    let adapter = |text: &str, rank: usize| {
        let spec = LoraSpec { rank, alpha: 2.0 * rank as f64, targets: LoraTarget::ALL.to_vec() };
        let on_training = Transformer::from_bytes(&tiny(), &base.to_bytes().expect("bytes"), &training_device()).expect("loads");
        let mut trainer = Trainer::lora(on_training, &spec, lora_config(4), tokens(text, 2)).expect("valid run");
        trainer.run(&mut |_: &StepReport| Control::Continue).expect("runs");
        AdapterWeights::from_bytes(&trainer.into_model().adapter_to_bytes().expect("an adapter")).expect("parses")
    };
    let adapters = [adapter(SPANISH_TRAIN, 4), adapter(ENGLISH, 2)];
    let bank = model::AdapterBank::new(&base, &base_digest, &adapters.iter().collect::<Vec<_>>()).expect("one base");
    // What the whole window gives at its last position, the row run alone.
    let whole = |tokens: &[u32], slot: usize| {
        let batch = token_batch(&[tokens], 259, &base.device()).expect("batch");
        let logits = base.forward_with_adapters(batch, &bank, &[slot]).expect("valid slot").into_data().try_to_vec::<f32>().expect("f32");
        logits[(tokens.len() - 1) * 259..].to_vec()
    };
    let texts: Vec<Vec<u32>> = [SPANISH_HELD_OUT, ENGLISH, SPANISH_TRAIN, ENGLISH]
        .iter()
        .map(|text| Tokenizer::byte_level().encode(text)[..32].to_vec())
        .collect();
    // (text, slot, prompt length): ragged prompts, every slot, the base alone included.
    let mut rows: Vec<(usize, usize, usize)> = vec![(0, 1, 5), (1, 2, 12), (2, 0, 9)];
    let check = |rows: &[(usize, usize, usize)], logits: &[f32], what: &str| {
        for ((text, slot, length), ours) in rows.iter().zip(logits.chunks(259)) {
            let difference = max_difference(ours, &whole(&texts[*text][..*length], *slot));
            assert!(difference < 1e-5, "{what}: text {text} at {length} tokens (slot {slot}) differs by {difference}");
        }
    };

    let prompts: Vec<&[u32]> = rows.iter().map(|&(text, _, length)| &texts[text][..length]).collect();
    let gather = |rows: &[(usize, usize, usize)]| {
        let slots: Vec<usize> = rows.iter().map(|&(_, slot, _)| slot).collect();
        bank.gather(&slots, &base.device()).expect("slots in the bank")
    };
    let (logits, mut cache) = base.prefill_with_adapters(&prompts, &gather(&rows)).expect("prefills");
    check(&rows, &logits, "prefill");
    assert_eq!(cache.lengths(), [5, 12, 9]);
    for step in 0..19 {
        if step == 6 {
            // The middle row leaves; a new one joins with a prompt longer than any row's
            // positions, so the cache shifts the others to align write slots.
            cache = cache.retain(&[true, false, true]).expect("two rows stay");
            rows.remove(1);
            let (logits, fresh) =
                base.prefill_with_adapters(&[&texts[3][..19]], &bank.gather(&[2], &base.device()).expect("slot 2")).expect("prefills");
            check(&[(3, 2, 19)], &logits, "joining prefill");
            cache = cache.append(fresh);
            rows.push((3, 2, 19));
        }
        let fed: Vec<u32> = rows.iter().map(|&(text, _, length)| texts[text][length]).collect();
        for row in &mut rows {
            row.2 += 1;
        }
        let logits = base.decode_with_adapters(&fed, &mut cache, &gather(&rows)).expect("decodes");
        check(&rows, &logits, &format!("decoding step {step}"));
        assert_eq!(cache.lengths(), rows.iter().map(|&(_, _, length)| length).collect::<Vec<_>>());
    }
    // The joined row now holds the whole context: it cannot take another position.
    assert_eq!(rows[2].2, 32);
    let refused = base.decode_with_adapters(&[1, 1, 1], &mut cache, &gather(&rows));
    assert!(matches!(refused, Err(Error::MalformedBatch(_))), "a full row must be prefilled, not decoded");
    assert!(cache.retain(&[false, false, false]).is_none());

    // The plain model's path: one row, prefill then steps, as `forward` gives.
    let text = &texts[1];
    let (mut logits, mut cache) = base.prefill(&[&text[..3]]).expect("prefills");
    for length in 3..32 {
        let alone = base.forward(token_batch(&[&text[..length]], 259, &base.device()).expect("batch"));
        let alone = alone.into_data().try_to_vec::<f32>().expect("f32");
        let difference = max_difference(&logits, &alone[(length - 1) * 259..]);
        assert!(difference < 1e-5, "plain decoding at {length} tokens differs by {difference}");
        logits = base.decode(&[text[length]], &mut cache).expect("decodes");
    }
}
