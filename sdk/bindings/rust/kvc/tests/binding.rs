//! Tests of the Rust binding against the library's own results: KVC_TEST_REFERENCE names the
//! file written by kvc-bindings-reference (CTest writes it first; see docs/bindings.md).
use std::collections::HashMap;
use std::fs;

use kvc::{Backend, Model, ModelOptions, Positions, ScoreMode, SessionOptions, Status};

/// Same library, same inputs: only the float text round trip may differ.
const NLL_TOLERANCE: f64 = 1e-6;

struct Reference(HashMap<String, String>);

impl Reference {
    fn load() -> Reference {
        let path = std::env::var("KVC_TEST_REFERENCE")
            .expect("KVC_TEST_REFERENCE is not set: run through ctest, or see docs/bindings.md");
        let body = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {}", path, e));
        let mut map = HashMap::new();
        for line in body.lines() {
            let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
            map.insert(key.to_string(), rest.to_string());
        }
        assert_eq!(
            map.get("kvc-bindings-reference").map(String::as_str),
            Some("1"),
            "{}",
            path
        );
        Reference(map)
    }
    fn get(&self, key: &str) -> &str {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("reference has no '{}'", key))
    }
    fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }
    fn ints(&self, key: &str) -> Vec<i64> {
        self.get(key)
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect()
    }
    fn ids(&self, key: &str) -> Vec<i32> {
        self.ints(key).into_iter().map(|x| x as i32).collect()
    }
    fn floats(&self, key: &str) -> Vec<f64> {
        self.get(key)
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect()
    }
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{}: length", what);
    let worst = got
        .iter()
        .zip(want)
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= NLL_TOLERANCE,
        "{}: max |diff| {:e} > {:e}",
        what,
        worst,
        NLL_TOLERANCE
    );
}

fn load_model(r: &Reference) -> Model {
    let options = ModelOptions {
        backend: Backend::Cpu,
        ..ModelOptions::default()
    };
    Model::load(r.get("model"), &options).expect("the reference model loads")
}

#[test]
fn versions() {
    assert_eq!(kvc::abi_version().0, kvc::sys::KVC_ABI_VERSION_MAJOR);
    assert!(!kvc::version().is_empty());
}

#[test]
fn baseline_nll_matches_library() {
    let r = Reference::load();
    let model = load_model(&r);
    let info = model.info().unwrap();
    assert_eq!(info.backend, Backend::Cpu);
    let mut session = model.session(&SessionOptions::new()).unwrap();
    let nll = session.score(&r.ids("ids")).unwrap();
    assert_close(&nll, &r.floats("nll.baseline"), "baseline NLLs");

    // Reset, then the same text again, batched: equal up to float32 summation order.
    session.reset().unwrap();
    assert_eq!(session.cache_stats().unwrap().n_tokens_seen, 0);
    let prefill = session
        .score_with(&r.ids("ids"), ScoreMode::Prefill)
        .unwrap();
    let worst = prefill
        .iter()
        .zip(&nll)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "prefill vs stream: {}", worst);
}

#[test]
fn streaming_session_matches_library() {
    let r = Reference::load();
    let model = load_model(&r);
    let options = SessionOptions::new()
        .policy("streaming")
        .param("start_size", 4)
        .param("recent_size", 16)
        .positions(Positions::Shift);
    let mut session = model.session(&options).unwrap();
    let nll = session.score(&r.ids("ids")).unwrap();
    assert_close(&nll, &r.floats("nll.streaming"), "streaming NLLs");
    let s = session.cache_stats().unwrap();
    assert_eq!(
        vec![
            s.total_entries,
            s.max_entries_now,
            s.n_evictions,
            s.n_tokens_seen
        ],
        r.ints("stats.streaming")
    );
    assert!(s.max_entries_now <= 20 && s.n_evictions > 0);
    let counts = session.cache_counts().unwrap();
    assert_eq!(counts.iter().sum::<i64>(), s.total_entries);
}

#[test]
fn step_logits_agree_with_score() {
    let r = Reference::load();
    let model = load_model(&r);
    let ids = r.ids("ids");
    let mut session = model.session(&SessionOptions::new()).unwrap();
    let logits = session.step(&ids[..2], kvc::Logits::Last).unwrap();
    assert_eq!(logits.len(), model.info().unwrap().vocab_size as usize);
    let max = logits.iter().cloned().fold(f32::MIN, f32::max) as f64;
    let lse = max
        + logits
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    let nll1 = lse - logits[ids[2] as usize] as f64;
    assert!(
        (nll1 - r.floats("nll.baseline")[1]).abs() < 1e-4,
        "{}",
        nll1
    );
}

