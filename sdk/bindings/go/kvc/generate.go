package kvc

// Sampling and generation (ABI 1.2): Sampler, Session.Generate, Session.GenerateText.

/*
#include <stdint.h>
#include <stdlib.h>
#include <kvc/kvc.h>

// The Go side of the token callback (callback.go). user_data carries a cgo.Handle as an
// integer, which Go never sees as a pointer: this file converts between the two.
extern int32_t kvcGoOnToken(uintptr_t handle, int32_t token, char *piece, size_t piece_len);

static int32_t kvc_go_on_token(void *user_data, int32_t token, const char *piece,
                               size_t piece_len) {
	return kvcGoOnToken((uintptr_t)user_data, token, (char *)piece, piece_len);
}

static void kvc_go_set_token_callback(kvc_generate_options *options, uintptr_t handle) {
	options->on_token = kvc_go_on_token;
	options->user_data = (void *)handle;
}
*/
import "C"

import (
	"fmt"
	"runtime"
	"runtime/cgo"
	"unsafe"
)

// SamplerOptions are the sampler's settings (kvc_sampler_options). The zero value is not the
// defaults (its TopP and RepetitionPenalty are out of range): start from
// DefaultSamplerOptions() or GreedySamplerOptions(). The chain, in the order of Hugging Face
// transformers: repetition penalty over the last RepetitionLastN ids of the history (-1: all,
// 0: none); Temperature 0 is greedy, else the logits are divided by it; TopK (0 = off), TopP
// (1 = off) and MinP (0 = off) filter the candidates; one token is drawn with the SplitMix64
// stream of Seed, so a seed gives the same tokens on every run. Values outside the ranges
// below are ErrInvalidArgument errors naming the field.
type SamplerOptions struct {
	Temperature       float32 // >= 0; 0 = greedy
	TopK              int     // >= 0; 0 = off
	TopP              float32 // in (0, 1]; 1 = off
	MinP              float32 // in [0, 1]; 0 = off
	RepetitionPenalty float32 // > 0; 1 = off; > 1 discourages repeats
	RepetitionLastN   int     // tokens of history penalized: -1 all, 0 none
	Seed              uint64
}

// DefaultSamplerOptions are the library's defaults: temperature 1 (the model's distribution),
// every filter off, a repetition window of 64 without penalty, seed 0.
func DefaultSamplerOptions() SamplerOptions {
	var o C.kvc_sampler_options
	C.kvc_sampler_options_init_size(&o, C.size_t(unsafe.Sizeof(o)))
	return SamplerOptions{Temperature: float32(o.temperature), TopK: int(o.top_k),
		TopP: float32(o.top_p), MinP: float32(o.min_p),
		RepetitionPenalty: float32(o.repetition_penalty),
		RepetitionLastN:   int(o.repetition_last_n), Seed: uint64(o.seed)}
}

// GreedySamplerOptions pick the largest logit (the lowest id among equal ones).
func GreedySamplerOptions() SamplerOptions {
	o := DefaultSamplerOptions()
	o.Temperature = 0
	return o
}

func (so *SamplerOptions) raw() C.kvc_sampler_options {
	var o C.kvc_sampler_options
	C.kvc_sampler_options_init_size(&o, C.size_t(unsafe.Sizeof(o)))
	o.temperature = C.float(so.Temperature)
	o.top_k = C.int32_t(so.TopK)
	o.top_p = C.float(so.TopP)
	o.min_p = C.float(so.MinP)
	o.repetition_penalty = C.float(so.RepetitionPenalty)
	o.repetition_last_n = C.int32_t(so.RepetitionLastN)
	o.seed = C.uint64_t(so.Seed)
	return o
}

// Sampler is the library's sampler (kvc_sampler): it turns logits into a token, keeping its
// history (for the repetition penalty) and its place in the random stream across calls. Give
// it to GenerateOptions.Sampler to continue both over several generations. One goroutine at a
// time; Close it when done.
type Sampler struct {
	p *C.kvc_sampler
}

