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

// ---- Sampling and generation (ABI 1.2) ------------------------------------------------------

use kvc::{GenerateOptions, Sampler, SamplerOptions, StopReason};

/// The sampler of the reference's gen.sampled case (reference.c), on a streaming 4 + 16 session.
fn sampled() -> SamplerOptions {
    SamplerOptions {
        temperature: 0.8,
        top_k: 40,
        top_p: 0.95,
        min_p: 0.02,
        repetition_penalty: 1.1,
        repetition_last_n: 64,
        seed: 1234,
    }
}

fn streaming_options() -> SessionOptions {
    SessionOptions::new()
        .policy("streaming")
        .param("start_size", 4)
        .param("recent_size", 16)
}

fn tokens(n: i32) -> GenerateOptions {
    GenerateOptions {
        max_tokens: n,
        ..GenerateOptions::default()
    }
}

/// A generated text of the reference (hex of its UTF-8 bytes), if the model has a tokenizer.
fn ref_text(r: &Reference, key: &str) -> Option<String> {
    if !r.has(key) {
        return None;
    }
    let hex = r.get(key).as_bytes();
    let bytes: Vec<u8> = hex
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect();
    Some(String::from_utf8(bytes).unwrap())
}

#[test]
fn greedy_generation_matches_library() {
    let r = Reference::load();
    let model = load_model(&r);
    let mut session = model.session(&SessionOptions::new()).unwrap();
    let mut seen = Vec::new();
    let mut pieces = String::new();
    let g = session
        .generate(
            &r.ids("gen.prompt"),
            &SamplerOptions::greedy(),
            &tokens(16),
            |id, piece| {
                seen.push(id);
                pieces.push_str(piece);
                true
            },
        )
        .unwrap();
    assert_eq!(g.tokens, r.ids("gen.greedy"));
    assert_eq!(seen, g.tokens);
    assert_eq!(g.stop_reason, StopReason::MaxTokens);
    assert_eq!(pieces, g.text);
    if let Some(text) = ref_text(&r, "gen.greedy.text") {
        assert_eq!(g.text, text);
    }
    let mut again = model.session(&SessionOptions::new()).unwrap();
    let text = again
        .generate_text(&r.ids("gen.prompt"), &SamplerOptions::greedy(), &tokens(16))
        .unwrap();
    assert_eq!(text, g);
}

#[test]
fn greedy_generation_is_argmax_of_step_logits() {
    let r = Reference::load();
    let model = load_model(&r);
    let prompt = r.ids("gen.prompt");
    let mut session = model.session(&SessionOptions::new()).unwrap();
    let g = session
        .generate_text(&prompt, &SamplerOptions::greedy(), &tokens(8))
        .unwrap();
    // The ids the tokenizer names: the largest logit among them, the lowest id among equals.
    let mut n = model.info().unwrap().vocab_size as usize;
    if let Some(t) = model.tokenizer() {
        n = n.min(t.vocab_size() as usize);
    }
    let mut greedy = Sampler::new(&SamplerOptions::greedy()).unwrap();
    let mut s = model.session(&SessionOptions::new()).unwrap();
    let mut logits = s.step(&prompt, kvc::Logits::Last).unwrap();
    for &token in &g.tokens {
        let row = &logits[..n];
        let mut best = 0;
        for i in 1..n {
            if row[i] > row[best] {
                best = i;
            }
        }
        assert_eq!(best as i32, token);
        assert_eq!(greedy.sample(row).unwrap(), token);
        logits = s.step(&[token], kvc::Logits::Last).unwrap();
    }
}

