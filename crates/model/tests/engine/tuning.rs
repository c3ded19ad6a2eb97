//! Prompt tuning in this process on the default model: a soft prompt
//! learns a fixed set of answers the model does not give by itself, and
//! the prompt file saves and loads exactly.

use std::time::Instant;

use hypertensor_model::tune::{Adam, Example, LocalRunner, SoftPrompts, Tuner};
use hypertensor_model::{BlockSpan, Embedding, GgufFile, Head, Tokenizer};

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
}
