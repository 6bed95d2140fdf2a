//! InstaTune fine-tuning on the real SmolLM2-135M-Instruct model: a few steps on one repeated batch of 32
//! tokens lower the loss of the full network; the chat-template rendering of
//! an Alpaca item puts the loss exactly on the answer.

mod common;
use std::path::Path;

use burn::tensor::Device;
use device_runtime::gguf::GgufFile;
use device_runtime::tokenizer::Tokenizer;
use llamanas::finetune::data::{AlpacaItem, Example, render_alpaca};
use llamanas::finetune::train::load_elastic;
use llamanas::finetune::sample::SubnetPlan;
use llamanas::finetune::{LogLine, TrainConfig, TrainInputs, run_training};
use llamanas::space::SearchSpace;

#[test]
fn alpaca_item_renders_with_chatml_and_loss_on_the_answer() {
    let f = GgufFile::open(common::smollm2()).unwrap();
    let tok = Tokenizer::from_gguf(&f).unwrap();
    let item = AlpacaItem { instruction: "Add the numbers.".into(), input: "2 and 3".into(), output: "The sum is 5.".into() };
    let ex = render_alpaca(&tok, &item, 512, "inline", 0).unwrap();
    let text = tok.decode(&ex.tokens, false).unwrap();
    // SmolLM2's ChatML template with its default system prompt (tokenizer.chat_template of the GGUF).
    let expected = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
                    <|im_start|>user\nAdd the numbers.\n\n2 and 3<|im_end|>\n<|im_start|>assistant\nThe sum is 5.<|im_end|>\n";
    assert_eq!(text, expected);
    let answer: Vec<u32> = ex.tokens.iter().zip(&ex.target).filter(|(_, t)| **t).map(|(x, _)| *x).collect();
    assert_eq!(tok.decode(&answer, false).unwrap(), "The sum is 5.<|im_end|>\n");
    // Cut to 20 tokens: only the prompt is left, no target.
    assert_eq!(render_alpaca(&tok, &item, 20, "inline", 0).unwrap().n_targets(), 0);
}

#[test]
fn loss_decreases_on_a_repeated_batch() {
    let path = common::smollm2();
    let f = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&f).unwrap();
    let cfg = device_runtime::arch::ModelConfig::from_gguf(&f).unwrap();
    let text = "Making crepes is an easy and delicious process. Mix the flour and the eggs, add the milk and \
                water, then cook thin layers of batter in a hot pan for about two minutes on each side.";
    let mut tokens = tok.encode(text, false, false).unwrap();
    assert!(tokens.len() >= 32);
    tokens.truncate(32);
    let ex = vec![Example { target: (0..32).map(|i| i > 0).collect(), tokens }];
    let device = Device::flex().autodiff();
    let inputs = TrainInputs {
        template: &f,
        supernet_json: None,
        space: SearchSpace::default_for(&cfg),
        train: &ex,
        pad: 0,
        data_note: serde_json::json!("test"),
    };
    let c = TrainConfig {
        steps: 3,
        batch: 1,
        grad_accum: 1,
        lr: 1e-4,
        min_lr: 1e-4,
        warmup: 0,
        weight_decay: 0.0,
        clip_norm: Some(1.0),
        // The full network alone: a broken sub-network's gradient (norm ~300 at step 1) dominates the clipped
        // sum and can raise the full network's loss on this one batch.
        plan: SubnetPlan { largest: true, smallest: false, random: 0 },
        distill_weight: 0.0,
        seed: 1,
        save_every: 0,
        max_steps_this_run: None,
    };
    let out = tempfile::tempdir().unwrap();
    let load = |p: &Path, d: &Device| load_elastic(p, d);
    let s = run_training(|| load_elastic(&path, &device), &load, &inputs, &c, false, out.path(), &device, false)
        .unwrap();
    assert!(s.finished);
    let log: Vec<LogLine> = std::fs::read_to_string(out.path().join("finetune.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(log.len(), 3);
    let (first, last) = (log[0].losses[0], log[2].losses[0]);
    // A pre-trained model reads English text at a few nats per token; three steps on the same batch must lower it.
    assert!(first > 0.5 && first < 6.0, "first loss {first}");
    assert!(last < first - 0.05, "full network: {first} -> {last}");
    // The output is a loadable F32 super-network GGUF with the same tensors.
    let g = GgufFile::open(out.path().join("supernet.gguf")).unwrap();
    assert_eq!(g.tensors().len(), f.tensors().len());
    assert!(g.tensors().iter().all(|t| t.ty == device_runtime::gguf::GgmlType::F32));
}
