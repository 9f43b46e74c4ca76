//! Safe Rust wrapper over libkvc's C ABI (`kvc/kvc.h`): GPT-NeoX (Pythia) inference with
//! KV-cache eviction policies.
//!
//! ```no_run
//! let model = kvc::Model::load("models/kjv-mini", &kvc::ModelOptions::default())?;
//! let ids = model.tokenizer().expect("a tokenizer").encode("In the beginning")?;
//! let opts = kvc::SessionOptions::new().policy("streaming").param("start_size", 4)
//!     .param("recent_size", 252);
//! let mut session = model.session(&opts)?;
//! let nll = session.score(&ids)?;
//! # Ok::<(), kvc::Error>(())
//! ```
//!
//! Handles free themselves on drop; a [`Session`] borrows its [`Model`], so the borrow checker
//! enforces the C ABI's rule that sessions are freed before their model. Every failure is an
//! [`Error`] carrying the status and the library's message. Text generation (ABI 1.2):
//! [`Session::generate`] with [`SamplerOptions`] and a closure per token, or
//! [`Session::generate_text`].

pub mod sys;

use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int};
use std::ptr::{self, NonNull};

/// The status of a failed call (`kvc_status` without `KVC_OK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    InvalidArgument,
    Io,
    Format,
    Unsupported,
    NotFound,
    OutOfRange,
    BufferTooSmall,
    Policy,
    Backend,
    OutOfMemory,
    Internal,
    /// A status this crate does not know (a newer library).
    Other(i32),
}

impl Status {
    fn from_code(code: c_int) -> Status {
        match code {
            1 => Status::InvalidArgument,
            2 => Status::Io,
            3 => Status::Format,
            4 => Status::Unsupported,
            5 => Status::NotFound,
            6 => Status::OutOfRange,
            7 => Status::BufferTooSmall,
            8 => Status::Policy,
            9 => Status::Backend,
            10 => Status::OutOfMemory,
            11 => Status::Internal,
            other => Status::Other(other),
        }
    }
}

/// A failed libkvc call: its status, the library's message and the C function that failed.
#[derive(Debug, Clone)]
pub struct Error {
    status: Status,
    code: i32,
    message: String,
    call: &'static str,
}

impl Error {
    pub fn status(&self) -> Status {
        self.status
    }
    /// The raw `kvc_status` value.
    pub fn code(&self) -> i32 {
        self.code
    }
    /// The library's message (`kvc_last_error()`), naming the file, value or name involved.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The C function that failed, e.g. "kvc_model_load".
    pub fn call(&self) -> &'static str {
        self.call
    }

    fn from_library(code: c_int, call: &'static str) -> Error {
        // kvc_last_error is per thread; this runs right after the failing call, on its thread.
        let message = unsafe { text(sys::kvc_last_error()) }.unwrap_or_default();
        Error {
            status: Status::from_code(code),
            code,
            message,
            call,
        }
    }

    fn nul(what: &str, call: &'static str) -> Error {
        Error {
            status: Status::InvalidArgument,
            code: 1,
            message: format!("{} contains a NUL byte", what),
            call,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = unsafe { text(sys::kvc_status_name(self.code)) }.unwrap_or_default();
        write!(f, "{}: {}: {}", self.call, name, self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn check(code: c_int, call: &'static str) -> Result<()> {
    if code == sys::KVC_OK {
        Ok(())
    } else {
        Err(Error::from_library(code, call))
    }
}

/// Copies a library-owned C string (NULL gives None).
unsafe fn text(p: *const c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        Some(CStr::from_ptr(p).to_string_lossy().into_owned())
    }
}

fn cstring(s: &str, what: &str, call: &'static str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::nul(what, call))
}

/// Human-readable library version, e.g. "0.2.0".
pub fn version() -> String {
    unsafe { text(sys::kvc_version_string()) }.unwrap_or_default()
}

/// (major, minor) ABI version of the loaded library.
pub fn abi_version() -> (u32, u32) {
    let v = unsafe { sys::kvc_abi_version() };
    (v >> 16, v & 0xffff)
}

// ---- Tokenizer ---------------------------------------------------------------------------------

/// A byte-level BPE tokenizer: loaded from a tokenizer.json (`Tokenizer<'static>`, freed on
/// drop) or borrowed from a [`Model`].
pub struct Tokenizer<'a> {
    ptr: NonNull<sys::kvc_tokenizer>,
    owned: bool,
    _owner: PhantomData<&'a Model>,
}

// The tokenizer is immutable after load.
unsafe impl Send for Tokenizer<'_> {}
unsafe impl Sync for Tokenizer<'_> {}

impl Tokenizer<'static> {
    pub fn load(path: &str) -> Result<Tokenizer<'static>> {
        let c = cstring(path, "the tokenizer path", "kvc_tokenizer_load")?;
        let mut out = ptr::null_mut();
        check(
            unsafe { sys::kvc_tokenizer_load(c.as_ptr(), &mut out) },
            "kvc_tokenizer_load",
        )?;
        Ok(Tokenizer {
            ptr: NonNull::new(out).expect("non-null"),
            owned: true,
            _owner: PhantomData,
        })
    }
}

