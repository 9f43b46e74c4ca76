package kvc

// Tests against the library's own results: KVC_TEST_REFERENCE names the file written by
// kvc-bindings-reference (CTest writes it first; see docs/bindings.md).

import (
	"bufio"
	"errors"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Same library, same inputs: only the float text round trip may differ.
const nllTolerance = 1e-6

type reference map[string]string

func loadReference(t *testing.T) reference {
	t.Helper()
	path := os.Getenv("KVC_TEST_REFERENCE")
	if path == "" {
		t.Fatal("KVC_TEST_REFERENCE is not set: run through ctest, or see docs/bindings.md")
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ref := reference{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		key, rest, _ := strings.Cut(sc.Text(), " ")
		ref[key] = rest
	}
	if ref["kvc-bindings-reference"] != "1" {
		t.Fatalf("%s: unknown reference format", path)
	}
	return ref
}

func (r reference) ids(t *testing.T, key string) []int32 {
	var out []int32
	for _, f := range strings.Fields(r[key]) {
		v, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		out = append(out, int32(v))
	}
	return out
}

func (r reference) floats(t *testing.T, key string) []float64 {
	var out []float64
	for _, f := range strings.Fields(r[key]) {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		out = append(out, v)
	}
	return out
}

func assertClose(t *testing.T, got []float32, want []float64, what string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, expected %d", what, len(got), len(want))
	}
	worst := 0.0
	for i := range got {
		worst = math.Max(worst, math.Abs(float64(got[i])-want[i]))
	}
	if worst > nllTolerance {
		t.Fatalf("%s: max |diff| %g > %g", what, worst, nllTolerance)
	}
}

func loadModel(t *testing.T, r reference) *Model {
	t.Helper()
	m, err := LoadModel(r["model"], &ModelOptions{Backend: BackendCPU})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return m
}

func newSession(t *testing.T, m *Model, o *SessionOptions) *Session {
	t.Helper()
	s, err := m.NewSession(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVersions(t *testing.T) {
	if major, _ := AbiVersion(); major != AbiMajor {
		t.Fatalf("ABI major %d, expected %d", major, AbiMajor)
	}
	if Version() == "" {
		t.Fatal("empty version")
	}
}

func TestBaselineMatchesLibrary(t *testing.T) {
	r := loadReference(t)
	m := loadModel(t, r)
	s := newSession(t, m, nil)
	defer s.Close()
	nll, err := s.Score(r.ids(t, "ids"))
	if err != nil {
		t.Fatal(err)
	}
	assertClose(t, nll, r.floats(t, "nll.baseline"), "baseline NLLs")

	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	prefill, err := s.ScoreMode(r.ids(t, "ids"), ScorePrefill)
	if err != nil {
		t.Fatal(err)
	}
	for i := range prefill { // batched: equal up to float32 summation order
		if d := math.Abs(float64(prefill[i] - nll[i])); d > 1e-4 {
			t.Fatalf("prefill vs stream at %d: %g", i, d)
		}
	}
}

func TestStreamingMatchesLibrary(t *testing.T) {
	r := loadReference(t)
	m := loadModel(t, r)
	s := newSession(t, m, &SessionOptions{Policy: "streaming",
		Params: []Param{{"start_size", "4"}, {"recent_size", "16"}}, Positions: PositionsShift})
	defer s.Close()
	nll, err := s.Score(r.ids(t, "ids"))
	if err != nil {
		t.Fatal(err)
	}
	assertClose(t, nll, r.floats(t, "nll.streaming"), "streaming NLLs")
	st, err := s.CacheStats()
	if err != nil {
		t.Fatal(err)
	}
	got := []int32{int32(st.TotalEntries), int32(st.MaxEntriesNow), int32(st.Evictions), int32(st.TokensSeen)}
	want := r.ids(t, "stats.streaming")
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("cache stats %v, library %v", got, want)
		}
	}
	if st.MaxEntriesNow > 20 || st.Evictions == 0 {
		t.Fatalf("streaming 4+16 did not bound the cache: %+v", st)
	}
}

func TestStepLogitsAgreeWithScore(t *testing.T) {
	r := loadReference(t)
	m := loadModel(t, r)
	s := newSession(t, m, nil)
	defer s.Close()
	ids := r.ids(t, "ids")
	logits, err := s.Step(ids[:2], LogitsLast)
	if err != nil {
		t.Fatal(err)
	}
	mx := math.Inf(-1)
	for _, x := range logits {
		mx = math.Max(mx, float64(x))
	}
	sum := 0.0
	for _, x := range logits {
		sum += math.Exp(float64(x) - mx)
	}
	nll1 := mx + math.Log(sum) - float64(logits[ids[2]])
	if d := math.Abs(nll1 - r.floats(t, "nll.baseline")[1]); d > 1e-4 {
		t.Fatalf("NLL from logits differs by %g", d)
	}
}

func TestTokenizerAndTextMatchLibrary(t *testing.T) {
	r := loadReference(t)
	m := loadModel(t, r)
	if r["tokenizer"] == "none" {
		t.Skip("no tokenizer in the reference")
	}
	body, err := os.ReadFile(r["text"])
	if err != nil {
		t.Fatal(err)
	}
	tok := m.Tokenizer()
	if r["tokenizer"] != "model" {
		if tok, err = LoadTokenizer(r["tokenizer"]); err != nil {
			t.Fatal(err)
		}
		defer tok.Close()
	}
	ids, err := tok.Encode(string(body))
	if err != nil {
		t.Fatal(err)
	}
	want := r.ids(t, "text.ids")
	if len(ids) != len(want) {
		t.Fatalf("%d ids, library %d", len(ids), len(want))
	}
	for i := range want {
		if ids[i] != want[i] {
			t.Fatalf("id %d: %d, library %d", i, ids[i], want[i])
		}
	}
	if back, err := tok.Decode(ids); err != nil || back != string(body) {
		t.Fatalf("decode: %q, %v", back, err)
	}
	if r["tokenizer"] == "model" {
		s := newSession(t, m, nil)
		defer s.Close()
		nll, err := s.Score(ids)
		if err != nil {
			t.Fatal(err)
		}
		assertClose(t, nll, r.floats(t, "nll.text"), "text NLLs")
	}
}

func TestBadModelPath(t *testing.T) {
	_, err := LoadModel("/nonexistent/kvc-model-dir", nil)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("expected *kvc.Error, got %v", err)
	}
	if !errors.Is(err, ErrIO) && !errors.Is(err, ErrNotFound) {
		t.Fatalf("status %v", e.Status)
	}
	if !strings.Contains(e.Message, "/nonexistent/kvc-model-dir") || e.Call != "kvc_model_load" {
		t.Fatalf("message does not name the path: %v", err)
	}
}

