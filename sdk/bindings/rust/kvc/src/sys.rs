//! Raw declarations of libkvc's C ABI (kvc/kvc.h), written by hand. Structs keep the header's
//! field order and C layout; enums are plain `c_int` values (a C enum is an int, and the library
//! may add values that this crate does not know). Structs that start with `struct_size` are
//! filled by the library's `*_init_size` functions with `size_of` the layout declared here (see
//! [`init`]), so a newer library, whose structs grew at the end, writes exactly this layout.
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_double, c_float, c_int, c_void};

pub const KVC_ABI_VERSION_MAJOR: u32 = 1;
/// The `*_init_size` functions and typed parameters arrived in ABI 1.1, sampling and
/// generation (linked by this crate) in 1.2.
pub const KVC_ABI_VERSION_MINOR_REQUIRED: u32 = 2;
pub const KVC_DEFAULT_BLOCK_SIZE: i32 = 64;

pub type kvc_status = c_int;
pub const KVC_OK: kvc_status = 0;
pub const KVC_ERR_BUFFER_TOO_SMALL: kvc_status = 7;

pub const KVC_BACKEND_AUTO: c_int = 0;
pub const KVC_BACKEND_CPU: c_int = 1;
pub const KVC_BACKEND_CUDA: c_int = 2;

pub const KVC_POSITIONS_SHIFT: c_int = 0;
pub const KVC_POSITIONS_ORIGINAL: c_int = 1;

pub const KVC_LOGITS_NONE: c_int = 0;
pub const KVC_LOGITS_LAST: c_int = 1;
pub const KVC_LOGITS_ALL: c_int = 2;

pub const KVC_SCORE_STREAM: c_int = 0;
pub const KVC_SCORE_PREFILL: c_int = 1;

