package kvc

// Sampling and generation (ABI 1.2) against the library's own results (the reference's gen.*
// cases, written by kvc_generate in reference.c).

import (
	"encoding/hex"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

// The sampler of the reference's gen.sampled case, on a streaming 4 + 16 session.
var sampledOptions = SamplerOptions{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.02,
	RepetitionPenalty: 1.1, RepetitionLastN: 64, Seed: 1234}

var streaming = &SessionOptions{Policy: "streaming",
	Params: []Param{{"start_size", "4"}, {"recent_size", "16"}}}

func greedy(maxTokens int) *GenerateOptions {
	o := GreedySamplerOptions()
	return &GenerateOptions{MaxTokens: maxTokens, Sampling: &o}
}

// refText is a generated text of the reference (hex of its UTF-8 bytes); ok is false without.
func refText(t *testing.T, r reference, key string) (string, bool) {
	v, ok := r[key]
	if !ok {
		return "", false
	}
	b, err := hex.DecodeString(v)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return string(b), true
}

func generate(t *testing.T, s *Session, prompt []int32, o *GenerateOptions) Generation {
	t.Helper()
	g, err := s.GenerateText(prompt, o)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestGenerateGreedyMatchesLibrary(t *testing.T) {
	r := loadReference(t)
	m := loadModel(t, r)
	s := newSession(t, m, nil)
	defer s.Close()
	var seen []int32
	var pieces strings.Builder
	g, err := s.Generate(r.ids(t, "gen.prompt"), greedy(16), func(id int32, piece string) bool {
		seen = append(seen, id)
		pieces.WriteString(piece)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := r.ids(t, "gen.greedy"); !reflect.DeepEqual(g.Tokens, want) {
		t.Fatalf("greedy tokens %v, library %v", g.Tokens, want)
	}
	if !reflect.DeepEqual(seen, g.Tokens) || pieces.String() != g.Text {
		t.Fatalf("callback saw %v %q, result %v %q", seen, pieces.String(), g.Tokens, g.Text)
	}
	if g.StopReason != StopMaxTokens || g.StopIndex != -1 {
		t.Fatalf("stop %v %d", g.StopReason, g.StopIndex)
	}
	if text, ok := refText(t, r, "gen.greedy.text"); ok && g.Text != text {
		t.Fatalf("text %q, library %q", g.Text, text)
	}
}

func TestGenerateGreedyIsArgmaxOfStepLogits(t *testing.T) {
	r := loadReference(t)
	m := loadModel(t, r)
	prompt := r.ids(t, "gen.prompt")
	s := newSession(t, m, nil)
	defer s.Close()
	g := generate(t, s, prompt, greedy(8))
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	// The ids the tokenizer names: the largest logit among them, the lowest id among equals.
	n := info.VocabSize
	if tok := m.Tokenizer(); tok != nil && tok.VocabSize() < n {
		n = tok.VocabSize()
	}
	gs := GreedySamplerOptions()
	sampler, err := NewSampler(&gs)
	if err != nil {
		t.Fatal(err)
	}
	defer sampler.Close()
	s2 := newSession(t, m, nil)
	defer s2.Close()
	logits, err := s2.Step(prompt, LogitsLast)
	for _, token := range g.Tokens {
		if err != nil {
			t.Fatal(err)
		}
		row := logits[:n]
		best := 0
		for i := range row {
			if row[i] > row[best] {
				best = i
			}
		}
		if int32(best) != token {
			t.Fatalf("generated %d, argmax %d", token, best)
		}
		if got, err := sampler.Sample(row); err != nil || got != token {
			t.Fatalf("greedy sampler %d (%v), generated %d", got, err, token)
		}
		logits, err = s2.Step([]int32{token}, LogitsLast)
	}
}

func TestGenerateSampledMatchesLibraryAndRepeats(t *testing.T) {
	r := loadReference(t)
	m := loadModel(t, r)
	prompt := r.ids(t, "gen.prompt")
	var runs []Generation
	for i := 0; i < 2; i++ {
		s := newSession(t, m, streaming)
		runs = append(runs, generate(t, s, prompt, &GenerateOptions{MaxTokens: 16, Sampling: &sampledOptions}))
		if st, err := s.CacheStats(); err != nil || st.MaxEntriesNow > 20 {
			t.Fatalf("streaming cache %+v (%v)", st, err)
		}
		s.Close()
	}
	if want := r.ids(t, "gen.sampled"); !reflect.DeepEqual(runs[0].Tokens, want) {
		t.Fatalf("sampled tokens %v, library %v", runs[0].Tokens, want)
	}
	if !reflect.DeepEqual(runs[0], runs[1]) {
		t.Fatalf("a fixed seed did not repeat: %v vs %v", runs[0], runs[1])
	}
	if text, ok := refText(t, r, "gen.sampled.text"); ok && runs[0].Text != text {
		t.Fatalf("text %q, library %q", runs[0].Text, text)
	}
	other := sampledOptions
	other.Seed = 99
	s := newSession(t, m, streaming)
	defer s.Close()
	if g := generate(t, s, prompt, &GenerateOptions{MaxTokens: 16, Sampling: &other}); reflect.DeepEqual(g.Tokens, runs[0].Tokens) {
		t.Fatal("another seed gave the same tokens")
	}

	// A sampler of one's own: its stream goes on; a reset repeats it.
	sampler, err := NewSampler(&sampledOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer sampler.Close()
	s1 := newSession(t, m, streaming)
	defer s1.Close()
	a := generate(t, s1, prompt, &GenerateOptions{MaxTokens: 16, Sampler: sampler})
	if err := sampler.Reset(); err != nil {
		t.Fatal(err)
	}
	s2 := newSession(t, m, streaming)
	defer s2.Close()
	b := generate(t, s2, prompt, &GenerateOptions{MaxTokens: 16, Sampler: sampler})
	if !reflect.DeepEqual(a.Tokens, r.ids(t, "gen.sampled")) || !reflect.DeepEqual(a, b) {
		t.Fatalf("own sampler: %v, after reset %v", a.Tokens, b.Tokens)
	}
	_, err = s2.GenerateText(prompt, &GenerateOptions{Sampler: sampler, Sampling: &other})
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Sampler and Sampling together: %v", err)
	}
}

func TestSamplerObject(t *testing.T) {
	flat := make([]float32, 50)
	o := DefaultSamplerOptions()
	if o.Temperature != 1 || o.TopP != 1 || o.RepetitionPenalty != 1 || o.RepetitionLastN != 64 {
		t.Fatalf("defaults %+v", o)
	}
	o.Seed = 7
	s, err := NewSampler(&o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	draw := func() []int32 {
		var out []int32
		for i := 0; i < 12; i++ {
			v, err := s.Sample(flat)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, v)
		}
		return out
	}
	first := draw()
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	if second := draw(); !reflect.DeepEqual(first, second) {
		t.Fatalf("after reset %v, first %v", second, first)
	}
	g := GreedySamplerOptions()
	gs, _ := NewSampler(&g)
	defer gs.Close()
	if v, err := gs.Sample([]float32{0.5, 3, 3, float32(math.NaN())}); err != nil || v != 1 {
		t.Fatalf("greedy %d %v", v, err)
	}
	p := GreedySamplerOptions()
	p.RepetitionPenalty = 4
	ps, _ := NewSampler(&p)
	defer ps.Close()
	if err := ps.Accept([]int32{0}); err != nil {
		t.Fatal(err)
	}
	if v, _ := ps.Sample([]float32{2, 1}); v != 1 {
		t.Fatalf("penalized greedy picked %d", v)
	}
	_, err = gs.Sample([]float32{float32(math.NaN()), float32(math.Inf(-1))})
	var e *Error
	if !errors.As(err, &e) || e.Status != ErrInvalidArgument || e.Call != "kvc_sampler_sample" {
		t.Fatalf("no finite logit: %v", err)
	}
	s.Close()
	if _, err := s.Sample(flat); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("closed sampler: %v", err)
	}
}

func TestGenerateStopSequencesAndTokens(t *testing.T) {
	r := loadReference(t)
	m := loadModel(t, r)
	prompt, want := r.ids(t, "gen.prompt"), r.ids(t, "gen.greedy")
	s := newSession(t, m, nil)
	defer s.Close()
	o := greedy(16)
	o.StopTokens = []int32{-1, want[5]}
	g := generate(t, s, prompt, o)
	first := 0
	for want[first] != want[5] {
		first++
	}
	if !reflect.DeepEqual(g.Tokens, want[:first+1]) || g.StopReason != StopToken || g.StopIndex != 1 {
		t.Fatalf("stop token: %v %v %d", g.Tokens, g.StopReason, g.StopIndex)
	}

	s2 := newSession(t, m, nil)
	defer s2.Close()
	if m.Tokenizer() == nil {
		o := greedy(4)
		o.Stop = []string{"x"}
		_, err := s2.GenerateText(prompt, o)
		var e *Error
		if !errors.As(err, &e) || e.Status != ErrInvalidArgument || !strings.Contains(e.Message, "tokenizer") {
			t.Fatalf("stop sequence without a tokenizer: %v", err)
		}
		t.Skip("stop sequences need the model's tokenizer (models/kjv-mini)")
	}
	full := []rune(generate(t, s2, prompt, greedy(24)).Text)
	// Six characters from a third of the way in: they span token boundaries.
	stop := string(full[len(full)/3 : len(full)/3+6])
	text := string(full)
	expected := text[:strings.Index(text, stop)]
	s3 := newSession(t, m, nil)
	defer s3.Close()
	o = greedy(24)
	o.Stop = []string{"\x01never", stop}
	var pieces strings.Builder
	g, err := s3.Generate(prompt, o, func(_ int32, piece string) bool {
		pieces.WriteString(piece)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if g.Text != expected || pieces.String() != expected {
		t.Fatalf("stop %q: text %q, pieces %q, expected %q", stop, g.Text, pieces.String(), expected)
	}
	if g.StopReason != StopSequence || g.StopIndex != 1 || len(g.Tokens) >= 24 {
		t.Fatalf("stop sequence: %v %d after %d tokens", g.StopReason, g.StopIndex, len(g.Tokens))
	}
}

func TestGenerateCallbackStops(t *testing.T) {
	r := loadReference(t)
	m := loadModel(t, r)
	prompt, want := r.ids(t, "gen.prompt"), r.ids(t, "gen.greedy")
	s := newSession(t, m, nil)
	defer s.Close()
	calls := 0
	g, err := s.Generate(prompt, greedy(16), func(int32, string) bool {
		calls++
		return calls < 4
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 4 || g.StopReason != StopCallback || !reflect.DeepEqual(g.Tokens, want[:4]) {
		t.Fatalf("%d calls, %v, %v", calls, g.StopReason, g.Tokens)
	}
	// The session holds the prompt and the tokens but the last, which continues it.
	if st, _ := s.CacheStats(); st.TokensSeen != int64(len(prompt)+3) {
		t.Fatalf("tokens seen %d", st.TokensSeen)
	}
	if rest := generate(t, s, want[3:4], greedy(12)); !reflect.DeepEqual(rest.Tokens, want[4:]) {
		t.Fatalf("continued %v, expected %v", rest.Tokens, want[4:])
	}

	// A panic in the callback stops the generation and reaches the caller afterwards.
	s2 := newSession(t, m, nil)
	defer s2.Close()
	calls = 0
	func() {
		defer func() {
			if v := recover(); v != "stop here" {
				t.Errorf("recovered %v", v)
			}
		}()
		_, _ = s2.Generate(prompt, greedy(16), func(int32, string) bool {
			calls++
			if calls == 2 {
				panic("stop here")
			}
			return true
		})
		t.Error("Generate returned after a panic")
	}()
	if st, err := s2.CacheStats(); err != nil || calls != 2 || st.TokensSeen != int64(len(prompt)+1) {
		t.Fatalf("after the panic: %d calls, %+v, %v", calls, st, err)
	}
}

func TestGenerateBadValuesAreInvalidArgument(t *testing.T) {
	r := loadReference(t)
	m := loadModel(t, r)
	prompt := r.ids(t, "gen.prompt")
	s := newSession(t, m, nil)
	defer s.Close()
	bad := map[string]func(*SamplerOptions){
		"temperature":        func(o *SamplerOptions) { o.Temperature = -0.5 },
		"top_k":              func(o *SamplerOptions) { o.TopK = -1 },
		"top_p":              func(o *SamplerOptions) { o.TopP = 0 },
		"min_p":              func(o *SamplerOptions) { o.MinP = 1.5 },
		"repetition_penalty": func(o *SamplerOptions) { o.RepetitionPenalty = 0 },
		"repetition_last_n":  func(o *SamplerOptions) { o.RepetitionLastN = -2 },
	}
	for field, set := range bad {
		o := DefaultSamplerOptions()
		set(&o)
		_, err := NewSampler(&o)
		var e *Error
		if !errors.As(err, &e) || e.Status != ErrInvalidArgument || !strings.Contains(e.Message, field) {
			t.Fatalf("%s: NewSampler: %v", field, err)
		}
		_, err = s.GenerateText(prompt, &GenerateOptions{MaxTokens: 4, Sampling: &o})
		if !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("%s: Generate: %v", field, err)
		}
	}
	// The zero SamplerOptions are not the defaults: top_p 0 is refused.
	if _, err := NewSampler(&SamplerOptions{}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("zero options: %v", err)
	}
	_, err := s.GenerateText(prompt, &GenerateOptions{MaxTokens: -1})
	var e *Error
	if !errors.As(err, &e) || e.Status != ErrInvalidArgument || !strings.Contains(e.Message, "max_tokens") {
		t.Fatalf("max_tokens -1: %v", err)
	}
	_, err = s.GenerateText(nil, greedy(4))
	if !errors.As(err, &e) || e.Status != ErrInvalidArgument || e.Call != "kvc_generate" {
		t.Fatalf("empty prompt: %v", err)
	}
	if st, _ := s.CacheStats(); st.TokensSeen != 0 {
		t.Fatalf("something ran: %d tokens seen", st.TokensSeen)
	}
	if StopSequence.String() != "stop_sequence" {
		t.Fatal(StopSequence.String())
	}
}