impl Tokenizer<'_> {
    /// Encodes UTF-8 text (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<i32>> {
        self.encode_bytes(text.as_bytes())
    }

    /// Encodes bytes; invalid UTF-8 is decoded with U+FFFD replacement.
    pub fn encode_bytes(&self, text: &[u8]) -> Result<Vec<i32>> {
        let mut n = 0usize;
        let p = text.as_ptr() as *const c_char;
        // A sizing call, then the real one.
        let st = unsafe {
            sys::kvc_tokenize(self.ptr.as_ptr(), p, text.len(), ptr::null_mut(), 0, &mut n)
        };
        if st != sys::KVC_OK && st != sys::KVC_ERR_BUFFER_TOO_SMALL {
            return Err(Error::from_library(st, "kvc_tokenize"));
        }
        let mut ids = vec![0i32; n];
        check(
            unsafe {
                sys::kvc_tokenize(
                    self.ptr.as_ptr(),
                    p,
                    text.len(),
                    ids.as_mut_ptr(),
                    n,
                    &mut n,
                )
            },
            "kvc_tokenize",
        )?;
        ids.truncate(n);
        Ok(ids)
    }

    /// Decodes ids to text (invalid UTF-8 sequences, e.g. a split character, become U+FFFD).
    pub fn decode(&self, ids: &[i32]) -> Result<String> {
        let mut n = 0usize;
        let st = unsafe {
            sys::kvc_detokenize(
                self.ptr.as_ptr(),
                ids.as_ptr(),
                ids.len(),
                ptr::null_mut(),
                0,
                &mut n,
            )
        };
        if st != sys::KVC_OK && st != sys::KVC_ERR_BUFFER_TOO_SMALL {
            return Err(Error::from_library(st, "kvc_detokenize"));
        }
        let mut buf = vec![0u8; n + 1];
        check(
            unsafe {
                sys::kvc_detokenize(
                    self.ptr.as_ptr(),
                    ids.as_ptr(),
                    ids.len(),
                    buf.as_mut_ptr() as *mut c_char,
                    buf.len(),
                    &mut n,
                )
            },
            "kvc_detokenize",
        )?;
        buf.truncate(n);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    pub fn vocab_size(&self) -> i32 {
        unsafe { sys::kvc_tokenizer_vocab_size(self.ptr.as_ptr()) }
    }

    /// The id of an exact vocabulary entry.
    pub fn token_to_id(&self, token: &str) -> Option<i32> {
        let c = CString::new(token).ok()?;
        let id = unsafe { sys::kvc_tokenizer_token_to_id(self.ptr.as_ptr(), c.as_ptr()) };
        if id < 0 {
            None
        } else {
            Some(id)
        }
    }
}

impl Drop for Tokenizer<'_> {
    fn drop(&mut self) {
        if self.owned {
            unsafe { sys::kvc_tokenizer_free(self.ptr.as_ptr()) }
        }
    }
}

// ---- Model -------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    Auto,
    F32,
    Bf16,
    F16,
}

impl Backend {
    fn code(self) -> c_int {
        match self {
            Backend::Auto => sys::KVC_BACKEND_AUTO,
            Backend::Cpu => sys::KVC_BACKEND_CPU,
            Backend::Cuda => sys::KVC_BACKEND_CUDA,
        }
    }
    fn from_code(code: c_int) -> Backend {
        match code {
            sys::KVC_BACKEND_CPU => Backend::Cpu,
            sys::KVC_BACKEND_CUDA => Backend::Cuda,
            _ => Backend::Auto,
        }
    }
}

impl Dtype {
    fn code(self) -> c_int {
        match self {
            Dtype::Auto => 0,
            Dtype::F32 => 1,
            Dtype::Bf16 => 2,
            Dtype::F16 => 3,
        }
    }
    fn from_code(code: c_int) -> Dtype {
        match code {
            1 => Dtype::F32,
            2 => Dtype::Bf16,
            3 => Dtype::F16,
            _ => Dtype::Auto,
        }
    }
}

/// How to load a model; `Default` is the library's defaults.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    pub backend: Backend,
    pub dtype: Dtype,
    /// CPU worker threads; 0 = one per core.
    pub threads: i32,
    pub device: i32,
    /// Weights of "synthetic:" models.
    pub seed: u64,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            backend: Backend::Auto,
            dtype: Dtype::Auto,
            threads: 0,
            device: 0,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub n_layers: i32,
    pub n_heads: i32,
    pub head_dim: i32,
    pub hidden_size: i32,
    pub intermediate_size: i32,
    pub vocab_size: i32,
    pub max_position_embeddings: i32,
    pub rotary_ndims: i32,
    pub rotary_base: f32,
    pub layer_norm_eps: f32,
    pub use_parallel_residual: bool,
    pub backend: Backend,
    pub dtype: Dtype,
    pub threads: i32,
    pub weight_bytes: u64,
}

/// A loaded model; immutable, shareable between threads.
pub struct Model {
    ptr: NonNull<sys::kvc_model>,
}

unsafe impl Send for Model {}
unsafe impl Sync for Model {}

impl Model {
    /// Loads a Hugging Face folder (config.json, safetensors, optional tokenizer.json) or a
    /// "synthetic:pythia-70m"-style name.
    pub fn load(path: &str, options: &ModelOptions) -> Result<Model> {
        let c = cstring(path, "the model path", "kvc_model_load")?;
        let mut o = unsafe { sys::init(sys::kvc_model_options_init_size) };
        o.backend = options.backend.code();
        o.weight_dtype = options.dtype.code();
        o.n_threads = options.threads;
        o.device = options.device;
        o.seed = options.seed;
        let mut out = ptr::null_mut();
        check(
            unsafe { sys::kvc_model_load(c.as_ptr(), &o, &mut out) },
            "kvc_model_load",
        )?;
        Ok(Model {
            ptr: NonNull::new(out).expect("non-null"),
        })
    }

    pub fn info(&self) -> Result<ModelInfo> {
        let i = unsafe {
            let mut i: sys::kvc_model_info = sys::init(sys::kvc_model_info_init_size);
            check(
                sys::kvc_model_get_info(self.ptr.as_ptr(), &mut i),
                "kvc_model_get_info",
            )?;
            i
        };
        Ok(ModelInfo {
            n_layers: i.n_layers,
            n_heads: i.n_heads,
            head_dim: i.head_dim,
            hidden_size: i.hidden_size,
            intermediate_size: i.intermediate_size,
            vocab_size: i.vocab_size,
            max_position_embeddings: i.max_position_embeddings,
            rotary_ndims: i.rotary_ndims,
            rotary_base: i.rotary_base,
            layer_norm_eps: i.layer_norm_eps,
            use_parallel_residual: i.use_parallel_residual != 0,
            backend: Backend::from_code(i.backend),
            dtype: Dtype::from_code(i.weight_dtype),
            threads: i.n_threads,
            weight_bytes: i.weight_bytes,
        })
    }

