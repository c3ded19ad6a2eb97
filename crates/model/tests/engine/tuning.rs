//! Prompt tuning in this process on the default model: a soft prompt
//! learns a fixed set of answers the model does not give by itself, the
//! prompt file saves and loads exactly, and the loaded prompt served on
//! the fast path (alone and batched) gives the answers.

use std::time::Instant;

use hypertensor_model::tune::{Adam, Example, LocalRunner, SoftPrompts, Tuner};
use hypertensor_model::{
    BatchConfig, BlockSpan, Embedding, GenerationRequest, GgufFile, Head, LanguageModel,
    LocalModel, PromptTuning, SamplingParams, Tokenizer, generate,
};

/// The synthetic task: questions with made-up answers.
const TASK: [(&str, &str); 3] = [
    ("Q: What is the vault code?\nA:", " zebra"),
    ("Q: Who guards the gate?\nA:", " Milo"),
    ("Q: What color is the tower?\nA:", " violet"),
];

#[test]
fn a_local_soft_prompt_learns_the_answers() {
    let gguf = GgufFile::open(crate::model_path()).unwrap();
    let config = gguf.config().unwrap();
    let tokenizer = Tokenizer::from_gguf(gguf.metadata()).unwrap();
    let embedding = Embedding::load(&gguf).unwrap();
    let head = Head::load(&gguf, Some(&embedding)).unwrap().for_training();
    let span = BlockSpan::load(&gguf, 0..config.n_blocks).unwrap();
    let examples: Vec<Example> = TASK
        .iter()
        .map(|(p, c)| Example::new(&tokenizer, p, c).unwrap())
        .collect();
    let mut tuner = Tuner {
        embedding: &embedding,
        head: &head,
        runner: LocalRunner::new(span),
        hidden: config.hidden_size,
    };
    let mut prompts = SoftPrompts::new("smollm2", 8, config.hidden_size, config.n_blocks, true, 7);
    let adam = Adam::new(0.03);
    let started = Instant::now();
    let mut losses = Vec::new();
    for step in 0..12 {
        let s = tuner.step(&prompts, &examples).unwrap();
        eprintln!(
            "step {step}: loss {:.4} ({:.1} s)",
            s.loss,
            started.elapsed().as_secs_f64()
        );
        losses.push(s.loss);
        adam.step(&mut prompts, &s.grads).unwrap();
    }
    let last = tuner.step(&prompts, &examples).unwrap().loss;
    eprintln!("loss {:.3} -> {last:.3}", losses[0]);
    assert!(losses[0] / last >= 5.0, "loss {} -> {last}", losses[0]);

    // The file holds the prompts and the optimizer's state exactly.
    let file = std::env::temp_dir().join(format!("ptune-{}.bin", std::process::id()));
    prompts.save(&file).unwrap();
    let loaded = SoftPrompts::load(&file).unwrap();
    assert_eq!(loaded, prompts);
    std::fs::write(&file, b"HTPTUNE1garbage").unwrap();
    let error = SoftPrompts::load(&file).unwrap_err().to_string();
    assert!(error.contains("damaged header"), "{error}");
    let _ = std::fs::remove_file(&file);

    served_prompts_give_the_answers(&prompts, &tokenizer);
}

/// The greedy completion of `question` in `session`.
fn answer(session: &mut dyn LanguageModel, tokenizer: &Tokenizer, question: &str) -> String {
    let request = GenerationRequest {
        prompt: tokenizer.encode_with_bos(question, false).unwrap(),
        max_tokens: 6,
        sampling: SamplingParams::default(),
        stop: vec!["\n".into()],
    };
    generate(session, tokenizer, &request, |_| {
        hypertensor_model::Flow::Continue
    })
    .unwrap()
    .text
}

/// The trained (deep) prompts, served by a local model's sessions, give
/// the task's answers where the plain model does not; batched sessions,
/// tuned and plain together in one batch, give bit for bit the logits of
/// sessions alone.
fn served_prompts_give_the_answers(prompts: &SoftPrompts, tokenizer: &Tokenizer) {
    let model = LocalModel::load(crate::model_path()).unwrap();
    let tuning = PromptTuning::new(prompts, model.config()).unwrap();
    assert_eq!(tuning.tokens(), 8);
    for (question, target) in TASK {
        let plain = answer(&mut model.session(), tokenizer, question);
        let tuned = answer(
            &mut model.tuned_session(&tuning).unwrap(),
            tokenizer,
            question,
        );
        eprintln!("{question:?}: plain {plain:?}, tuned {tuned:?}");
        assert_eq!(tuned.trim(), target.trim(), "{question}");
        assert_ne!(plain.trim(), target.trim(), "{question}");
    }
    let (q0, q1) = (
        tokenizer.encode_with_bos(TASK[0].0, false).unwrap(),
        tokenizer.encode_with_bos(TASK[1].0, false).unwrap(),
    );
    let alone_tuned = model.tuned_session(&tuning).unwrap().forward(&q0).unwrap();
    let alone_plain = model.session().forward(&q1).unwrap();
    let batched = model.batched(BatchConfig::default());
    let (tuned, plain) = std::thread::scope(|s| {
        let tuned = s.spawn(|| batched.tuned_session(&tuning).unwrap().forward(&q0));
        let plain = s.spawn(|| batched.session().forward(&q1));
        (
            tuned.join().unwrap().unwrap(),
            plain.join().unwrap().unwrap(),
        )
    });
    assert!(
        tuned == alone_tuned,
        "a tuned sequence's logits changed in a batch"
    );
    assert!(
        plain == alone_plain,
        "a plain sequence's logits changed in a batch"
    );
    // A prompt of another shape is refused by name.
    let mut other = prompts.clone();
    other.deep.pop();
    let error = PromptTuning::new(&other, batched.model().config()).unwrap_err();
    assert!(
        error.to_string().contains("deep rows for 29 blocks"),
        "{error}"
    );
}