// NewSampler creates a sampler; options nil means DefaultSamplerOptions().
func NewSampler(options *SamplerOptions) (*Sampler, error) {
	so := DefaultSamplerOptions()
	if options != nil {
		so = *options
	}
	o := so.raw()
	var p *C.kvc_sampler
	if err := call("kvc_sampler_create", func() C.kvc_status { return C.kvc_sampler_create(&o, &p) }); err != nil {
		return nil, err
	}
	s := &Sampler{p: p}
	runtime.SetFinalizer(s, (*Sampler).Close)
	return s, nil
}

// Close frees the sampler. Idempotent.
func (s *Sampler) Close() error {
	if s.p != nil {
		C.kvc_sampler_free(s.p)
		s.p = nil
		runtime.SetFinalizer(s, nil)
	}
	return nil
}

func (s *Sampler) handle(function string) (*C.kvc_sampler, error) {
	if s == nil || s.p == nil {
		return nil, &Error{Status: ErrInvalidArgument, Call: function, Message: "the Sampler is closed"}
	}
	return s.p, nil
}

// Reset clears the history and restarts the random stream: the next tokens repeat the first.
func (s *Sampler) Reset() error {
	p, err := s.handle("kvc_sampler_reset")
	if err != nil {
		return err
	}
	return call("kvc_sampler_reset", func() C.kvc_status { return C.kvc_sampler_reset(p) })
}

// Accept appends ids the sampler did not pick (a prompt) to the history.
func (s *Sampler) Accept(ids []int32) error {
	p, err := s.handle("kvc_sampler_accept")
	if err != nil {
		return err
	}
	return call("kvc_sampler_accept", func() C.kvc_status {
		return C.kvc_sampler_accept(p, int32Ptr(ids), C.size_t(len(ids)))
	})
}

// Sample draws one id from logits (e.g. Session.Step's with LogitsLast) and appends it to the
// history. NaN and -inf are never chosen.
func (s *Sampler) Sample(logits []float32) (int32, error) {
	p, err := s.handle("kvc_sampler_sample")
	if err != nil {
		return 0, err
	}
	var token C.int32_t
	err = call("kvc_sampler_sample", func() C.kvc_status {
		return C.kvc_sampler_sample(p, floatPtr(logits), C.size_t(len(logits)), &token)
	})
	return int32(token), err
}

// DefaultMaxTokens is what GenerateOptions.MaxTokens 0 means.
const DefaultMaxTokens = 128

// GenerateOptions configure Session.Generate; nil or the zero value generates
// DefaultMaxTokens tokens with DefaultSamplerOptions().
type GenerateOptions struct {
	MaxTokens int // tokens to generate at most; 0 = DefaultMaxTokens (negative: an error)
	// Stop sequences (non-empty), matched on the generated text wherever token boundaries
	// fall; they need the model's tokenizer.
	Stop []string
	// Ids that end the generation when sampled.
	StopTokens []int32
	// The settings of a new sampler for this call; nil = DefaultSamplerOptions().
	Sampling *SamplerOptions
	// A sampler of one's own instead (its history and random stream go on); Sampling must
	// then be nil.
	Sampler *Sampler
}

// StopReason says why a generation ended (kvc_stop_reason).
type StopReason int

const (
	StopMaxTokens StopReason = C.KVC_STOP_MAX_TOKENS // MaxTokens were generated
	StopSequence  StopReason = C.KVC_STOP_SEQUENCE   // a stop sequence (StopIndex says which)
	StopToken     StopReason = C.KVC_STOP_TOKEN      // a stop token (StopIndex says which)
	StopCallback  StopReason = C.KVC_STOP_CALLBACK   // the callback returned false
)

func (r StopReason) String() string {
	switch r {
	case StopMaxTokens:
		return "max_tokens"
	case StopSequence:
		return "stop_sequence"
	case StopToken:
		return "stop_token"
	case StopCallback:
		return "callback"
	}
	return fmt.Sprintf("StopReason(%d)", int(r))
}

// Generation is a finished generation.
type Generation struct {
	Tokens     []int32 // the generated ids, the last (stop) one included
	Text       string  // the released pieces, concatenated (stop sequences and tokens excluded)
	StopReason StopReason
	StopIndex  int // index into Stop (StopSequence) or StopTokens (StopToken); else -1
}

// generation is what the C callback reaches through its handle.
type generation struct {
	onToken  func(id int32, piece string) bool
	text     []byte
	panicked bool
	panicVal interface{}
}