    /// The folder's tokenizer, if it has a tokenizer.json. Borrowed from the model.
    pub fn tokenizer(&self) -> Option<Tokenizer<'_>> {
        let p = unsafe { sys::kvc_model_tokenizer(self.ptr.as_ptr()) };
        NonNull::new(p as *mut sys::kvc_tokenizer).map(|ptr| Tokenizer {
            ptr,
            owned: false,
            _owner: PhantomData,
        })
    }

    /// A new session (sequence, KV cache and policy) over this model.
    pub fn session(&self, options: &SessionOptions) -> Result<Session<'_>> {
        const CALL: &str = "kvc_session_create";
        let policy = match &options.policy {
            Some(p) => Some(cstring(p, "the policy name", CALL)?),
            None => None,
        };
        let policy_path = match &options.policy_path {
            Some(p) => Some(cstring(p, "the policy path", CALL)?),
            None => None,
        };
        let (_strings, params) = param_array(&options.params, CALL)?;
        let mut o = session_options(options);
        o.policy = policy.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        o.params = if params.is_empty() {
            ptr::null()
        } else {
            params.as_ptr()
        };
        o.n_params = params.len();
        o.policy_path = policy_path.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        self.create_session(&o)
    }

    /// A new session whose policy and typed parameters come from `params`; `options` gives
    /// the positions and the entry limit (its policy, params and policy path must be unset).
    pub fn session_with_params(
        &self,
        params: &PolicyParams,
        options: &SessionOptions,
    ) -> Result<Session<'_>> {
        if options.policy.is_some() || !options.params.is_empty() || options.policy_path.is_some() {
            return Err(Error {
                status: Status::InvalidArgument,
                code: 1,
                message: "with PolicyParams, the session options must not name a policy, \
                          parameters or a policy path"
                    .to_string(),
                call: "kvc_session_create",
            });
        }
        let mut o = session_options(options);
        o.policy_params = params.ptr.as_ptr();
        self.create_session(&o)
    }

    fn create_session(&self, o: &sys::kvc_session_options) -> Result<Session<'_>> {
        let mut out = ptr::null_mut();
        // The library takes a non-const model pointer but never mutates a loaded model.
        check(
            unsafe { sys::kvc_session_create(self.ptr.as_ptr(), o, &mut out) },
            "kvc_session_create",
        )?;
        let vocab = self.info()?.vocab_size as usize;
        Ok(Session {
            ptr: NonNull::new(out).expect("non-null"),
            vocab,
            _model: PhantomData,
        })
    }
}

fn session_options(options: &SessionOptions) -> sys::kvc_session_options {
    let mut o: sys::kvc_session_options = unsafe { sys::init(sys::kvc_session_options_init_size) };
    o.positions = match options.positions {
        Positions::Shift => sys::KVC_POSITIONS_SHIFT,
        Positions::Original => sys::KVC_POSITIONS_ORIGINAL,
    };
    o.max_entries = options.max_entries;
    o
}

impl Drop for Model {
    fn drop(&mut self) {
        unsafe { sys::kvc_model_free(self.ptr.as_ptr()) }
    }
}

/// Owned C strings and the kvc_param array pointing into them (keep both alive together).
fn param_array(
    params: &[(String, String)],
    call: &'static str,
) -> Result<(Vec<CString>, Vec<sys::kvc_param>)> {
    let mut strings = Vec::with_capacity(params.len() * 2);
    for (name, value) in params {
        strings.push(cstring(name, "a parameter name", call)?);
        strings.push(cstring(value, "a parameter value", call)?);
    }
    let array = strings
        .chunks(2)
        .map(|nv| sys::kvc_param {
            name: nv[0].as_ptr(),
            value: nv[1].as_ptr(),
        })
        .collect();
    Ok((strings, array))
}

// ---- Session -----------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// Rotary by rank in the cache (StreamingLLM's position shift).
    Shift,
    /// Rotary by absolute position in the text.
    Original,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreMode {
    /// One token per step, the policy consulted after each.
    Stream,
    /// One batched forward; exact only for policies that do not evict within the text.
    Prefill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    None,
    Last,
    All,
}

/// Options of [`Session::score_opts`] (`kvc_score_options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreOptions {
    pub mode: ScoreMode,
    /// Stream: tokens per forward pass (1..=256); 0 = the library's default
    /// ([`sys::KVC_DEFAULT_BLOCK_SIZE`]). Every block size gives the same results.
    pub block_size: i32,
    /// The token that follows the ids in the text: its NLL is appended.
    pub next_token: Option<i32>,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            mode: ScoreMode::Stream,
            block_size: 0,
            next_token: None,
        }
    }
}

/// How a session's last score ran (`kvc_score_report`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreReport {
    /// Tokens per forward pass (1: token by token).
    pub block_size: i32,
    /// "block" (exact, layer by layer), "token" or "prefill".
    pub path: String,
    /// Why "token" when a larger block was asked for; else "".
    pub reason: String,
}

/// Options of a session: a builder over `kvc_session_options`.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub policy: Option<String>,
    pub params: Vec<(String, String)>,
    pub positions: Positions,
    pub max_entries: i64,
    pub policy_path: Option<String>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            policy: None,
            params: Vec::new(),
            positions: Positions::Shift,
            max_entries: 0,
            policy_path: None,
        }
    }
}

impl SessionOptions {
    pub fn new() -> Self {
        Self::default()
    }
    /// A policy name ("streaming", "h2o", ...) or a path to a plugin .so.
    pub fn policy(mut self, name: &str) -> Self {
        self.policy = Some(name.to_string());
        self
    }
    /// One parameter, in the kvc_param text syntax ("128", "0.5", "true", "0,1,2").
    pub fn param<V: ToString>(mut self, name: &str, value: V) -> Self {
        self.params.push((name.to_string(), value.to_string()));
        self
    }
    pub fn positions(mut self, positions: Positions) -> Self {
        self.positions = positions;
        self
    }
    pub fn max_entries(mut self, max_entries: i64) -> Self {
        self.max_entries = max_entries;
        self
    }
    /// Extra ':'-separated folders searched for plugins before KVC_POLICY_PATH.
    pub fn policy_path(mut self, path: &str) -> Self {
        self.policy_path = Some(path.to_string());
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStats {
    pub n_layers: i32,
    pub n_heads: i32,
    /// The policy's budget per (layer, head); -1 if unbounded.
    pub capacity: i64,
    pub max_entries: i64,
    pub min_entries: i64,
    pub max_entries_now: i64,
    pub total_entries: i64,
    pub n_tokens_seen: i64,
    pub n_evictions: i64,
}

/// One sequence with its KV cache and eviction policy. Borrows its model; `Send` (it may move
/// to another thread) but not `Sync` (one thread at a time).
pub struct Session<'m> {
    ptr: NonNull<sys::kvc_session>,
    vocab: usize,
    _model: PhantomData<&'m Model>,
}

unsafe impl Send for Session<'_> {}

impl Session<'_> {
    /// Appends `ids` to the session and returns their n-1 NLLs (nats): value i is
    /// -log p(ids[i+1] | everything before it in the session). Streamed with the library's
    /// default block size (the same results as one token per step).
    pub fn score(&mut self, ids: &[i32]) -> Result<Vec<f32>> {
        self.score_opts(ids, &ScoreOptions::default())
    }

