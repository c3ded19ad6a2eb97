//! The backward pass of real block spans against central finite
//! differences of their own training forward: the gradient with respect
//! to the input hidden states (a shallow prompt's rows are input rows) and
//! with respect to every block's deep prompt vectors, on the default
//! model's Llama blocks and on Gemma 3's (per-head query and key norms,
//! norms on the attention and MLP outputs, GELU).
//!
//! The check is directional: for a fixed random `r` and loss
//! `L = sum(output * r)`, the backward's `<dL/dx, v>` must match the
//! central difference of `L` along random directions `v`, on five points
//! (`L(x ± 2 eps v)`, `L(x ± eps v)`: error of order `eps^4`, so `eps` can
//! be large enough that f32 rounding of the losses stays small).

use hypertensor_model::{BlockSpan, GgufFile, HiddenStates, TrainingWeights};

/// A seeded stream of values in [-1, 1) (no dependency for a test).
struct Values(u64);

impl Values {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn take(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

/// `sum(output * r)` of the span's training forward.
fn loss(
    span: &BlockSpan,
    weights: &TrainingWeights,
    x: &[f32],
    prompts: &[Vec<f32>],
    r: &[f32],
) -> f64 {
    let h = span.config().hidden_size;
    let input = HiddenStates::new(h, x.to_vec()).unwrap();
    let (out, _) = span.forward_train(weights, &input, prompts).unwrap();
    dot(out.as_slice(), r)
}

/// The five-point central difference of `f(step)` (`f` evaluated at
/// `step` times `eps` along a direction) at 0.
fn central(f: impl Fn(f32) -> f64, eps: f32) -> f64 {
    (-f(2.0) + 8.0 * f(1.0) - 8.0 * f(-1.0) + f(-2.0)) / (12.0 * f64::from(eps))
}

/// Relative disagreement of two directional derivatives.
fn relative(analytic: f64, numeric: f64) -> f64 {
    (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(1e-6)
}

/// Checks the input and prompt gradients of `span` on `n` positions with
/// `prompt_rows` deep prompt rows; returns the largest relative error.
fn check(span: &BlockSpan, n: usize, prompt_rows: usize, seed: u64) -> f64 {
    let h = span.config().hidden_size;
    let blocks = span.range().len();
    let mut values = Values(seed);
    // Unit-RMS inputs, the scale the blocks' norms work at; prompts small.
    let x = values
        .take(n * h)
        .iter()
        .map(|v| v * 1.7)
        .collect::<Vec<_>>();
    let prompts: Vec<Vec<f32>> = (0..if prompt_rows > 0 { blocks } else { 0 })
        .map(|_| {
            values
                .take(prompt_rows * h)
                .iter()
                .map(|v| v * 0.1)
                .collect()
        })
        .collect();
    let r = values.take(n * h);
    let input = HiddenStates::new(h, x.clone()).unwrap();
    let weights = span.training_weights();
    let (_, tape) = span.forward_train(&weights, &input, &prompts).unwrap();
    let bound = span.tape_len(n);
    assert!(
        tape.len() <= bound && tape.len() * 11 / 10 >= bound,
        "the tape holds {} floats, the bound says {bound}",
        tape.len()
    );
    let grads = span
        .backward(&weights, &tape, &HiddenStates::new(h, r.clone()).unwrap())
        .unwrap();
    assert_eq!(grads.prompts.len(), prompts.len());
    let eps = 1e-2f32;
    let mut worst = 0.0f64;
    for _ in 0..3 {
        // Along the input.
        let v = values.take(n * h);
        let along = |step: f32| -> f64 {
            let moved: Vec<f32> = x.iter().zip(&v).map(|(a, b)| a + step * eps * b).collect();
            loss(span, &weights, &moved, &prompts, &r)
        };
        let numeric = central(along, eps);
        let analytic = dot(grads.input.as_slice(), &v);
        worst = worst.max(relative(analytic, numeric));
        // Along every block's prompt at once.
        if prompt_rows > 0 {
            let vs: Vec<Vec<f32>> = (0..blocks).map(|_| values.take(prompt_rows * h)).collect();
            let along = |step: f32| -> f64 {
                let moved: Vec<Vec<f32>> = prompts
                    .iter()
                    .zip(&vs)
                    .map(|(p, v)| p.iter().zip(v).map(|(a, b)| a + step * eps * b).collect())
                    .collect();
                loss(span, &weights, &x, &moved, &r)
            };
            let numeric = central(along, eps);
            let analytic: f64 = grads.prompts.iter().zip(&vs).map(|(g, v)| dot(g, v)).sum();
            worst = worst.max(relative(analytic, numeric));
        }
    }
    worst
}

/// The largest relative error allowed: the forward is f32 end to end,
/// so differences of nearby losses carry rounding.
const TOLERANCE: f64 = 5e-3;

#[test]
fn llama_blocks_backward_matches_finite_differences() {
    let gguf = GgufFile::open(crate::model_path()).unwrap();
    let span = BlockSpan::load(&gguf, 3..5).unwrap();
    let shallow = check(&span, 7, 0, 1);
    let deep = check(&span, 7, 2, 2);
    eprintln!("llama: worst relative error {shallow:.2e} (input), {deep:.2e} (deep prompts)");
    assert!(shallow < TOLERANCE, "input gradient off by {shallow:.2e}");
    assert!(deep < TOLERANCE, "deep prompt gradient off by {deep:.2e}");
}

#[test]
fn gemma3_blocks_backward_matches_finite_differences() {
    let gguf = GgufFile::open(crate::other_files::gemma_path()).unwrap();
    let span = BlockSpan::load(&gguf, 4..6).unwrap();
    let worst = check(&span, 6, 2, 3);
    eprintln!("gemma 3: worst relative error {worst:.2e}");
    assert!(worst < TOLERANCE, "gradient off by {worst:.2e}");
}

#[test]
fn malformed_training_inputs_are_refused_by_name() {
    let gguf = GgufFile::open(crate::model_path()).unwrap();
    let span = BlockSpan::load(&gguf, 0..2).unwrap();
    let h = span.config().hidden_size;
    let input = HiddenStates::new(h, vec![0.5; 3 * h]).unwrap();
    let weights = span.training_weights();
    let refused = |prompts: Vec<Vec<f32>>| {
        span.forward_train(&weights, &input, &prompts)
            .unwrap_err()
            .to_string()
    };
    assert!(refused(vec![vec![0.0; h]]).contains("one per block"));
    assert!(refused(vec![vec![0.0; h], vec![0.0; 2 * h]]).contains("same whole number of rows"));
    assert!(refused(vec![vec![0.0; 4 * h]; 2]).contains("for a sequence of 3 positions"));
    assert!(refused(vec![vec![f32::NAN; h]; 2]).contains("non-finite"));
    let (_, tape) = span.forward_train(&weights, &input, &[]).unwrap();
    let wrong = HiddenStates::new(h, vec![0.0; 2 * h]).unwrap();
    let error = span
        .backward(&weights, &tape, &wrong)
        .unwrap_err()
        .to_string();
    assert!(error.contains("2 rows"), "{error}");
}

/// The values of a fixture's list of numbers.
fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// `|a - b| / |b|` over whole vectors.
fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let norm: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (diff / norm).sqrt()
}

/// Largest relative error, over whole vectors, between this engine's f32
/// training pass and the float64 NumPy reference: f32 arithmetic through
/// two blocks accounts for about 1e-6 of it.
const NUMPY_TOLERANCE: f64 = 1e-4;

#[test]
fn backward_agrees_with_an_independent_numpy_backward() {
    let fixture = crate::other_files::fixture("backward_reference.json");
    let gguf = GgufFile::open(crate::model_path()).unwrap();
    let blocks = fixture["blocks"].as_array().unwrap();
    let range = blocks[0].as_u64().unwrap() as usize..blocks[1].as_u64().unwrap() as usize;
    let span = BlockSpan::load(&gguf, range).unwrap();
    let h = span.config().hidden_size;
    let input = HiddenStates::new(h, floats(&fixture["x"])).unwrap();
    let prompts: Vec<Vec<f32>> = fixture["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let weights = span.training_weights();
    let (output, tape) = span.forward_train(&weights, &input, &prompts).unwrap();
    let grad_output = HiddenStates::new(h, floats(&fixture["grad_output"])).unwrap();
    let grads = span.backward(&weights, &tape, &grad_output).unwrap();
    let forward = relative_l2(output.as_slice(), &floats(&fixture["output"]));
    let input_grad = relative_l2(grads.input.as_slice(), &floats(&fixture["grad_input"]));
    let expected_prompts: Vec<Vec<f32>> = fixture["grad_prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    assert_eq!(grads.prompts.len(), expected_prompts.len());
    let prompt_grad = grads
        .prompts
        .iter()
        .zip(&expected_prompts)
        .map(|(g, e)| relative_l2(g, e))
        .fold(0.0, f64::max);
    eprintln!(
        "against NumPy: output {forward:.2e}, input gradient {input_grad:.2e}, prompt gradients {prompt_grad:.2e}"
    );
    assert!(forward < NUMPY_TOLERANCE, "output off by {forward:.2e}");
    assert!(
        input_grad < NUMPY_TOLERANCE,
        "input gradient off by {input_grad:.2e}"
    );
    assert!(
        prompt_grad < NUMPY_TOLERANCE,
        "prompt gradients off by {prompt_grad:.2e}"
    );
}