#[repr(C)]
pub struct kvc_tokenizer {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct kvc_model {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct kvc_session {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct kvc_policy_list {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct kvc_policy_params {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct kvc_sampler {
    _opaque: [u8; 0],
}

pub const KVC_STOP_MAX_TOKENS: c_int = 0;
pub const KVC_STOP_SEQUENCE: c_int = 1;
pub const KVC_STOP_TOKEN: c_int = 2;
pub const KVC_STOP_CALLBACK: c_int = 3;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvc_param {
    pub name: *const c_char,
    pub value: *const c_char,
}

#[repr(C)]
pub struct kvc_model_options {
    pub struct_size: usize,
    pub backend: c_int,
    pub weight_dtype: c_int,
    pub n_threads: i32,
    pub device: i32,
    pub seed: u64,
}

#[repr(C)]
pub struct kvc_model_info {
    pub struct_size: usize,
    pub n_layers: i32,
    pub n_heads: i32,
    pub head_dim: i32,
    pub hidden_size: i32,
    pub intermediate_size: i32,
    pub vocab_size: i32,
    pub max_position_embeddings: i32,
    pub rotary_ndims: i32,
    pub rotary_base: c_float,
    pub layer_norm_eps: c_float,
    pub use_parallel_residual: i32,
    pub backend: c_int,
    pub weight_dtype: c_int,
    pub n_threads: i32,
    pub weight_bytes: u64,
}

#[repr(C)]
pub struct kvc_session_options {
    pub struct_size: usize,
    pub policy: *const c_char,
    pub params: *const kvc_param,
    pub n_params: usize,
    pub positions: c_int,
    pub max_entries: i64,
    pub policy_path: *const c_char,
    // ABI minor 1
    pub policy_params: *const kvc_policy_params,
}

#[repr(C)]
pub struct kvc_score_options {
    pub struct_size: usize,
    pub mode: c_int,
    // ABI minor 1
    pub cache_entries: *mut i64,
    pub evicted: *mut i64,
    pub logits: *mut c_float,
    pub logits_capacity: usize,
    pub next_token: *const i32,
    pub block_size: i32,
}

#[repr(C)]
pub struct kvc_score_report {
    pub struct_size: usize,
    pub block_size: i32,
    pub path: *const c_char,
    pub reason: *const c_char,
}

#[repr(C)]
pub struct kvc_param_value {
    pub struct_size: usize,
    pub type_: c_int,
    pub i: i64,
    pub f: c_double,
    pub ints: *const i64,
    pub n_ints: usize,
    pub strings: *const *const c_char,
    pub n_strings: usize,
}

#[repr(C)]
pub struct kvc_cache_stats {
    pub struct_size: usize,
    pub n_layers: i32,
    pub n_heads: i32,
    pub capacity: i64,
    pub max_entries: i64,
    pub min_entries: i64,
    pub max_entries_now: i64,
    pub total_entries: i64,
    pub n_tokens_seen: i64,
    pub n_evictions: i64,
}

#[repr(C)]
pub struct kvc_param_info {
    pub struct_size: usize,
    pub name: *const c_char,
    pub type_: c_int,
    pub default_value: *const c_char,
    pub min_value: c_double,
    pub max_value: c_double,
    pub choices: *const c_char,
    pub help: *const c_char,
}

#[repr(C)]
pub struct kvc_policy_info {
    pub struct_size: usize,
    pub name: *const c_char,
    pub version: *const c_char,
    pub description: *const c_char,
    pub path: *const c_char,
    pub n_params: usize,
    pub params: *const kvc_param_info,
}

// ABI minor 2: sampling and generation.

#[repr(C)]
pub struct kvc_sampler_options {
    pub struct_size: usize,
    pub temperature: c_float,
    pub top_k: i32,
    pub top_p: c_float,
    pub min_p: c_float,
    pub repetition_penalty: c_float,
    pub repetition_last_n: i32,
    pub seed: u64,
}

/// `kvc_token_callback`: return 0 to go on, nonzero to stop after this token.
pub type kvc_token_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        token: i32,
        piece: *const c_char,
        piece_len: usize,
    ) -> i32,
>;

#[repr(C)]
pub struct kvc_generate_options {
    pub struct_size: usize,
    pub max_tokens: i32,
    pub stop: *const *const c_char,
    pub n_stop: usize,
    pub stop_tokens: *const i32,
    pub n_stop_tokens: usize,
    pub on_token: kvc_token_callback,
    pub user_data: *mut c_void,
}

#[repr(C)]
pub struct kvc_generate_result {
    pub struct_size: usize,
    pub n_tokens: i32,
    pub stop_reason: c_int,
    pub stop_index: i32,
    pub text_len: u64,
}

extern "C" {
    pub fn kvc_abi_version() -> u32;
    pub fn kvc_version_string() -> *const c_char;
    pub fn kvc_last_error() -> *const c_char;
    pub fn kvc_status_name(status: kvc_status) -> *const c_char;

    pub fn kvc_tokenizer_load(path: *const c_char, out: *mut *mut kvc_tokenizer) -> kvc_status;
    pub fn kvc_tokenizer_free(tokenizer: *mut kvc_tokenizer);
    pub fn kvc_tokenize(
        tokenizer: *const kvc_tokenizer,
        text: *const c_char,
        text_len: usize,
        ids: *mut i32,
        capacity: usize,
        n_ids: *mut usize,
    ) -> kvc_status;
    pub fn kvc_detokenize(
        tokenizer: *const kvc_tokenizer,
        ids: *const i32,
        n_ids: usize,
        text: *mut c_char,
        capacity: usize,
        text_len: *mut usize,
    ) -> kvc_status;
    pub fn kvc_tokenizer_vocab_size(tokenizer: *const kvc_tokenizer) -> i32;
    pub fn kvc_tokenizer_token_to_id(tokenizer: *const kvc_tokenizer, token: *const c_char) -> i32;

    pub fn kvc_model_options_init_size(options: *mut kvc_model_options, struct_size: usize);
    pub fn kvc_model_load(
        path: *const c_char,
        options: *const kvc_model_options,
        out: *mut *mut kvc_model,
    ) -> kvc_status;
    pub fn kvc_model_free(model: *mut kvc_model);
    pub fn kvc_model_info_init_size(info: *mut kvc_model_info, struct_size: usize);
    pub fn kvc_model_get_info(model: *const kvc_model, info: *mut kvc_model_info) -> kvc_status;
    pub fn kvc_model_tokenizer(model: *const kvc_model) -> *const kvc_tokenizer;

    pub fn kvc_session_options_init_size(options: *mut kvc_session_options, struct_size: usize);
    pub fn kvc_session_create(
        model: *mut kvc_model,
        options: *const kvc_session_options,
        out: *mut *mut kvc_session,
    ) -> kvc_status;
    pub fn kvc_session_free(session: *mut kvc_session);
    pub fn kvc_session_reset(session: *mut kvc_session) -> kvc_status;
    pub fn kvc_session_step(
        session: *mut kvc_session,
        tokens: *const i32,
        n_tokens: usize,
        which: c_int,
        logits: *mut c_float,
        logits_capacity: usize,
    ) -> kvc_status;
    pub fn kvc_score_options_init_size(options: *mut kvc_score_options, struct_size: usize);
    pub fn kvc_score_report_init_size(report: *mut kvc_score_report, struct_size: usize);
    pub fn kvc_session_score_report(
        session: *const kvc_session,
        report: *mut kvc_score_report,
    ) -> kvc_status;
    pub fn kvc_session_score(
        session: *mut kvc_session,
        tokens: *const i32,
        n_tokens: usize,
        options: *const kvc_score_options,
        nll: *mut c_float,
        nll_capacity: usize,
    ) -> kvc_status;
    pub fn kvc_cache_stats_init_size(stats: *mut kvc_cache_stats, struct_size: usize);
    pub fn kvc_session_cache_stats(
        session: *const kvc_session,
        stats: *mut kvc_cache_stats,
    ) -> kvc_status;
    pub fn kvc_session_cache_counts(
        session: *const kvc_session,
        counts: *mut i64,
        capacity: usize,
    ) -> kvc_status;
    pub fn kvc_session_cache_entries(
        session: *const kvc_session,
        layer: i32,
        head: i32,
        positions: *mut i64,
        token_ids: *mut i32,
        capacity: usize,
        n_entries: *mut usize,
    ) -> kvc_status;
    pub fn kvc_session_policy_report(
        session: *const kvc_session,
        json: *mut c_char,
        capacity: usize,
        json_len: *mut usize,
    ) -> kvc_status;
    pub fn kvc_session_cache_scores(
        session: *const kvc_session,
        layer: i32,
        head: i32,
        scores: *mut c_float,
        capacity: usize,
        n_entries: *mut usize,
    ) -> kvc_status;
    pub fn kvc_session_keep(
        session: *mut kvc_session,
        layer: i32,
        head: i32,
        ranks: *const i32,
        n_ranks: usize,
    ) -> kvc_status;

    pub fn kvc_policy_list_load(
        extra_path: *const c_char,
        out: *mut *mut kvc_policy_list,
    ) -> kvc_status;
    pub fn kvc_policy_list_free(list: *mut kvc_policy_list);
    pub fn kvc_policy_list_size(list: *const kvc_policy_list) -> usize;
    pub fn kvc_policy_list_get(
        list: *const kvc_policy_list,
        index: usize,
    ) -> *const kvc_policy_info;
    pub fn kvc_policy_list_errors(list: *const kvc_policy_list) -> *const c_char;
    pub fn kvc_param_value_init_size(value: *mut kvc_param_value, struct_size: usize);
    pub fn kvc_policy_params_create(
        name_or_path: *const c_char,
        extra_path: *const c_char,
        out: *mut *mut kvc_policy_params,
    ) -> kvc_status;
    pub fn kvc_policy_params_free(params: *mut kvc_policy_params);
    pub fn kvc_policy_params_set_text(
        params: *mut kvc_policy_params,
        name: *const c_char,
        text: *const c_char,
    ) -> kvc_status;
    pub fn kvc_policy_params_set_int(
        params: *mut kvc_policy_params,
        name: *const c_char,
        value: i64,
    ) -> kvc_status;
    pub fn kvc_policy_params_set_float(
        params: *mut kvc_policy_params,
        name: *const c_char,
        value: c_double,
    ) -> kvc_status;
    pub fn kvc_policy_params_set_bool(
        params: *mut kvc_policy_params,
        name: *const c_char,
        value: c_int,
    ) -> kvc_status;
    pub fn kvc_policy_params_set_ints(
        params: *mut kvc_policy_params,
        name: *const c_char,
        values: *const i64,
        n_values: usize,
    ) -> kvc_status;
    pub fn kvc_policy_params_set_strings(
        params: *mut kvc_policy_params,
        name: *const c_char,
        values: *const *const c_char,
        n_values: usize,
    ) -> kvc_status;
    pub fn kvc_policy_params_policy(params: *const kvc_policy_params) -> *const kvc_policy_info;
    pub fn kvc_policy_params_get(
        params: *const kvc_policy_params,
        index: usize,
        value: *mut kvc_param_value,
        is_set: *mut c_int,
    ) -> kvc_status;
    pub fn kvc_policy_params_check(params: *const kvc_policy_params) -> kvc_status;
    pub fn kvc_policy_check(
        name_or_path: *const c_char,
        extra_path: *const c_char,
        params: *const kvc_param,
        n_params: usize,
    ) -> kvc_status;

    pub fn kvc_sampler_options_init_size(options: *mut kvc_sampler_options, struct_size: usize);
    pub fn kvc_sampler_create(
        options: *const kvc_sampler_options,
        out: *mut *mut kvc_sampler,
    ) -> kvc_status;
    pub fn kvc_sampler_free(sampler: *mut kvc_sampler);
    pub fn kvc_sampler_reset(sampler: *mut kvc_sampler) -> kvc_status;
    pub fn kvc_sampler_accept(
        sampler: *mut kvc_sampler,
        tokens: *const i32,
        n_tokens: usize,
    ) -> kvc_status;
    pub fn kvc_sampler_sample(
        sampler: *mut kvc_sampler,
        logits: *const c_float,
        n_logits: usize,
        token: *mut i32,
    ) -> kvc_status;
    pub fn kvc_generate_options_init_size(options: *mut kvc_generate_options, struct_size: usize);
    pub fn kvc_generate_result_init_size(result: *mut kvc_generate_result, struct_size: usize);
    pub fn kvc_generate(
        session: *mut kvc_session,
        sampler: *mut kvc_sampler,
        prompt: *const i32,
        n_prompt: usize,
        options: *const kvc_generate_options,
        tokens: *mut i32,
        tokens_capacity: usize,
        result: *mut kvc_generate_result,
    ) -> kvc_status;
}

/// A struct of this module's layout with the library's defaults: `init(kvc_model_options_init_size)`.
///
/// # Safety
/// `f` must be the `*_init_size` function of `T`, which writes a whole `T` of `size_of::<T>()`.
pub unsafe fn init<T>(f: unsafe extern "C" fn(*mut T, usize)) -> T {
    let mut value = std::mem::MaybeUninit::<T>::zeroed();
    f(value.as_mut_ptr(), std::mem::size_of::<T>());
    value.assume_init()
}