    pub fn score_with(&mut self, ids: &[i32], mode: ScoreMode) -> Result<Vec<f32>> {
        self.score_opts(
            ids,
            &ScoreOptions {
                mode,
                ..ScoreOptions::default()
            },
        )
    }

    /// [`Session::score`] with every option: the mode, the block size and the next token
    /// (with it, n NLLs: the last one is next_token's).
    pub fn score_opts(&mut self, ids: &[i32], options: &ScoreOptions) -> Result<Vec<f32>> {
        let mut o: sys::kvc_score_options = unsafe { sys::init(sys::kvc_score_options_init_size) };
        o.mode = match options.mode {
            ScoreMode::Stream => sys::KVC_SCORE_STREAM,
            ScoreMode::Prefill => sys::KVC_SCORE_PREFILL,
        };
        o.block_size = options.block_size;
        let next = options.next_token.unwrap_or(0);
        if options.next_token.is_some() {
            o.next_token = &next;
        }
        let n = if options.next_token.is_some() {
            ids.len()
        } else {
            ids.len().saturating_sub(1)
        };
        let mut nll = vec![0f32; n];
        check(
            unsafe {
                sys::kvc_session_score(
                    self.ptr.as_ptr(),
                    ids.as_ptr(),
                    ids.len(),
                    &o,
                    nll.as_mut_ptr(),
                    nll.len(),
                )
            },
            "kvc_session_score",
        )?;
        Ok(nll)
    }

    /// How the last score ran: the block size, "block", "token" or "prefill", and why it fell
    /// back to token by token when it did.
    pub fn score_report(&self) -> Result<ScoreReport> {
        unsafe {
            let mut r: sys::kvc_score_report = sys::init(sys::kvc_score_report_init_size);
            check(
                sys::kvc_session_score_report(self.ptr.as_ptr(), &mut r),
                "kvc_session_score_report",
            )?;
            Ok(ScoreReport {
                block_size: r.block_size,
                path: text(r.path).unwrap_or_default(),
                reason: text(r.reason).unwrap_or_default(),
            })
        }
    }

