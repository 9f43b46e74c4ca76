// Package kvc is a Go binding of libkvc's C ABI (kvc/kvc.h): GPT-NeoX (Pythia) inference with
// KV-cache eviction policies.
//
//	model, err := kvc.LoadModel("models/kjv-mini", nil)
//	if err != nil { ... }
//	defer model.Close()
//	ids, err := model.Tokenizer().Encode("In the beginning")
//	session, err := model.NewSession(&kvc.SessionOptions{Policy: "streaming",
//		Params: []kvc.Param{{"start_size", "4"}, {"recent_size", "252"}}})
//	defer session.Close()
//	nll, err := session.Score(ids)
//
// Failures are *Error values carrying the status and the library's message; errors.Is(err,
// kvc.ErrNotFound) tests the status. Close every session before its model.
//
// Building: cgo asks pkg-config for kvc (kvc.pc, installed with kvc under <libdir>/pkgconfig;
// set PKG_CONFIG_PATH for another prefix, or <build>/pkgconfig for a build tree, whose kvc.pc
// also puts the build's lib/ in the RUNPATH). The import path and the go.mod lines for using
// it from another module are in docs/bindings.md.
package kvc

/*
#cgo pkg-config: kvc
#include <stdlib.h>
#include <kvc/kvc.h>
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// AbiMajor is the KVC_ABI_VERSION_MAJOR this package was written against.
const AbiMajor = 1

// Status is a kvc_status other than KVC_OK. It is also an error, so that errors.Is(err,
// kvc.ErrNotFound) matches any *Error with that status.
type Status int

const (
	ErrInvalidArgument Status = C.KVC_ERR_INVALID_ARGUMENT
	ErrIO              Status = C.KVC_ERR_IO
	ErrFormat          Status = C.KVC_ERR_FORMAT
	ErrUnsupported     Status = C.KVC_ERR_UNSUPPORTED
	ErrNotFound        Status = C.KVC_ERR_NOT_FOUND
	ErrOutOfRange      Status = C.KVC_ERR_OUT_OF_RANGE
	ErrBufferTooSmall  Status = C.KVC_ERR_BUFFER_TOO_SMALL
	ErrPolicy          Status = C.KVC_ERR_POLICY
	ErrBackend         Status = C.KVC_ERR_BACKEND
	ErrOutOfMemory     Status = C.KVC_ERR_OUT_OF_MEMORY
	ErrInternal        Status = C.KVC_ERR_INTERNAL
)

// String is the stable name, e.g. "KVC_ERR_NOT_FOUND".
func (s Status) String() string { return C.GoString(C.kvc_status_name(C.kvc_status(s))) }

func (s Status) Error() string { return s.String() }

// Error is a failed libkvc call.
type Error struct {
	Status  Status
	Message string // the library's message: names the file, value or name involved
	Call    string // the C function, e.g. "kvc_model_load"
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s: %s", e.Call, e.Status, e.Message) }

// Is makes errors.Is(err, kvc.ErrNotFound) work.
func (e *Error) Is(target error) bool {
	s, ok := target.(Status)
	return ok && s == e.Status
}

// call runs one C call and reads the thread's message on the same OS thread (kvc_last_error is
// per thread, and a goroutine may otherwise move between the two cgo calls).
func call(name string, f func() C.kvc_status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	st := f()
	if st == C.KVC_OK {
		return nil
	}
	return &Error{Status: Status(st), Message: C.GoString(C.kvc_last_error()), Call: name}
}

// sized runs a call with the buffer protocol: a sizing call (BUFFER_TOO_SMALL is fine) first.
func sized(name string, f func() C.kvc_status) error {
	err := call(name, f)
	if e, ok := err.(*Error); ok && e.Status == ErrBufferTooSmall {
		return nil
	}
	return err
}

// Version is the library's version text, e.g. "0.2.0".
func Version() string { return C.GoString(C.kvc_version_string()) }

// AbiVersion is the (major, minor) ABI version of the loaded library.
func AbiVersion() (major, minor int) {
	v := uint32(C.kvc_abi_version())
	return int(v >> 16), int(v & 0xffff)
}

func cstr(s string) *C.char {
	if s == "" {
		return nil
	}
	return C.CString(s)
}

func int32Ptr(ids []int32) *C.int32_t {
	if len(ids) == 0 {
		return nil
	}
	return (*C.int32_t)(unsafe.Pointer(&ids[0]))
}

func floatPtr(v []float32) *C.float {
	if len(v) == 0 {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&v[0]))
}

// ---- Tokenizer --------------------------------------------------------------------------------

// Tokenizer is a byte-level BPE tokenizer, loaded from a file or owned by a Model.
type Tokenizer struct {
	p     *C.kvc_tokenizer
	owned bool
	model *Model // keeps the owning model alive
}

// LoadTokenizer loads a tokenizer.json. Close it when done.
func LoadTokenizer(path string) (*Tokenizer, error) {
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	var p *C.kvc_tokenizer
	if err := call("kvc_tokenizer_load", func() C.kvc_status { return C.kvc_tokenizer_load(cp, &p) }); err != nil {
		return nil, err
	}
	t := &Tokenizer{p: p, owned: true}
	runtime.SetFinalizer(t, (*Tokenizer).Close)
	return t, nil
}

// Close frees a loaded tokenizer (a model's tokenizer is freed with the model). Idempotent.
func (t *Tokenizer) Close() error {
	if t.owned && t.p != nil {
		C.kvc_tokenizer_free(t.p)
	}
	t.p = nil
	runtime.SetFinalizer(t, nil)
	return nil
}

// Encode tokenizes UTF-8 text (no special tokens are added).
func (t *Tokenizer) Encode(text string) ([]int32, error) {
	b := []byte(text)
	var ptr *C.char
	if len(b) > 0 {
		ptr = (*C.char)(unsafe.Pointer(&b[0]))
	}
	var n C.size_t
	if err := sized("kvc_tokenize", func() C.kvc_status {
		return C.kvc_tokenize(t.p, ptr, C.size_t(len(b)), nil, 0, &n)
	}); err != nil {
		return nil, err
	}
	ids := make([]int32, int(n))
	err := call("kvc_tokenize", func() C.kvc_status {
		return C.kvc_tokenize(t.p, ptr, C.size_t(len(b)), int32Ptr(ids), n, &n)
	})
	runtime.KeepAlive(b)
	if err != nil {
		return nil, err
	}
	return ids[:int(n)], nil
}

// Decode turns ids back into text.
func (t *Tokenizer) Decode(ids []int32) (string, error) {
	var n C.size_t
	if err := sized("kvc_detokenize", func() C.kvc_status {
		return C.kvc_detokenize(t.p, int32Ptr(ids), C.size_t(len(ids)), nil, 0, &n)
	}); err != nil {
		return "", err
	}
	buf := make([]byte, int(n)+1)
	if err := call("kvc_detokenize", func() C.kvc_status {
		return C.kvc_detokenize(t.p, int32Ptr(ids), C.size_t(len(ids)),
			(*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &n)
	}); err != nil {
		return "", err
	}
	return string(buf[:int(n)]), nil
}

// VocabSize is the highest id the tokenizer produces, plus one.
func (t *Tokenizer) VocabSize() int { return int(C.kvc_tokenizer_vocab_size(t.p)) }

// ---- Model ------------------------------------------------------------------------------------

type Backend int

const (
	BackendAuto Backend = C.KVC_BACKEND_AUTO
	BackendCPU  Backend = C.KVC_BACKEND_CPU
	BackendCUDA Backend = C.KVC_BACKEND_CUDA
)

type Dtype int

const (
	DtypeAuto Dtype = C.KVC_DTYPE_AUTO
	DtypeF32  Dtype = C.KVC_DTYPE_F32
	DtypeBF16 Dtype = C.KVC_DTYPE_BF16
	DtypeF16  Dtype = C.KVC_DTYPE_F16
)

// ModelOptions selects how a model is loaded; the zero value is the library's defaults.
type ModelOptions struct {
	Backend Backend
	Dtype   Dtype
	Threads int // CPU worker threads; 0 = one per core
	Device  int
	Seed    uint64 // weights of "synthetic:" models
}

type ModelInfo struct {
	Layers, Heads, HeadDim, HiddenSize, IntermediateSize, VocabSize int
	MaxPositionEmbeddings, RotaryDims                               int
	RotaryBase, LayerNormEps                                        float32
	ParallelResidual                                                bool
	Backend                                                         Backend
	Dtype                                                           Dtype
	Threads                                                         int
	WeightBytes                                                     uint64
}

// Model is a loaded model. Immutable after load: safe for concurrent use.
type Model struct {
	p        *C.kvc_model
	sessions int64 // open sessions; Close refuses while any is open
}

// LoadModel loads a Hugging Face folder or a "synthetic:pythia-70m"-style name. options may
// be nil.
func LoadModel(path string, options *ModelOptions) (*Model, error) {
	var o C.kvc_model_options
	C.kvc_model_options_init_size(&o, C.size_t(unsafe.Sizeof(o)))
	if options != nil {
		o.backend = C.kvc_backend(options.Backend)
		o.weight_dtype = C.kvc_dtype(options.Dtype)
		o.n_threads = C.int32_t(options.Threads)
		o.device = C.int32_t(options.Device)
		o.seed = C.uint64_t(options.Seed)
	}
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	var p *C.kvc_model
	if err := call("kvc_model_load", func() C.kvc_status { return C.kvc_model_load(cp, &o, &p) }); err != nil {
		return nil, err
	}
	m := &Model{p: p}
	runtime.SetFinalizer(m, (*Model).Close)
	return m, nil
}

// Close frees the model. Every session must be closed first. Idempotent.
func (m *Model) Close() error {
	if m.p == nil {
		return nil
	}
	if n := atomic.LoadInt64(&m.sessions); n > 0 {
		return fmt.Errorf("kvc: Model.Close: %d session(s) of this model are still open", n)
	}
	C.kvc_model_free(m.p)
	m.p = nil
	runtime.SetFinalizer(m, nil)
	return nil
}

func (m *Model) Info() (ModelInfo, error) {
	var i C.kvc_model_info
	C.kvc_model_info_init_size(&i, C.size_t(unsafe.Sizeof(i)))
	if err := call("kvc_model_get_info", func() C.kvc_status { return C.kvc_model_get_info(m.p, &i) }); err != nil {
		return ModelInfo{}, err
	}
	return ModelInfo{
		Layers: int(i.n_layers), Heads: int(i.n_heads), HeadDim: int(i.head_dim),
		HiddenSize: int(i.hidden_size), IntermediateSize: int(i.intermediate_size),
		VocabSize: int(i.vocab_size), MaxPositionEmbeddings: int(i.max_position_embeddings),
		RotaryDims: int(i.rotary_ndims), RotaryBase: float32(i.rotary_base),
		LayerNormEps: float32(i.layer_norm_eps), ParallelResidual: i.use_parallel_residual != 0,
		Backend: Backend(i.backend), Dtype: Dtype(i.weight_dtype), Threads: int(i.n_threads),
		WeightBytes: uint64(i.weight_bytes),
	}, nil
}

// Tokenizer is the folder's tokenizer.json, or nil. Owned by the model.
func (m *Model) Tokenizer() *Tokenizer {
	p := C.kvc_model_tokenizer(m.p)
	if p == nil {
		return nil
	}
	return &Tokenizer{p: (*C.kvc_tokenizer)(unsafe.Pointer(p)), model: m}
}

// ---- Session ----------------------------------------------------------------------------------

type Positions int

const (
	PositionsShift    Positions = C.KVC_POSITIONS_SHIFT
	PositionsOriginal Positions = C.KVC_POSITIONS_ORIGINAL
)

// Param is one policy parameter in the kvc_param text syntax ("128", "0.5", "true", "0,1,2").
type Param struct{ Name, Value string }

// SessionOptions configures a session; the zero value is the full cache.
type SessionOptions struct {
	Policy     string // "streaming", "h2o", ... or a path to a plugin .so; "" = full cache
	Params     []Param
	Positions  Positions
	MaxEntries int64  // hard limit per (layer, head); 0 = none
	PolicyPath string // extra ':'-separated plugin folders
	// A policy with typed values; replaces Policy, Params and PolicyPath (which must then be
	// empty). The session keeps its own copy: the PolicyParams may be closed afterwards.
	PolicyParams *PolicyParams
}

// Session is one sequence with its KV cache and policy. Not safe for concurrent use.
type Session struct {
	p     *C.kvc_session
	model *Model
	vocab int
}

// paramArray copies params into C memory (the options struct passed to C may hold only C
// pointers). free releases it.
func paramArray(params []Param) (arr *C.kvc_param, free func()) {
	if len(params) == 0 {
		return nil, func() {}
	}
	size := C.size_t(unsafe.Sizeof(C.kvc_param{})) * C.size_t(len(params))
	arr = (*C.kvc_param)(C.malloc(size))
	items := unsafe.Slice(arr, len(params))
	for i, p := range params {
		items[i].name = C.CString(p.Name)
		items[i].value = C.CString(p.Value)
	}
	return arr, func() {
		for i := range items {
			C.free(unsafe.Pointer(items[i].name))
			C.free(unsafe.Pointer(items[i].value))
		}
		C.free(unsafe.Pointer(arr))
	}
}

// NewSession creates a session; options may be nil.
func (m *Model) NewSession(options *SessionOptions) (*Session, error) {
	if options == nil {
		options = &SessionOptions{}
	}
	info, err := m.Info()
	if err != nil {
		return nil, err
	}
	var o C.kvc_session_options
	C.kvc_session_options_init_size(&o, C.size_t(unsafe.Sizeof(o)))
	if options.PolicyParams != nil {
		if options.Policy != "" || len(options.Params) > 0 || options.PolicyPath != "" {
			return nil, &Error{Status: ErrInvalidArgument, Call: "kvc_session_create",
				Message: "with PolicyParams, Policy, Params and PolicyPath must be empty"}
		}
		if options.PolicyParams.p == nil {
			return nil, &Error{Status: ErrInvalidArgument, Call: "kvc_session_create",
				Message: "the PolicyParams are closed"}
		}
		o.policy_params = options.PolicyParams.p
	}
	o.policy = cstr(options.Policy)
	defer C.free(unsafe.Pointer(o.policy))
	o.policy_path = cstr(options.PolicyPath)
	defer C.free(unsafe.Pointer(o.policy_path))
	params, freeParams := paramArray(options.Params)
	defer freeParams()
	o.params = params
	o.n_params = C.size_t(len(options.Params))
	o.positions = C.kvc_position_mode(options.Positions)
	o.max_entries = C.int64_t(options.MaxEntries)
	var p *C.kvc_session
	if err := call("kvc_session_create", func() C.kvc_status { return C.kvc_session_create(m.p, &o, &p) }); err != nil {
		return nil, err
	}
	atomic.AddInt64(&m.sessions, 1)
	s := &Session{p: p, model: m, vocab: info.VocabSize}
	runtime.SetFinalizer(s, (*Session).Close)
	return s, nil
}

// Close frees the session. Idempotent.
func (s *Session) Close() error {
	if s.p != nil {
		C.kvc_session_free(s.p)
		s.p = nil
		atomic.AddInt64(&s.model.sessions, -1)
		runtime.SetFinalizer(s, nil)
	}
	return nil
}

// ScoreMode: stream feeds one token per step (the policy consulted after each); prefill runs
// one batched forward (exact only for policies that do not evict within the text).
type ScoreMode int

const (
	ScoreStream  ScoreMode = C.KVC_SCORE_STREAM
	ScorePrefill ScoreMode = C.KVC_SCORE_PREFILL
)

// Score appends ids to the session and returns the len(ids)-1 NLLs (nats): value i is
// -log p(ids[i+1] | everything before it in the session).
func (s *Session) Score(ids []int32) ([]float32, error) { return s.ScoreWith(ids, ScoreOptions{}) }

// ScoreMode is Score with an explicit mode.
func (s *Session) ScoreMode(ids []int32, mode ScoreMode) ([]float32, error) {
	return s.ScoreWith(ids, ScoreOptions{Mode: mode})
}

// DefaultBlockSize is what ScoreOptions.BlockSize 0 means (KVC_DEFAULT_BLOCK_SIZE).
const DefaultBlockSize = C.KVC_DEFAULT_BLOCK_SIZE

// ScoreOptions are the options of ScoreWith; the zero value streams with the default block.
type ScoreOptions struct {
	Mode ScoreMode
	// Stream: tokens per forward pass (1..256); 0 = DefaultBlockSize. Every block size gives
	// the same results (Session.ScoreReport says how the last score ran).
	BlockSize int
	// The token that follows ids in the text: its NLL is appended (len(ids) values).
	NextToken *int32
}

// ScoreWith is Score with every option.
func (s *Session) ScoreWith(ids []int32, options ScoreOptions) ([]float32, error) {
	var o C.kvc_score_options
	C.kvc_score_options_init_size(&o, C.size_t(unsafe.Sizeof(o)))
	o.mode = C.kvc_score_mode(options.Mode)
	o.block_size = C.int32_t(options.BlockSize)
	n := len(ids) - 1
	if n < 0 {
		n = 0
	}
	if options.NextToken != nil {
		// C memory: the options struct passed to C may not point to Go memory.
		next := (*C.int32_t)(C.malloc(C.size_t(unsafe.Sizeof(C.int32_t(0)))))
		defer C.free(unsafe.Pointer(next))
		*next = C.int32_t(*options.NextToken)
		o.next_token = next
		n = len(ids)
	}
	nll := make([]float32, n)
	err := call("kvc_session_score", func() C.kvc_status {
		return C.kvc_session_score(s.p, int32Ptr(ids), C.size_t(len(ids)), &o, floatPtr(nll), C.size_t(n))
	})
	if err != nil {
		return nil, err
	}
	return nll, nil
}

// ScoreReport says how a session's last score ran.
type ScoreReport struct {
	BlockSize int    // tokens per forward pass (1: token by token)
	Path      string // "block" (exact, layer by layer), "token" or "prefill"
	Reason    string // why "token" when a larger block was asked for; else ""
}

// ScoreReport is how the last Score ran.
func (s *Session) ScoreReport() (ScoreReport, error) {
	var r C.kvc_score_report
	C.kvc_score_report_init_size(&r, C.size_t(unsafe.Sizeof(r)))
	if err := call("kvc_session_score_report", func() C.kvc_status {
		return C.kvc_session_score_report(s.p, &r)
	}); err != nil {
		return ScoreReport{}, err
	}
	return ScoreReport{BlockSize: int(r.block_size), Path: C.GoString(r.path),
		Reason: C.GoString(r.reason)}, nil
}

// PolicyReport is the session's policy as the engine runs it, as JSON text (an object).
func (s *Session) PolicyReport() (string, error) {
	var n C.size_t
	if err := sized("kvc_session_policy_report", func() C.kvc_status {
		return C.kvc_session_policy_report(s.p, nil, 0, &n)
	}); err != nil {
		return "", err
	}
	buf := (*C.char)(C.malloc(n + 1))
	defer C.free(unsafe.Pointer(buf))
	if err := call("kvc_session_policy_report", func() C.kvc_status {
		return C.kvc_session_policy_report(s.p, buf, n+1, &n)
	}); err != nil {
		return "", err
	}
	return C.GoStringN(buf, C.int(n)), nil
}

// CacheEntries lists the entries of one (layer, head), oldest first: their positions in the
// text and their token ids.
func (s *Session) CacheEntries(layer, head int) (positions []int64, ids []int32, err error) {
	var n C.size_t
	if err := sized("kvc_session_cache_entries", func() C.kvc_status {
		return C.kvc_session_cache_entries(s.p, C.int32_t(layer), C.int32_t(head), nil, nil, 0, &n)
	}); err != nil {
		return nil, nil, err
	}
	positions = make([]int64, int(n)+1)
	ids = make([]int32, int(n)+1)
	err = call("kvc_session_cache_entries", func() C.kvc_status {
		return C.kvc_session_cache_entries(s.p, C.int32_t(layer), C.int32_t(head),
			(*C.int64_t)(unsafe.Pointer(&positions[0])), int32Ptr(ids), n, &n)
	})
	if err != nil {
		return nil, nil, err
	}
	return positions[:int(n)], ids[:int(n)], nil
}

// CacheScores are the values of the signal the policy ranks entries by, for the entries of
// one (layer, head) in CacheEntries order. ErrNotFound for policies that rank by no signal
// (streaming, sepllm, the full cache).
func (s *Session) CacheScores(layer, head int) ([]float32, error) {
	var n C.size_t
	if err := sized("kvc_session_cache_scores", func() C.kvc_status {
		return C.kvc_session_cache_scores(s.p, C.int32_t(layer), C.int32_t(head), nil, 0, &n)
	}); err != nil {
		return nil, err
	}
	scores := make([]float32, int(n)+1)
	if err := call("kvc_session_cache_scores", func() C.kvc_status {
		return C.kvc_session_cache_scores(s.p, C.int32_t(layer), C.int32_t(head), floatPtr(scores), n, &n)
	}); err != nil {
		return nil, err
	}
	return scores[:int(n)], nil
}

// Keep evicts by hand: only the entries at ranks (0 = oldest, strictly increasing) of
// (layer, head) stay; -1 for layer or head means all of them.
func (s *Session) Keep(layer, head int, ranks []int32) error {
	return call("kvc_session_keep", func() C.kvc_status {
		return C.kvc_session_keep(s.p, C.int32_t(layer), C.int32_t(head), int32Ptr(ranks), C.size_t(len(ranks)))
	})
}

type Logits int

const (
	LogitsNone Logits = C.KVC_LOGITS_NONE
	LogitsLast Logits = C.KVC_LOGITS_LAST
	LogitsAll  Logits = C.KVC_LOGITS_ALL
)

// Step feeds ids in one batch and returns the logits asked for (row-major for LogitsAll).
func (s *Session) Step(ids []int32, which Logits) ([]float32, error) {
	size := 0
	switch which {
	case LogitsLast:
		size = s.vocab
	case LogitsAll:
		size = s.vocab * len(ids)
	}
	out := make([]float32, size)
	err := call("kvc_session_step", func() C.kvc_status {
		return C.kvc_session_step(s.p, int32Ptr(ids), C.size_t(len(ids)), C.kvc_logits(which),
			floatPtr(out), C.size_t(size))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Reset empties the cache and resets the policy.
func (s *Session) Reset() error {
	return call("kvc_session_reset", func() C.kvc_status { return C.kvc_session_reset(s.p) })
}

type CacheStats struct {
	Layers, Heads                                   int
	Capacity, MaxEntries, MinEntries, MaxEntriesNow int64
	TotalEntries, TokensSeen, Evictions             int64
}

func (s *Session) CacheStats() (CacheStats, error) {
	var c C.kvc_cache_stats
	C.kvc_cache_stats_init_size(&c, C.size_t(unsafe.Sizeof(c)))
	if err := call("kvc_session_cache_stats", func() C.kvc_status { return C.kvc_session_cache_stats(s.p, &c) }); err != nil {
		return CacheStats{}, err
	}
	return CacheStats{
		Layers: int(c.n_layers), Heads: int(c.n_heads), Capacity: int64(c.capacity),
		MaxEntries: int64(c.max_entries), MinEntries: int64(c.min_entries),
		MaxEntriesNow: int64(c.max_entries_now), TotalEntries: int64(c.total_entries),
		TokensSeen: int64(c.n_tokens_seen), Evictions: int64(c.n_evictions),
	}, nil
}

// ---- Policies ---------------------------------------------------------------------------------

type ParamInfo struct {
	Name, Type, Default, Help string
	Min, Max                  float64
	Choices                   string // '|'-separated, for Type "choice"
}

type PolicyInfo struct {
	Name, Version, Description, Path string
	Params                           []ParamInfo
}

var paramTypes = []string{"int", "float", "bool", "choice", "int_list", "string_list"}

// ListPolicies finds every loadable policy (extraPath first, then KVC_POLICY_PATH).
func ListPolicies(extraPath string) ([]PolicyInfo, error) {
	ce := cstr(extraPath)
	defer C.free(unsafe.Pointer(ce))
	var list *C.kvc_policy_list
	if err := call("kvc_policy_list_load", func() C.kvc_status { return C.kvc_policy_list_load(ce, &list) }); err != nil {
		return nil, err
	}
	defer C.kvc_policy_list_free(list)
	var out []PolicyInfo
	for i := 0; i < int(C.kvc_policy_list_size(list)); i++ {
		out = append(out, policyInfo(C.kvc_policy_list_get(list, C.size_t(i))))
	}
	return out, nil
}

func policyInfo(p *C.kvc_policy_info) PolicyInfo {
	info := PolicyInfo{Name: C.GoString(p.name), Version: C.GoString(p.version),
		Description: C.GoString(p.description), Path: C.GoString(p.path)}
	for _, q := range unsafe.Slice(p.params, int(p.n_params)) {
		typ := fmt.Sprint(int(q._type))
		if int(q._type) < len(paramTypes) {
			typ = paramTypes[q._type]
		}
		info.Params = append(info.Params, ParamInfo{Name: C.GoString(q.name), Type: typ,
			Default: C.GoString(q.default_value), Help: C.GoString(q.help),
			Min: float64(q.min_value), Max: float64(q.max_value), Choices: C.GoString(q.choices)})
	}
	return info
}

// CheckPolicy validates a policy and its parameters without a model.
func CheckPolicy(name string, params []Param, extraPath string) error {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	ce := cstr(extraPath)
	defer C.free(unsafe.Pointer(ce))
	arr, freeParams := paramArray(params)
	defer freeParams()
	return call("kvc_policy_check", func() C.kvc_status {
		return C.kvc_policy_check(cn, ce, arr, C.size_t(len(params)))
	})
}

// ---- Typed parameters -------------------------------------------------------------------------

// PolicyParams is a policy with typed parameter values (kvc_policy_params), for
// SessionOptions.PolicyParams. Each value is checked against the policy's schema when it is
// set; setting one parameter twice is an error; unset parameters keep their defaults. One
// goroutine at a time; Close it when done.
type PolicyParams struct {
	p    *C.kvc_policy_params
	info PolicyInfo
}

// NewPolicyParams loads a policy (a name or a path to a .so; extraPath: ':'-separated folders
// searched first, may be "") and starts from its defaults.
func NewPolicyParams(policy, extraPath string) (*PolicyParams, error) {
	cn := C.CString(policy)
	defer C.free(unsafe.Pointer(cn))
	ce := cstr(extraPath)
	defer C.free(unsafe.Pointer(ce))
	var p *C.kvc_policy_params
	if err := call("kvc_policy_params_create", func() C.kvc_status {
		return C.kvc_policy_params_create(cn, ce, &p)
	}); err != nil {
		return nil, err
	}
	pp := &PolicyParams{p: p, info: policyInfo(C.kvc_policy_params_policy(p))}
	runtime.SetFinalizer(pp, (*PolicyParams).Close)
	return pp, nil
}

// Close frees the handle (sessions made from it keep their own copy). Idempotent.
func (pp *PolicyParams) Close() error {
	if pp.p != nil {
		C.kvc_policy_params_free(pp.p)
		pp.p = nil
		runtime.SetFinalizer(pp, nil)
	}
	return nil
}

// Policy describes the policy: name, version, description, file and schema.
func (pp *PolicyParams) Policy() PolicyInfo { return pp.info }

func (pp *PolicyParams) set(function, name string, f func(*C.char) C.kvc_status) error {
	if pp.p == nil {
		return &Error{Status: ErrInvalidArgument, Call: function, Message: "the PolicyParams are closed"}
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	return call(function, func() C.kvc_status { return f(cn) })
}

// SetText sets a value in the kvc_param text syntax ("128", "0.5", "true", "0,1,2").
func (pp *PolicyParams) SetText(name, value string) error {
	cv := C.CString(value)
	defer C.free(unsafe.Pointer(cv))
	return pp.set("kvc_policy_params_set_text", name, func(cn *C.char) C.kvc_status {
		return C.kvc_policy_params_set_text(pp.p, cn, cv)
	})
}

// SetInt sets an int (or float, or one-item int list) parameter.
func (pp *PolicyParams) SetInt(name string, value int64) error {
	return pp.set("kvc_policy_params_set_int", name, func(cn *C.char) C.kvc_status {
		return C.kvc_policy_params_set_int(pp.p, cn, C.int64_t(value))
	})
}

// SetFloat sets a float parameter.
func (pp *PolicyParams) SetFloat(name string, value float64) error {
	return pp.set("kvc_policy_params_set_float", name, func(cn *C.char) C.kvc_status {
		return C.kvc_policy_params_set_float(pp.p, cn, C.double(value))
	})
}

// SetBool sets a bool parameter.
func (pp *PolicyParams) SetBool(name string, value bool) error {
	v := C.int(0)
	if value {
		v = 1
	}
	return pp.set("kvc_policy_params_set_bool", name, func(cn *C.char) C.kvc_status {
		return C.kvc_policy_params_set_bool(pp.p, cn, v)
	})
}

// SetInts sets an int-list parameter.
func (pp *PolicyParams) SetInts(name string, values []int64) error {
	var ptr *C.int64_t
	if len(values) > 0 {
		ptr = (*C.int64_t)(unsafe.Pointer(&values[0]))
	}
	return pp.set("kvc_policy_params_set_ints", name, func(cn *C.char) C.kvc_status {
		return C.kvc_policy_params_set_ints(pp.p, cn, ptr, C.size_t(len(values)))
	})
}

// SetStrings sets a string-list parameter.
func (pp *PolicyParams) SetStrings(name string, values []string) error {
	var arr **C.char
	if len(values) > 0 {
		arr = (**C.char)(C.malloc(C.size_t(len(values)) * C.size_t(unsafe.Sizeof((*C.char)(nil)))))
		items := unsafe.Slice(arr, len(values))
		for i, v := range values {
			items[i] = C.CString(v)
		}
		defer func() {
			for i := range items {
				C.free(unsafe.Pointer(items[i]))
			}
			C.free(unsafe.Pointer(arr))
		}()
	}
	return pp.set("kvc_policy_params_set_strings", name, func(cn *C.char) C.kvc_status {
		return C.kvc_policy_params_set_strings(pp.p, cn, arr, C.size_t(len(values)))
	})
}

// Check creates and destroys one instance without a model, so the policy's own checks run.
func (pp *PolicyParams) Check() error {
	return call("kvc_policy_params_check", func() C.kvc_status { return C.kvc_policy_params_check(pp.p) })
}