#[test]
fn tokenizer_and_text_match_library() {
    let r = Reference::load();
    let model = load_model(&r);
    let text = fs::read_to_string(r.get("text")).unwrap();
    let check = |tok: &kvc::Tokenizer| {
        let ids = tok.encode(&text).unwrap();
        assert_eq!(ids, r.ids("text.ids"));
        assert_eq!(tok.decode(&ids).unwrap(), text);
        ids
    };
    match r.get("tokenizer") {
        "none" => eprintln!("skipped: no tokenizer in the reference"),
        "model" => {
            let ids = check(&model.tokenizer().expect("the model's tokenizer"));
            let mut session = model.session(&SessionOptions::new()).unwrap();
            assert_close(
                &session.score(&ids).unwrap(),
                &r.floats("nll.text"),
                "text NLLs",
            );
        }
        path => {
            assert!(!r.has("nll.text"));
            check(&kvc::Tokenizer::load(path).unwrap());
        }
    }
}

#[test]
fn bad_model_path_is_an_error_with_the_library_message() {
    let err = Model::load("/nonexistent/kvc-model-dir", &ModelOptions::default())
        .err()
        .expect("loading a missing folder fails");
    assert!(
        matches!(err.status(), Status::Io | Status::NotFound),
        "{:?}",
        err
    );
    assert!(
        err.message().contains("/nonexistent/kvc-model-dir"),
        "{}",
        err
    );
    assert_eq!(err.call(), "kvc_model_load");
    assert!(err.to_string().contains(err.message()));
}

#[test]
fn unknown_policy_is_an_error_with_the_library_message() {
    let r = Reference::load();
    let model = load_model(&r);
    let err = model
        .session(&SessionOptions::new().policy("no_such_policy"))
        .err()
        .expect("an unknown policy fails");
    assert_eq!(err.status(), Status::NotFound, "{}", err);
    assert!(err.message().contains("no_such_policy"), "{}", err);

    let err = kvc::check_policy("streaming", &[("start_size", "-5")], None).unwrap_err();
    assert!(!err.message().is_empty());
}

#[test]
fn bad_token_is_an_error() {
    let r = Reference::load();
    let model = load_model(&r);
    let vocab = model.info().unwrap().vocab_size;
    let mut session = model.session(&SessionOptions::new()).unwrap();
    let err = session.score(&[0, vocab + 5]).unwrap_err();
    assert!(
        matches!(err.status(), Status::OutOfRange | Status::InvalidArgument),
        "{}",
        err
    );
}

#[test]
fn policies_are_listed() {
    let policies = kvc::list_policies(None).unwrap();
    let streaming = policies
        .iter()
        .find(|p| p.name == "streaming")
        .expect("streaming listed");
    assert!(streaming.params.iter().any(|p| p.name == "recent_size"));
}

#[test]
fn typed_params_block_scoring_and_reports() {
    let r = Reference::load();
    let model = load_model(&r);
    let ids = r.ids("ids");
    let mut params = kvc::PolicyParams::new("streaming", None).unwrap();
    params.set_int("start_size", 4).unwrap();
    params.set_text("recent_size", "16").unwrap();
    assert_eq!(params.policy().name, "streaming");
    assert_eq!(
        params.get("recent_size").unwrap(),
        (kvc::ParamValue::Int(16), true)
    );
    assert!(
        params.set_int("start_size", 8).is_err(),
        "a second set is an error"
    );
    params.check().unwrap();
    let mut session = model
        .session_with_params(&params, &SessionOptions::new())
        .unwrap();
    drop(params); // the session keeps its own copy
    let opts = kvc::ScoreOptions {
        block_size: 8,
        ..kvc::ScoreOptions::default()
    };
    let nll = session.score_opts(&ids, &opts).unwrap();
    assert_close(&nll, &r.floats("nll.streaming"), "typed streaming, block 8");
    let report = session.score_report().unwrap();
    assert!(
        report.path == "block" || report.path == "token",
        "{:?}",
        report
    );
    assert!(session.policy_report().unwrap().contains("streaming"));
    let err = session.cache_scores(0, 0).unwrap_err();
    assert_eq!(err.status(), Status::NotFound);
    let (positions, tokens) = session.cache_entries(0, 0).unwrap();
    assert_eq!(positions.len(), tokens.len());

    // Two calls with next_token give the NLLs of one.
    let mut session = model.session(&SessionOptions::new()).unwrap();
    let head = session
        .score_opts(
            &ids[..10],
            &kvc::ScoreOptions {
                next_token: Some(ids[10]),
                ..kvc::ScoreOptions::default()
            },
        )
        .unwrap();
    assert_eq!(head.len(), 10);
    let tail = session.score(&ids[10..]).unwrap();
    let all: Vec<f32> = head.into_iter().chain(tail).collect();
    assert_close(&all, &r.floats("nll.baseline"), "scored in two calls");
}