    /// The session's policy as the engine runs it, as JSON text (an object).
    pub fn policy_report(&self) -> Result<String> {
        const CALL: &str = "kvc_session_policy_report";
        let mut n = 0usize;
        let st = unsafe {
            sys::kvc_session_policy_report(self.ptr.as_ptr(), ptr::null_mut(), 0, &mut n)
        };
        if st != sys::KVC_OK && st != sys::KVC_ERR_BUFFER_TOO_SMALL {
            return Err(Error::from_library(st, CALL));
        }
        let mut buf = vec![0u8; n + 1];
        check(
            unsafe {
                sys::kvc_session_policy_report(
                    self.ptr.as_ptr(),
                    buf.as_mut_ptr() as *mut c_char,
                    buf.len(),
                    &mut n,
                )
            },
            CALL,
        )?;
        buf.truncate(n);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// exp(mean NLL) of `ids` (scored one token per step).
    pub fn perplexity(&mut self, ids: &[i32]) -> Result<f64> {
        let nll = self.score(ids)?;
        let sum: f64 = nll.iter().map(|&x| x as f64).sum();
        Ok((sum / nll.len() as f64).exp())
    }

    /// Feeds `ids` in one batch; returns the logits asked for (row-major for `All`).
    pub fn step(&mut self, ids: &[i32], which: Logits) -> Result<Vec<f32>> {
        let (code, size) = match which {
            Logits::None => (sys::KVC_LOGITS_NONE, 0),
            Logits::Last => (sys::KVC_LOGITS_LAST, self.vocab),
            Logits::All => (sys::KVC_LOGITS_ALL, self.vocab * ids.len()),
        };
        let mut out = vec![0f32; size];
        check(
            unsafe {
                sys::kvc_session_step(
                    self.ptr.as_ptr(),
                    ids.as_ptr(),
                    ids.len(),
                    code,
                    out.as_mut_ptr(),
                    out.len(),
                )
            },
            "kvc_session_step",
        )?;
        Ok(out)
    }

    /// Empties the cache and resets the policy.
    pub fn reset(&mut self) -> Result<()> {
        check(
            unsafe { sys::kvc_session_reset(self.ptr.as_ptr()) },
            "kvc_session_reset",
        )
    }

    pub fn cache_stats(&self) -> Result<CacheStats> {
        let s = unsafe {
            let mut s: sys::kvc_cache_stats = sys::init(sys::kvc_cache_stats_init_size);
            check(
                sys::kvc_session_cache_stats(self.ptr.as_ptr(), &mut s),
                "kvc_session_cache_stats",
            )?;
            s
        };
        Ok(CacheStats {
            n_layers: s.n_layers,
            n_heads: s.n_heads,
            capacity: s.capacity,
            max_entries: s.max_entries,
            min_entries: s.min_entries,
            max_entries_now: s.max_entries_now,
            total_entries: s.total_entries,
            n_tokens_seen: s.n_tokens_seen,
            n_evictions: s.n_evictions,
        })
    }

    /// Entries cached per (layer, head), row-major [n_layers][n_heads].
    pub fn cache_counts(&self) -> Result<Vec<i64>> {
        let s = self.cache_stats()?;
        let mut counts = vec![0i64; (s.n_layers * s.n_heads) as usize];
        check(
            unsafe {
                sys::kvc_session_cache_counts(self.ptr.as_ptr(), counts.as_mut_ptr(), counts.len())
            },
            "kvc_session_cache_counts",
        )?;
        Ok(counts)
    }

    /// (positions in the text, token ids) of the entries of one (layer, head), oldest first.
    pub fn cache_entries(&self, layer: i32, head: i32) -> Result<(Vec<i64>, Vec<i32>)> {
        const CALL: &str = "kvc_session_cache_entries";
        let mut n = 0usize;
        let st = unsafe {
            sys::kvc_session_cache_entries(
                self.ptr.as_ptr(),
                layer,
                head,
                ptr::null_mut(),
                ptr::null_mut(),
                0,
                &mut n,
            )
        };
        if st != sys::KVC_OK && st != sys::KVC_ERR_BUFFER_TOO_SMALL {
            return Err(Error::from_library(st, CALL));
        }
        let mut positions = vec![0i64; n];
        let mut ids = vec![0i32; n];
        check(
            unsafe {
                sys::kvc_session_cache_entries(
                    self.ptr.as_ptr(),
                    layer,
                    head,
                    positions.as_mut_ptr(),
                    ids.as_mut_ptr(),
                    n,
                    &mut n,
                )
            },
            CALL,
        )?;
        positions.truncate(n);
        ids.truncate(n);
        Ok((positions, ids))
    }

    /// The values of the signal the policy ranks entries by, for the entries of one
    /// (layer, head) in [`Session::cache_entries`] order. `Status::NotFound` for policies
    /// that rank by no signal (streaming, sepllm, the full cache).
    pub fn cache_scores(&self, layer: i32, head: i32) -> Result<Vec<f32>> {
        const CALL: &str = "kvc_session_cache_scores";
        let mut n = 0usize;
        let st = unsafe {
            sys::kvc_session_cache_scores(
                self.ptr.as_ptr(),
                layer,
                head,
                ptr::null_mut(),
                0,
                &mut n,
            )
        };
        if st != sys::KVC_OK && st != sys::KVC_ERR_BUFFER_TOO_SMALL {
            return Err(Error::from_library(st, CALL));
        }
        let mut scores = vec![0f32; n];
        check(
            unsafe {
                sys::kvc_session_cache_scores(
                    self.ptr.as_ptr(),
                    layer,
                    head,
                    scores.as_mut_ptr(),
                    n,
                    &mut n,
                )
            },
            CALL,
        )?;
        scores.truncate(n);
        Ok(scores)
    }

    /// Manual eviction: keeps only the entries at `ranks` (0 = oldest, strictly increasing) of
    /// (layer, head); -1 for layer or head means all of them.
    pub fn keep(&mut self, layer: i32, head: i32, ranks: &[i32]) -> Result<()> {
        check(
            unsafe {
                sys::kvc_session_keep(self.ptr.as_ptr(), layer, head, ranks.as_ptr(), ranks.len())
            },
            "kvc_session_keep",
        )
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        unsafe { sys::kvc_session_free(self.ptr.as_ptr()) }
    }
}

// ---- Sampling and generation (ABI 1.2) -----------------------------------------------------------

/// The sampler's settings (`kvc_sampler_options`); `Default` is the library's defaults
/// (temperature 1, every filter off, repetition window 64, seed 0). The chain, in the order of
/// Hugging Face transformers: repetition penalty over the last `repetition_last_n` ids of the
/// history (-1: all, 0: none); `temperature` 0 is greedy, else the logits are divided by it;
/// `top_k` (0 = off), `top_p` (1 = off) and `min_p` (0 = off) filter the candidates; one token
/// is drawn with the SplitMix64 stream of `seed`, so a seed gives the same tokens on every run.
/// Values outside the ranges below fail with `Status::InvalidArgument` naming the field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerOptions {
    /// >= 0; 0 = greedy.
    pub temperature: f32,
    /// >= 0; 0 = off.
    pub top_k: i32,
    /// In (0, 1]; 1 = off.
    pub top_p: f32,
    /// In [0, 1]; 0 = off.
    pub min_p: f32,
    /// > 0; 1 = off; > 1 discourages repeats.
    pub repetition_penalty: f32,
    /// Tokens of history penalized: -1 all, 0 none.
    pub repetition_last_n: i32,
    pub seed: u64,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        let o: sys::kvc_sampler_options = unsafe { sys::init(sys::kvc_sampler_options_init_size) };
        SamplerOptions {
            temperature: o.temperature,
            top_k: o.top_k,
            top_p: o.top_p,
            min_p: o.min_p,
            repetition_penalty: o.repetition_penalty,
            repetition_last_n: o.repetition_last_n,
            seed: o.seed,
        }
    }
}

impl SamplerOptions {
    /// Greedy decoding: the largest logit (the lowest id among equal ones).
    pub fn greedy() -> Self {
        SamplerOptions {
            temperature: 0.0,
            ..SamplerOptions::default()
        }
    }

    fn raw(&self) -> sys::kvc_sampler_options {
        let mut o: sys::kvc_sampler_options =
            unsafe { sys::init(sys::kvc_sampler_options_init_size) };
        o.temperature = self.temperature;
        o.top_k = self.top_k;
        o.top_p = self.top_p;
        o.min_p = self.min_p;
        o.repetition_penalty = self.repetition_penalty;
        o.repetition_last_n = self.repetition_last_n;
        o.seed = self.seed;
        o
    }
}

/// The library's sampler (`kvc_sampler`): turns logits into a token. It keeps its history (for
/// the repetition penalty) and its place in the random stream across calls; pass it to
/// [`Session::generate_with`] to continue both over several generations. One thread at a time.
pub struct Sampler {
    ptr: NonNull<sys::kvc_sampler>,
}

unsafe impl Send for Sampler {}

impl Sampler {
    pub fn new(options: &SamplerOptions) -> Result<Sampler> {
        let o = options.raw();
        let mut out = ptr::null_mut();
        check(
            unsafe { sys::kvc_sampler_create(&o, &mut out) },
            "kvc_sampler_create",
        )?;
        Ok(Sampler {
            ptr: NonNull::new(out).expect("non-null"),
        })
    }