#[test]
fn sampled_generation_matches_library_and_repeats() {
    let r = Reference::load();
    let model = load_model(&r);
    let prompt = r.ids("gen.prompt");
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut session = model.session(&streaming_options()).unwrap();
        runs.push(
            session
                .generate_text(&prompt, &sampled(), &tokens(16))
                .unwrap(),
        );
        assert!(session.cache_stats().unwrap().max_entries_now <= 20);
    }
    assert_eq!(runs[0].tokens, r.ids("gen.sampled"));
    assert_eq!(runs[0], runs[1]);
    if let Some(text) = ref_text(&r, "gen.sampled.text") {
        assert_eq!(runs[0].text, text);
    }
    let other = SamplerOptions {
        seed: 99,
        ..sampled()
    };
    let mut session = model.session(&streaming_options()).unwrap();
    let g = session.generate_text(&prompt, &other, &tokens(16)).unwrap();
    assert_ne!(g.tokens, runs[0].tokens);

    // A sampler of one's own: its stream goes on; a reset repeats it.
    let mut sampler = Sampler::new(&sampled()).unwrap();
    let mut session = model.session(&streaming_options()).unwrap();
    let g = session
        .generate_with(&prompt, &mut sampler, &tokens(16), |_, _| true)
        .unwrap();
    assert_eq!(g.tokens, r.ids("gen.sampled"));
    sampler.reset().unwrap();
    let mut session = model.session(&streaming_options()).unwrap();
    let again = session
        .generate_with(&prompt, &mut sampler, &tokens(16), |_, _| true)
        .unwrap();
    assert_eq!(again, g);
}

#[test]
fn sampler_object() {
    let flat = vec![0.0f32; 50];
    let mut s = Sampler::new(&SamplerOptions {
        seed: 7,
        ..SamplerOptions::default()
    })
    .unwrap();
    let first: Vec<i32> = (0..12).map(|_| s.sample(&flat).unwrap()).collect();
    assert!(first.iter().any(|&t| t != first[0]));
    s.reset().unwrap();
    let second: Vec<i32> = (0..12).map(|_| s.sample(&flat).unwrap()).collect();
    assert_eq!(first, second);
    let mut greedy = Sampler::new(&SamplerOptions::greedy()).unwrap();
    assert_eq!(greedy.sample(&[0.5, 3.0, 3.0, f32::NAN]).unwrap(), 1);
    let mut penalized = Sampler::new(&SamplerOptions {
        repetition_penalty: 4.0,
        ..SamplerOptions::greedy()
    })
    .unwrap();
    penalized.accept(&[0]).unwrap();
    assert_eq!(penalized.sample(&[2.0, 1.0]).unwrap(), 1);
    let e = greedy.sample(&[f32::NAN, f32::NEG_INFINITY]).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    assert_eq!(e.call(), "kvc_sampler_sample");
    let d = SamplerOptions::default();
    assert_eq!((d.temperature, d.top_k, d.top_p), (1.0, 0, 1.0));
    assert_eq!(GenerateOptions::default().max_tokens, 128);
}

#[test]
fn stop_sequences_and_stop_tokens_stop() {
    let r = Reference::load();
    let model = load_model(&r);
    let prompt = r.ids("gen.prompt");
    let greedy = r.ids("gen.greedy");

    let target = greedy[5];
    let mut session = model.session(&SessionOptions::new()).unwrap();
    let options = GenerateOptions {
        max_tokens: 16,
        stop_tokens: vec![-1, target],
        ..GenerateOptions::default()
    };
    let g = session
        .generate_text(&prompt, &SamplerOptions::greedy(), &options)
        .unwrap();
    let first = greedy.iter().position(|&t| t == target).unwrap();
    assert_eq!(g.tokens, greedy[..=first].to_vec());
    assert_eq!(g.stop_reason, StopReason::Token(1));

    let mut session = model.session(&SessionOptions::new()).unwrap();
    if model.tokenizer().is_none() {
        let options = GenerateOptions {
            max_tokens: 4,
            stop: vec!["x".into()],
            ..GenerateOptions::default()
        };
        let e = session
            .generate_text(&prompt, &SamplerOptions::greedy(), &options)
            .unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
        assert!(e.message().contains("tokenizer"), "{}", e);
        return;
    }
    let full = session
        .generate_text(&prompt, &SamplerOptions::greedy(), &tokens(24))
        .unwrap()
        .text;
    // Six characters from a third of the way in: they span token boundaries.
    let chars: Vec<char> = full.chars().collect();
    let start = chars.len() / 3;
    let stop: String = chars[start..start + 6].iter().collect();
    let want = &full[..full.find(&stop).unwrap()];
    let options = GenerateOptions {
        max_tokens: 24,
        stop: vec!["\u{1}never".into(), stop.clone()],
        ..GenerateOptions::default()
    };
    let mut session = model.session(&SessionOptions::new()).unwrap();
    let mut pieces = String::new();
    let g = session
        .generate(&prompt, &SamplerOptions::greedy(), &options, |_, p| {
            pieces.push_str(p);
            true
        })
        .unwrap();
    assert_eq!(g.text, want);
    assert_eq!(pieces, want);
    assert_eq!(g.stop_reason, StopReason::Sequence(1));
    assert!(g.tokens.len() < 24);
}