// Generate generates up to options.MaxTokens tokens after prompt (appended to what the session
// holds; at least one id), calling onToken(id, piece) as soon as each token is sampled (nil:
// no callback); return false to stop after it. The pieces concatenate to the generated text; a
// piece is "" while its text could still begin a stop sequence or ends in a split UTF-8
// character (a later piece then holds it). Afterwards the session holds the prompt and every
// generated token but the last, which was not fed: pass it as the first token of the next
// prompt to continue.
//
// onToken runs on the calling goroutine during the C call: it must not use the session, nor
// call runtime.Goexit (t.Fatal); a panic in it stops the generation and is re-raised when the
// call has returned.
func (s *Session) Generate(prompt []int32, options *GenerateOptions, onToken func(id int32, piece string) bool) (Generation, error) {
	const function = "kvc_generate"
	if options == nil {
		options = &GenerateOptions{}
	}
	if s.p == nil {
		return Generation{}, &Error{Status: ErrInvalidArgument, Call: function, Message: "the Session is closed"}
	}
	var sampler *C.kvc_sampler
	if options.Sampler != nil {
		if options.Sampling != nil {
			return Generation{}, &Error{Status: ErrInvalidArgument, Call: function,
				Message: "GenerateOptions: give Sampling or Sampler, not both"}
		}
		p, err := options.Sampler.handle(function)
		if err != nil {
			return Generation{}, err
		}
		sampler = p
		defer runtime.KeepAlive(options.Sampler)
	} else {
		own, err := NewSampler(options.Sampling)
		if err != nil {
			return Generation{}, err
		}
		defer own.Close()
		sampler = own.p
	}
	maxTokens := options.MaxTokens
	if maxTokens == 0 {
		maxTokens = DefaultMaxTokens
	}

	// The options live in C memory: they hold C pointers and the handle as an integer.
	o := (*C.kvc_generate_options)(C.calloc(1, C.size_t(unsafe.Sizeof(C.kvc_generate_options{}))))
	defer C.free(unsafe.Pointer(o))
	C.kvc_generate_options_init_size(o, C.size_t(unsafe.Sizeof(*o)))
	o.max_tokens = C.int32_t(maxTokens)
	if n := len(options.Stop); n > 0 {
		arr := (**C.char)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof((*C.char)(nil)))))
		items := unsafe.Slice(arr, n)
		for i, stop := range options.Stop {
			items[i] = C.CString(stop)
		}
		defer func() {
			for i := range items {
				C.free(unsafe.Pointer(items[i]))
			}
			C.free(unsafe.Pointer(arr))
		}()
		o.stop = arr
		o.n_stop = C.size_t(n)
	}
	if n := len(options.StopTokens); n > 0 {
		arr := (*C.int32_t)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof(C.int32_t(0)))))
		defer C.free(unsafe.Pointer(arr))
		items := unsafe.Slice(arr, n)
		for i, id := range options.StopTokens {
			items[i] = C.int32_t(id)
		}
		o.stop_tokens = arr
		o.n_stop_tokens = C.size_t(n)
	}
	g := &generation{onToken: onToken}
	h := cgo.NewHandle(g)
	defer h.Delete()
	C.kvc_go_set_token_callback(o, C.uintptr_t(h))

	capacity := maxTokens
	if capacity < 0 {
		capacity = 0
	}
	tokens := make([]int32, capacity)
	var r C.kvc_generate_result
	C.kvc_generate_result_init_size(&r, C.size_t(unsafe.Sizeof(r)))
	err := call(function, func() C.kvc_status {
		return C.kvc_generate(s.p, sampler, int32Ptr(prompt), C.size_t(len(prompt)), o,
			int32Ptr(tokens), C.size_t(capacity), &r)
	})
	runtime.KeepAlive(prompt)
	if g.panicked {
		panic(g.panicVal)
	}
	if err != nil {
		return Generation{}, err
	}
	return Generation{Tokens: tokens[:int(r.n_tokens)], Text: string(g.text),
		StopReason: StopReason(r.stop_reason), StopIndex: int(r.stop_index)}, nil
}

// GenerateText is Generate to the end without a callback: the text, the ids and why it
// stopped.
func (s *Session) GenerateText(prompt []int32, options *GenerateOptions) (Generation, error) {
	return s.Generate(prompt, options, nil)
}