    /// Clears the history and restarts the random stream: the next tokens repeat the first.
    pub fn reset(&mut self) -> Result<()> {
        check(
            unsafe { sys::kvc_sampler_reset(self.ptr.as_ptr()) },
            "kvc_sampler_reset",
        )
    }

    /// Appends ids the sampler did not pick (a prompt) to the history.
    pub fn accept(&mut self, ids: &[i32]) -> Result<()> {
        check(
            unsafe { sys::kvc_sampler_accept(self.ptr.as_ptr(), ids.as_ptr(), ids.len()) },
            "kvc_sampler_accept",
        )
    }

    /// Samples one id from `logits` (e.g. [`Session::step`]'s with [`Logits::Last`]) and
    /// appends it to the history. NaN and -inf are never chosen.
    pub fn sample(&mut self, logits: &[f32]) -> Result<i32> {
        let mut token = 0i32;
        check(
            unsafe {
                sys::kvc_sampler_sample(
                    self.ptr.as_ptr(),
                    logits.as_ptr(),
                    logits.len(),
                    &mut token,
                )
            },
            "kvc_sampler_sample",
        )?;
        Ok(token)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        unsafe { sys::kvc_sampler_free(self.ptr.as_ptr()) }
    }
}

/// Options of [`Session::generate`] (`kvc_generate_options`); `Default`: 128 tokens, no stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Tokens to generate at most (>= 0).
    pub max_tokens: i32,
    /// Stop sequences (non-empty), matched on the generated text wherever token boundaries
    /// fall; needs the model's tokenizer.
    pub stop: Vec<String>,
    /// Ids that end the generation when sampled.
    pub stop_tokens: Vec<i32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        let o: sys::kvc_generate_options =
            unsafe { sys::init(sys::kvc_generate_options_init_size) };
        GenerateOptions {
            max_tokens: o.max_tokens,
            stop: Vec::new(),
            stop_tokens: Vec::new(),
        }
    }
}

/// Why a generation ended (`kvc_stop_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` were generated.
    MaxTokens,
    /// The text produced the stop sequence at this index of [`GenerateOptions::stop`].
    Sequence(usize),
    /// The token at this index of [`GenerateOptions::stop_tokens`] was sampled.
    Token(usize),
    /// The callback returned `false`.
    Callback,
    /// A reason this crate does not know (a newer library).
    Other(i32),
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// The generated ids, the last (stop) one included.
    pub tokens: Vec<i32>,
    /// The released text: every piece, concatenated (stop sequences and stop tokens excluded).
    pub text: String,
    pub stop_reason: StopReason,
}

/// What the C callback reaches through `user_data`: the caller's closure, the text so far, and
/// a panic of the closure to resume once the C call has returned.
struct TokenSink<'f> {
    on_token: &'f mut dyn FnMut(i32, &str) -> bool,
    text: Vec<u8>,
    panic: Option<Box<dyn std::any::Any + Send + 'static>>,
}

unsafe extern "C" fn token_trampoline(
    user_data: *mut std::os::raw::c_void,
    token: i32,
    piece: *const c_char,
    piece_len: usize,
) -> i32 {
    let sink = &mut *(user_data as *mut TokenSink);
    if sink.panic.is_some() {
        return 1;
    }
    let bytes: &[u8] = if piece_len == 0 || piece.is_null() {
        &[]
    } else {
        std::slice::from_raw_parts(piece as *const u8, piece_len)
    };
    sink.text.extend_from_slice(bytes);
    let text = String::from_utf8_lossy(bytes);
    let on_token = &mut sink.on_token;
    // A panic must not unwind into C: it stops the generation and is resumed afterwards.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on_token(token, &text))) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(payload) => {
            sink.panic = Some(payload);
            1
        }
    }
}