#[test]
fn returning_false_stops_generation() {
    let r = Reference::load();
    let model = load_model(&r);
    let prompt = r.ids("gen.prompt");
    let greedy = r.ids("gen.greedy");
    let mut session = model.session(&SessionOptions::new()).unwrap();
    let mut count = 0;
    let g = session
        .generate(&prompt, &SamplerOptions::greedy(), &tokens(16), |_, _| {
            count += 1;
            count < 4
        })
        .unwrap();
    assert_eq!(count, 4);
    assert_eq!(g.stop_reason, StopReason::Callback);
    assert_eq!(g.tokens, greedy[..4].to_vec());
    // The session holds the prompt and the tokens but the last, which continues it.
    let seen = session.cache_stats().unwrap().n_tokens_seen;
    assert_eq!(seen, prompt.len() as i64 + 3);
    let rest = session
        .generate_text(&greedy[3..4], &SamplerOptions::greedy(), &tokens(12))
        .unwrap();
    assert_eq!(rest.tokens, greedy[4..].to_vec());
}

#[test]
fn bad_generation_values_are_invalid_argument() {
    let r = Reference::load();
    let model = load_model(&r);
    let prompt = r.ids("gen.prompt");
    let d = SamplerOptions::default();
    let with = |f: &dyn Fn(&mut SamplerOptions)| {
        let mut o = d;
        f(&mut o);
        o
    };
    let bad = [
        ("temperature", with(&|o| o.temperature = -0.5)),
        ("temperature", with(&|o| o.temperature = f32::INFINITY)),
        ("top_k", with(&|o| o.top_k = -1)),
        ("top_p", with(&|o| o.top_p = 0.0)),
        ("top_p", with(&|o| o.top_p = 1.5)),
        ("min_p", with(&|o| o.min_p = -0.1)),
        ("min_p", with(&|o| o.min_p = 1.5)),
        ("repetition_penalty", with(&|o| o.repetition_penalty = 0.0)),
        ("repetition_last_n", with(&|o| o.repetition_last_n = -2)),
    ];
    let mut session = model.session(&SessionOptions::new()).unwrap();
    for (field, options) in bad.iter() {
        let e = Sampler::new(options).err().expect(field);
        assert_eq!(e.status(), Status::InvalidArgument, "{}", field);
        assert!(e.message().contains(field), "{}: {}", field, e);
        let e = session
            .generate_text(&prompt, options, &tokens(4))
            .unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument, "{}", field);
        assert_eq!(e.call(), "kvc_sampler_create");
    }
    let e = session.generate_text(&prompt, &d, &tokens(-1)).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    assert!(e.message().contains("max_tokens"), "{}", e);
    let e = session.generate_text(&[], &d, &tokens(4)).unwrap_err();
    assert_eq!(
        (e.status(), e.call()),
        (Status::InvalidArgument, "kvc_generate")
    );
    let options = GenerateOptions {
        stop: vec!["a\0b".into()],
        ..GenerateOptions::default()
    };
    assert!(session.generate_text(&prompt, &d, &options).is_err());
    assert_eq!(session.cache_stats().unwrap().n_tokens_seen, 0); // nothing ran
}

#[test]
fn a_panic_in_the_callback_is_resumed_after_the_call() {
    let r = Reference::load();
    let model = load_model(&r);
    let prompt = r.ids("gen.prompt");
    let mut session = model.session(&SessionOptions::new()).unwrap();
    let mut calls = 0;
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        session.generate(&prompt, &SamplerOptions::greedy(), &tokens(16), |_, _| {
            calls += 1;
            if calls == 2 {
                panic!("stop here");
            }
            true
        })
    }));
    let payload = caught.err().expect("the panic reaches the caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"stop here"));
    assert_eq!(calls, 2);
    // The generation stopped at the second token; the session is usable.
    assert_eq!(
        session.cache_stats().unwrap().n_tokens_seen,
        prompt.len() as i64 + 1
    );
}