func TestUnknownPolicy(t *testing.T) {
	r := loadReference(t)
	m := loadModel(t, r)
	_, err := m.NewSession(&SessionOptions{Policy: "no_such_policy"})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no_such_policy") {
		t.Fatalf("expected a NOT_FOUND error naming the policy, got %v", err)
	}
	if err := CheckPolicy("streaming", []Param{{"start_size", "-5"}}, ""); err == nil {
		t.Fatal("a negative start_size was accepted")
	}
}

func TestCloseOrder(t *testing.T) {
	r := loadReference(t)
	m, err := LoadModel(r["model"], &ModelOptions{Backend: BackendCPU})
	if err != nil {
		t.Fatal(err)
	}
	s := newSession(t, m, nil)
	if err := m.Close(); err == nil {
		t.Fatal("closing a model with an open session succeeded")
	}
	s.Close()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
}

func TestListPolicies(t *testing.T) {
	policies, err := ListPolicies("")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range policies {
		if p.Name == "streaming" {
			return
		}
	}
	t.Fatalf("streaming not listed: %+v", policies)
}

func TestTypedParamsBlockScoringAndReports(t *testing.T) {
	r := loadReference(t)
	m := loadModel(t, r)
	ids := r.ids(t, "ids")
	pp, err := NewPolicyParams("streaming", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := pp.SetInt("start_size", 4); err != nil {
		t.Fatal(err)
	}
	if err := pp.SetText("recent_size", "16"); err != nil {
		t.Fatal(err)
	}
	if err := pp.SetInt("start_size", 8); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("a second set: %v", err)
	}
	if pp.Policy().Name != "streaming" {
		t.Fatal(pp.Policy().Name)
	}
	s := newSession(t, m, &SessionOptions{PolicyParams: pp})
	defer s.Close()
	pp.Close() // the session keeps its own copy
	nll, err := s.ScoreWith(ids, ScoreOptions{BlockSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	assertClose(t, nll, r.floats(t, "nll.streaming"), "typed streaming, block 8")
	if rep, err := s.ScoreReport(); err != nil || (rep.Path != "block" && rep.Path != "token") {
		t.Fatalf("score report %+v, %v", rep, err)
	}
	if js, err := s.PolicyReport(); err != nil || !strings.Contains(js, "streaming") {
		t.Fatalf("policy report %q, %v", js, err)
	}
	if _, err := s.CacheScores(0, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("cache scores of streaming: %v", err)
	}
	if pos, tok, err := s.CacheEntries(0, 0); err != nil || len(pos) != len(tok) || len(pos) == 0 {
		t.Fatalf("cache entries %v %v %v", pos, tok, err)
	}

	// Two calls with NextToken give the NLLs of one.
	b := newSession(t, m, nil)
	defer b.Close()
	next := ids[10]
	head, err := b.ScoreWith(ids[:10], ScoreOptions{NextToken: &next})
	if err != nil || len(head) != 10 {
		t.Fatalf("head %d, %v", len(head), err)
	}
	tail, err := b.Score(ids[10:])
	if err != nil {
		t.Fatal(err)
	}
	assertClose(t, append(head, tail...), r.floats(t, "nll.baseline"), "scored in two calls")
}