impl Session<'_> {
    /// Generates up to `options.max_tokens` tokens after `prompt` (appended to what the
    /// session holds; at least one id) with a new sampler of `sampling`, calling
    /// `on_token(id, piece)` as soon as each token is sampled; return `false` to stop after it.
    /// The pieces concatenate to the generated text; a piece is empty while its text could
    /// still begin a stop sequence or ends in a split UTF-8 character (a later piece then holds
    /// it). Afterwards the session holds the prompt and every generated token but the last,
    /// which was not fed: pass it as the first token of the next prompt to continue. A panic
    /// in `on_token` stops the generation and is resumed when the call returns.
    ///
    /// ```no_run
    /// # let model = kvc::Model::load("models/kjv-mini", &Default::default())?;
    /// # let mut session = model.session(&kvc::SessionOptions::new())?;
    /// # let ids = vec![1, 2, 3];
    /// let sampling = kvc::SamplerOptions { temperature: 0.8, seed: 42, ..Default::default() };
    /// let options = kvc::GenerateOptions { max_tokens: 64, stop: vec!["\n\n".into()],
    ///     ..Default::default() };
    /// let g = session.generate(&ids, &sampling, &options, |_, piece| {
    ///     print!("{}", piece);
    ///     true
    /// })?;
    /// println!("\n{:?}", g.stop_reason);
    /// # Ok::<(), kvc::Error>(())
    /// ```
    pub fn generate<F>(
        &mut self,
        prompt: &[i32],
        sampling: &SamplerOptions,
        options: &GenerateOptions,
        mut on_token: F,
    ) -> Result<Generation>
    where
        F: FnMut(i32, &str) -> bool,
    {
        let mut sampler = Sampler::new(sampling)?;
        self.run_generate(prompt, &mut sampler, options, &mut on_token)
    }

    /// [`Session::generate`] with a [`Sampler`] of the caller's, whose history and random
    /// stream go on from where they are.
    pub fn generate_with<F>(
        &mut self,
        prompt: &[i32],
        sampler: &mut Sampler,
        options: &GenerateOptions,
        mut on_token: F,
    ) -> Result<Generation>
    where
        F: FnMut(i32, &str) -> bool,
    {
        self.run_generate(prompt, sampler, options, &mut on_token)
    }

    /// [`Session::generate`] to the end, without a callback: the text, the ids and why it
    /// stopped.
    pub fn generate_text(
        &mut self,
        prompt: &[i32],
        sampling: &SamplerOptions,
        options: &GenerateOptions,
    ) -> Result<Generation> {
        self.generate(prompt, sampling, options, |_, _| true)
    }

    fn run_generate(
        &mut self,
        prompt: &[i32],
        sampler: &mut Sampler,
        options: &GenerateOptions,
        on_token: &mut dyn FnMut(i32, &str) -> bool,
    ) -> Result<Generation> {
        const CALL: &str = "kvc_generate";
        let stop = options
            .stop
            .iter()
            .map(|s| cstring(s, "a stop sequence", CALL))
            .collect::<Result<Vec<_>>>()?;
        let stop_ptrs: Vec<*const c_char> = stop.iter().map(|c| c.as_ptr()).collect();
        let mut sink = TokenSink {
            on_token,
            text: Vec::new(),
            panic: None,
        };
        let mut o: sys::kvc_generate_options =
            unsafe { sys::init(sys::kvc_generate_options_init_size) };
        o.max_tokens = options.max_tokens;
        o.stop = if stop_ptrs.is_empty() {
            ptr::null()
        } else {
            stop_ptrs.as_ptr()
        };
        o.n_stop = stop_ptrs.len();
        o.stop_tokens = if options.stop_tokens.is_empty() {
            ptr::null()
        } else {
            options.stop_tokens.as_ptr()
        };
        o.n_stop_tokens = options.stop_tokens.len();
        o.on_token = Some(token_trampoline);
        o.user_data = &mut sink as *mut TokenSink as *mut std::os::raw::c_void;
        let mut tokens = vec![0i32; options.max_tokens.max(0) as usize];
        let mut r: sys::kvc_generate_result =
            unsafe { sys::init(sys::kvc_generate_result_init_size) };
        let status = unsafe {
            sys::kvc_generate(
                self.ptr.as_ptr(),
                sampler.ptr.as_ptr(),
                prompt.as_ptr(),
                prompt.len(),
                &o,
                if tokens.is_empty() {
                    ptr::null_mut()
                } else {
                    tokens.as_mut_ptr()
                },
                tokens.len(),
                &mut r,
            )
        };
        // Read the library's message before anything else can call into it on this thread.
        let result = check(status, CALL);
        if let Some(payload) = sink.panic.take() {
            std::panic::resume_unwind(payload);
        }
        result?;
        tokens.truncate(r.n_tokens.max(0) as usize);
        let index = r.stop_index.max(0) as usize;
        let stop_reason = match r.stop_reason {
            sys::KVC_STOP_MAX_TOKENS => StopReason::MaxTokens,
            sys::KVC_STOP_SEQUENCE => StopReason::Sequence(index),
            sys::KVC_STOP_TOKEN => StopReason::Token(index),
            sys::KVC_STOP_CALLBACK => StopReason::Callback,
            other => StopReason::Other(other),
        };
        Ok(Generation {
            tokens,
            text: String::from_utf8_lossy(&sink.text).into_owned(),
            stop_reason,
        })
    }
}

// ---- Policies ----------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct ParamInfo {
    pub name: String,
    /// "int", "float", "bool", "choice", "int_list" or "string_list".
    pub kind: &'static str,
    pub default_value: Option<String>,
    pub min_value: f64,
    pub max_value: f64,
    pub choices: Vec<String>,
    pub help: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PolicyInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub path: String,
    pub params: Vec<ParamInfo>,
}

/// Every loadable policy on the search path (`extra_path` first, then KVC_POLICY_PATH).
pub fn list_policies(extra_path: Option<&str>) -> Result<Vec<PolicyInfo>> {
    const CALL: &str = "kvc_policy_list_load";
    let extra = match extra_path {
        Some(p) => Some(cstring(p, "the policy path", CALL)?),
        None => None,
    };
    let mut list = ptr::null_mut();
    check(
        unsafe {
            sys::kvc_policy_list_load(
                extra.as_ref().map_or(ptr::null(), |c| c.as_ptr()),
                &mut list,
            )
        },
        CALL,
    )?;
    let mut out = Vec::new();
    unsafe {
        for i in 0..sys::kvc_policy_list_size(list) {
            out.push(policy_info(&*sys::kvc_policy_list_get(list, i)));
        }
        sys::kvc_policy_list_free(list);
    }
    Ok(out)
}

const PARAM_TYPES: [&str; 6] = ["int", "float", "bool", "choice", "int_list", "string_list"];

unsafe fn policy_info(p: &sys::kvc_policy_info) -> PolicyInfo {
    let mut params = Vec::with_capacity(p.n_params);
    for k in 0..p.n_params {
        let q = &*p.params.add(k);
        params.push(ParamInfo {
            name: text(q.name).unwrap_or_default(),
            kind: PARAM_TYPES
                .get(q.type_ as usize)
                .copied()
                .unwrap_or("unknown"),
            default_value: text(q.default_value),
            min_value: q.min_value,
            max_value: q.max_value,
            choices: text(q.choices)
                .map(|c| c.split('|').map(str::to_string).collect())
                .unwrap_or_default(),
            help: text(q.help),
        });
    }
    PolicyInfo {
        name: text(p.name).unwrap_or_default(),
        version: text(p.version).unwrap_or_default(),
        description: text(p.description).unwrap_or_default(),
        path: text(p.path).unwrap_or_default(),
        params,
    }
}

/// Validates a policy and its parameters without a model.
pub fn check_policy(name: &str, params: &[(&str, &str)], extra_path: Option<&str>) -> Result<()> {
    const CALL: &str = "kvc_policy_check";
    let c_name = cstring(name, "the policy name", CALL)?;
    let extra = match extra_path {
        Some(p) => Some(cstring(p, "the policy path", CALL)?),
        None => None,
    };
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let (_strings, array) = param_array(&owned, CALL)?;
    check(
        unsafe {
            sys::kvc_policy_check(
                c_name.as_ptr(),
                extra.as_ref().map_or(ptr::null(), |c| c.as_ptr()),
                if array.is_empty() {
                    ptr::null()
                } else {
                    array.as_ptr()
                },
                array.len(),
            )
        },
        CALL,
    )
}

// ---- Typed parameters --------------------------------------------------------------------------

/// A typed parameter value, as [`PolicyParams::get`] returns it.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Choice(String),
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

/// A policy with typed parameter values (`kvc_policy_params`), for
/// [`Model::session_with_params`]. Each value is checked against the policy's schema when it
/// is set; setting one parameter twice is an error; unset parameters keep their defaults.
pub struct PolicyParams {
    ptr: NonNull<sys::kvc_policy_params>,
    info: PolicyInfo,
}

// Used by one thread at a time (`&mut self` setters); it may move between threads.
unsafe impl Send for PolicyParams {}

impl PolicyParams {
    /// Loads the policy (a name or a path to a .so; `extra_path`: ':'-separated folders searched
    /// first) and starts from its defaults.
    pub fn new(policy: &str, extra_path: Option<&str>) -> Result<PolicyParams> {
        const CALL: &str = "kvc_policy_params_create";
        let name = cstring(policy, "the policy name", CALL)?;
        let extra = match extra_path {
            Some(p) => Some(cstring(p, "the policy path", CALL)?),
            None => None,
        };
        let mut out = ptr::null_mut();
        check(
            unsafe {
                sys::kvc_policy_params_create(
                    name.as_ptr(),
                    extra.as_ref().map_or(ptr::null(), |c| c.as_ptr()),
                    &mut out,
                )
            },
            CALL,
        )?;
        let ptr = NonNull::new(out).expect("non-null");
        let info = unsafe { policy_info(&*sys::kvc_policy_params_policy(ptr.as_ptr())) };
        Ok(PolicyParams { ptr, info })
    }

    /// The policy: name, version, description, file and schema.
    pub fn policy(&self) -> &PolicyInfo {
        &self.info
    }

    fn name(name: &str, call: &'static str) -> Result<CString> {
        cstring(name, "a parameter name", call)
    }

    /// A value in the kvc_param text syntax ("128", "0.5", "true", "per_head", "0,1,2").
    pub fn set_text(&mut self, name: &str, value: &str) -> Result<()> {
        const CALL: &str = "kvc_policy_params_set_text";
        let (n, v) = (
            Self::name(name, CALL)?,
            cstring(value, "a parameter value", CALL)?,
        );
        check(
            unsafe { sys::kvc_policy_params_set_text(self.ptr.as_ptr(), n.as_ptr(), v.as_ptr()) },
            CALL,
        )
    }

    pub fn set_int(&mut self, name: &str, value: i64) -> Result<()> {
        const CALL: &str = "kvc_policy_params_set_int";
        let n = Self::name(name, CALL)?;
        check(
            unsafe { sys::kvc_policy_params_set_int(self.ptr.as_ptr(), n.as_ptr(), value) },
            CALL,
        )
    }

    pub fn set_float(&mut self, name: &str, value: f64) -> Result<()> {
        const CALL: &str = "kvc_policy_params_set_float";
        let n = Self::name(name, CALL)?;
        check(
            unsafe { sys::kvc_policy_params_set_float(self.ptr.as_ptr(), n.as_ptr(), value) },
            CALL,
        )
    }

    pub fn set_bool(&mut self, name: &str, value: bool) -> Result<()> {
        const CALL: &str = "kvc_policy_params_set_bool";
        let n = Self::name(name, CALL)?;
        check(
            unsafe {
                sys::kvc_policy_params_set_bool(self.ptr.as_ptr(), n.as_ptr(), value as c_int)
            },
            CALL,
        )
    }

    pub fn set_ints(&mut self, name: &str, values: &[i64]) -> Result<()> {
        const CALL: &str = "kvc_policy_params_set_ints";
        let n = Self::name(name, CALL)?;
        check(
            unsafe {
                sys::kvc_policy_params_set_ints(
                    self.ptr.as_ptr(),
                    n.as_ptr(),
                    values.as_ptr(),
                    values.len(),
                )
            },
            CALL,
        )
    }

    pub fn set_strings(&mut self, name: &str, values: &[&str]) -> Result<()> {
        const CALL: &str = "kvc_policy_params_set_strings";
        let n = Self::name(name, CALL)?;
        let owned = values
            .iter()
            .map(|v| cstring(v, "a list item", CALL))
            .collect::<Result<Vec<_>>>()?;
        let pointers: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
        check(
            unsafe {
                sys::kvc_policy_params_set_strings(
                    self.ptr.as_ptr(),
                    n.as_ptr(),
                    pointers.as_ptr(),
                    pointers.len(),
                )
            },
            CALL,
        )
    }

    /// The value of a parameter (its default when unset) and whether a setter gave it.
    pub fn get(&self, name: &str) -> Result<(ParamValue, bool)> {
        const CALL: &str = "kvc_policy_params_get";
        let index = self
            .info
            .params
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| Error {
                status: Status::NotFound,
                code: 5,
                message: format!("policy '{}' has no parameter '{}'", self.info.name, name),
                call: CALL,
            })?;
        unsafe {
            let mut v: sys::kvc_param_value = sys::init(sys::kvc_param_value_init_size);
            let mut is_set: c_int = 0;
            check(
                sys::kvc_policy_params_get(self.ptr.as_ptr(), index, &mut v, &mut is_set),
                CALL,
            )?;
            let strings = |n: usize| -> Vec<String> {
                (0..n)
                    .map(|k| text(*v.strings.add(k)).unwrap_or_default())
                    .collect()
            };
            let value = match self.info.params[index].kind {
                "int" => ParamValue::Int(v.i),
                "float" => ParamValue::Float(v.f),
                "bool" => ParamValue::Bool(v.i != 0),
                "choice" => {
                    ParamValue::Choice(strings(v.n_strings.min(1)).pop().unwrap_or_default())
                }
                "int_list" => ParamValue::Ints((0..v.n_ints).map(|k| *v.ints.add(k)).collect()),
                _ => ParamValue::Strings(strings(v.n_strings)),
            };
            Ok((value, is_set != 0))
        }
    }

    /// Creates and destroys one instance without a model, so the policy's own checks run.
    pub fn check(&self) -> Result<()> {
        check(
            unsafe { sys::kvc_policy_params_check(self.ptr.as_ptr()) },
            "kvc_policy_params_check",
        )
    }
}

impl Drop for PolicyParams {
    fn drop(&mut self) {
        unsafe { sys::kvc_policy_params_free(self.ptr.as_ptr()) }
    }
}
