//! `Qwen2Config`, mirroring transformers' `configuration_qwen2.py` field for field.

use serde::Deserialize;

use crate::LlmError;

/// The decoder's hyper-parameters, as written in `config.json` (or Qwen2-Audio's
/// `text_config`).
///
/// Mirrors [`Qwen2Config`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen2/configuration_qwen2.py)
/// field for field; a key missing from the file takes the transformers class default (the hub
/// files omit many, e.g. Qwen2-Audio's `hidden_size`). Unknown keys (`model_type`,
/// `torch_dtype`, `use_mrope`, ...) are ignored.
///
/// RoPE: transformers 4.x writes `rope_theta` (and optionally `rope_scaling`), transformers 5.x
/// writes `rope_parameters: {"rope_type": "default", "rope_theta": ...}`. Both are accepted;
/// see [`Qwen2Config::rope_theta`]. Call [`Qwen2Config::validate`] after parsing
/// ([`crate::Qwen2Decoder::load`] does it too).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Qwen2Config {
    /// Rows of `embed_tokens` and `lm_head`. Default 151936.
    pub vocab_size: usize,
    /// Model width. Default 4096.
    pub hidden_size: usize,
    /// MLP width. Default 22016.
    pub intermediate_size: usize,
    /// Number of decoder layers. Default 32.
    pub num_hidden_layers: usize,
    /// Number of query heads. Default 32.
    pub num_attention_heads: usize,
    /// Number of key/value heads (GQA). Default 32 (the class default, not
    /// `num_attention_heads`); an explicit `null` means `num_attention_heads`. Read it through
    /// [`Qwen2Config::num_kv_heads`].
    pub num_key_value_heads: Option<usize>,
    /// Per-head width. Not a `Qwen2Config` field, but honoured by the modeling code when
    /// present; otherwise `hidden_size / num_attention_heads`. Read it through
    /// [`Qwen2Config::head_dim`].
    pub head_dim: Option<usize>,
    /// MLP activation. Default `silu`.
    pub hidden_act: HiddenAct,
    /// Informational; RoPE positions are not limited by it. Default 32768.
    pub max_position_embeddings: usize,
    /// Unused at inference. Default 0.02.
    pub initializer_range: f64,
    /// RMSNorm epsilon. Default 1e-6.
    pub rms_norm_eps: f64,
    /// Unused here (the caller owns the cache). Default true.
    pub use_cache: bool,
    /// Reuse `embed_tokens` as `lm_head`. Default false.
    pub tie_word_embeddings: bool,
    /// RoPE base (transformers 4.x). Default 10000.0. Superseded by `rope_parameters.rope_theta`
    /// or `rope_scaling.rope_theta` when those are present.
    pub rope_theta: f64,
    /// Legacy RoPE scaling dict (transformers 4.x); only `rope_type: "default"` is supported.
    pub rope_scaling: Option<RopeParameters>,
    /// RoPE dict (transformers 5.x); only `rope_type: "default"` is supported.
    pub rope_parameters: Option<RopeParameters>,
    /// Whether any layer uses sliding-window attention. Default false (then `sliding_window`
    /// is ignored, as in transformers).
    pub use_sliding_window: bool,
    /// Window size in positions (a query sees keys at distance `< sliding_window`). Default
    /// 4096.
    pub sliding_window: Option<usize>,
    /// Without `layer_types`, layers `i >= max_window_layers` slide. Default 28.
    pub max_window_layers: usize,
    /// Per-layer `"full_attention"` / `"sliding_attention"`; overrides `max_window_layers`.
    pub layer_types: Option<Vec<String>>,
    /// Unused at inference. Default 0.0.
    pub attention_dropout: f64,
    /// Padding token. Default none.
    pub pad_token_id: Option<u32>,
    /// Beginning-of-sequence token. Default none.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token(s): a single id or a list. Default none.
    pub eos_token_id: Option<TokenIds>,
}

impl Default for Qwen2Config {
    fn default() -> Self {
        Self {
            vocab_size: 151_936,
            hidden_size: 4096,
            intermediate_size: 22_016,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: Some(32),
            head_dim: None,
            hidden_act: HiddenAct::Silu,
            max_position_embeddings: 32_768,
            initializer_range: 0.02,
            rms_norm_eps: 1e-6,
            use_cache: true,
            tie_word_embeddings: false,
            rope_theta: 10_000.0,
            rope_scaling: None,
            rope_parameters: None,
            use_sliding_window: false,
            sliding_window: Some(4096),
            max_window_layers: 28,
            layer_types: None,
            attention_dropout: 0.0,
            pad_token_id: None,
            bos_token_id: None,
            eos_token_id: None,
        }
    }
}

/// MLP activation, named as in transformers' `ACT2FN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum HiddenAct {
    /// `x * sigmoid(x)` (`"silu"`, `"swish"`).
    #[default]
    #[serde(rename = "silu", alias = "swish")]
    Silu,
    /// Exact, erf-based GELU (`"gelu"`).
    #[serde(rename = "gelu")]
    Gelu,
    /// Tanh-approximated GELU (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    #[serde(rename = "gelu_pytorch_tanh", alias = "gelu_new")]
    GeluTanh,
    /// `max(x, 0)` (`"relu"`).
    #[serde(rename = "relu")]
    Relu,
}

/// A RoPE parameter dict (`rope_parameters` in transformers 5.x, `rope_scaling` in 4.x).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct RopeParameters {
    /// The RoPE variant; only `"default"` is supported.
    pub rope_type: Option<String>,
    /// The legacy spelling of `rope_type`, used when `rope_type` is absent.
    #[serde(rename = "type")]
    pub legacy_type: Option<String>,
    /// RoPE base; takes precedence over the top-level `rope_theta`.
    pub rope_theta: Option<f64>,
    /// Fraction of `head_dim` that is rotated; only 1.0 (or absent) is supported.
    pub partial_rotary_factor: Option<f64>,
}

impl RopeParameters {
    fn kind(&self) -> Option<&str> {
        self.rope_type.as_deref().or(self.legacy_type.as_deref())
    }
}

/// One token id or a list of them, as `eos_token_id` may be written either way.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            Self::One(id) => vec![*id],
            Self::Many(ids) => ids.clone(),
        }
    }
}

/// The layer type strings transformers uses in `layer_types`.
const FULL_ATTENTION: &str = "full_attention";
const SLIDING_ATTENTION: &str = "sliding_attention";

impl Qwen2Config {
    /// Per-head width: `head_dim` when given, else `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or_else(|| self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Number of key/value heads: `num_key_value_heads`, or `num_attention_heads` when it was
    /// explicitly `null`.
    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// The RoPE base actually used: `rope_parameters.rope_theta`, else
    /// `rope_scaling.rope_theta`, else `rope_theta`.
    pub fn rope_theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.rope_theta)
            .or_else(|| self.rope_scaling.as_ref().and_then(|p| p.rope_theta))
            .unwrap_or(self.rope_theta)
    }

    /// The sliding window of layer `layer`, if that layer slides.
    ///
    /// As in transformers: only with `use_sliding_window` and a `sliding_window`; the layer
    /// slides when `layer_types[layer] == "sliding_attention"`, or, without `layer_types`,
    /// when `layer >= max_window_layers`. A query at position `q` then sees keys at positions
    /// `k` with `q - sliding_window < k <= q`.
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        if !self.use_sliding_window {
            return None;
        }
        let window = self.sliding_window?;
        let sliding = match &self.layer_types {
            Some(types) => types.get(layer).is_some_and(|t| t == SLIDING_ATTENTION),
            None => layer >= self.max_window_layers,
        };
        sliding.then_some(window)
    }

    /// Checks sizes and their divisibility, the RoPE variant and `layer_types`.
    ///
    /// Errors name the field and its value.
    pub fn validate(&self) -> Result<(), LlmError> {
        let nonzero = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
        ];
        for (field, value) in nonzero {
            if value == 0 {
                return Err(invalid(field, value, "must be positive"));
            }
        }
        let kv_heads = self.num_kv_heads();
        if kv_heads == 0 {
            return Err(invalid("num_key_value_heads", kv_heads, "must be positive"));
        }
        if !self.num_attention_heads.is_multiple_of(kv_heads) {
            return Err(invalid(
                "num_key_value_heads",
                kv_heads,
                format!(
                    "must divide num_attention_heads = {}",
                    self.num_attention_heads
                ),
            ));
        }
        match self.head_dim {
            Some(head_dim) if head_dim == 0 || !head_dim.is_multiple_of(2) => {
                return Err(invalid(
                    "head_dim",
                    head_dim,
                    "must be positive and even (RoPE rotates pairs)",
                ));
            }
            Some(_) => {}
            None => {
                if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
                    return Err(invalid(
                        "hidden_size",
                        self.hidden_size,
                        format!(
                            "must be divisible by num_attention_heads = {} (or set head_dim)",
                            self.num_attention_heads
                        ),
                    ));
                }
                let head_dim = self.head_dim();
                if !head_dim.is_multiple_of(2) {
                    return Err(invalid(
                        "hidden_size",
                        self.hidden_size,
                        format!("gives an odd head_dim {head_dim}; RoPE rotates pairs"),
                    ));
                }
            }
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(invalid(
                "rms_norm_eps",
                self.rms_norm_eps,
                "must be finite and >= 0",
            ));
        }
        self.validate_rope()?;
        self.validate_window()?;
        Ok(())
    }

    fn validate_rope(&self) -> Result<(), LlmError> {
        let dicts = [
            (
                "rope_parameters",
                "rope_parameters.rope_type",
                &self.rope_parameters,
            ),
            ("rope_scaling", "rope_scaling.rope_type", &self.rope_scaling),
        ];
        for (field, type_field, params) in dicts {
            let Some(params) = params else { continue };
            match params.kind() {
                Some("default") => {}
                Some(other) => {
                    return Err(LlmError::Unsupported {
                        field: type_field,
                        value: format!("{other:?}"),
                        reason: "only the \"default\" RoPE is implemented".into(),
                    });
                }
                None => {
                    return Err(LlmError::Unsupported {
                        field,
                        value: format!("{params:?}"),
                        reason: "no `rope_type` (per-layer-type RoPE dicts are not supported)"
                            .into(),
                    });
                }
            }
            if let Some(factor) = params.partial_rotary_factor {
                if factor != 1.0 {
                    return Err(LlmError::Unsupported {
                        field: "rope_parameters.partial_rotary_factor",
                        value: factor.to_string(),
                        reason: "only full-width RoPE (1.0) is implemented".into(),
                    });
                }
            }
        }
        let theta = self.rope_theta();
        if !(theta.is_finite() && theta > 0.0) {
            return Err(invalid("rope_theta", theta, "must be finite and positive"));
        }
        Ok(())
    }

    fn validate_window(&self) -> Result<(), LlmError> {
        if let Some(types) = &self.layer_types {
            if types.len() != self.num_hidden_layers {
                return Err(invalid(
                    "layer_types",
                    format!("{} entries", types.len()),
                    format!(
                        "must have num_hidden_layers = {} entries",
                        self.num_hidden_layers
                    ),
                ));
            }
            if let Some(bad) = types
                .iter()
                .find(|t| *t != FULL_ATTENTION && *t != SLIDING_ATTENTION)
            {
                return Err(LlmError::Unsupported {
                    field: "layer_types",
                    value: format!("{bad:?}"),
                    reason: "only \"full_attention\" and \"sliding_attention\" are known".into(),
                });
            }
        }
        if self.use_sliding_window && self.sliding_window == Some(0) {
            return Err(invalid(
                "sliding_window",
                0,
                "must be positive when use_sliding_window is true",
            ));
        }
        Ok(())
    }
}

fn invalid(
    field: &'static str,
    value: impl std::fmt::Display,
    reason: impl Into<String>,
) -> LlmError {
    LlmError::InvalidConfig {
        field,
        value: value.to_string(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Qwen2Config {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn missing_keys_take_transformers_defaults() {
        let cfg = parse(
            r#"{"intermediate_size": 11008, "vocab_size": 156032, "model_type": "qwen2", "use_mrope": false}"#,
        );
        assert_eq!(cfg.intermediate_size, 11008);
        assert_eq!(cfg.vocab_size, 156032);
        assert_eq!(cfg.hidden_size, 4096);
        assert_eq!(cfg.num_hidden_layers, 32);
        assert_eq!(cfg.num_attention_heads, 32);
        assert_eq!(cfg.num_kv_heads(), 32);
        assert_eq!(cfg.head_dim(), 128);
        assert_eq!(cfg.hidden_act, HiddenAct::Silu);
        assert_eq!(cfg.max_position_embeddings, 32768);
        assert_eq!(cfg.rms_norm_eps, 1e-6);
        assert!(!cfg.tie_word_embeddings);
        assert_eq!(cfg.rope_theta(), 10000.0);
        assert!(!cfg.use_sliding_window);
        assert_eq!(cfg.sliding_window, Some(4096));
        assert_eq!(cfg.max_window_layers, 28);
        assert_eq!(cfg.eos_token_id, None);
        cfg.validate().unwrap();
        assert_eq!(
            cfg,
            Qwen2Config {
                intermediate_size: 11008,
                vocab_size: 156032,
                ..Default::default()
            }
        );
    }

    #[test]
    fn explicit_null_kv_heads_means_mha() {
        let cfg = parse(
            r#"{"num_attention_heads": 8, "num_key_value_heads": null, "sliding_window": null}"#,
        );
        assert_eq!(cfg.num_kv_heads(), 8);
        assert_eq!(cfg.sliding_window, None);
    }

    #[test]
    fn eos_single_or_list() {
        let cfg = parse(r#"{"eos_token_id": 151645}"#);
        assert_eq!(cfg.eos_token_id.unwrap().to_vec(), vec![151645]);
        let cfg = parse(r#"{"eos_token_id": [151643, 151645]}"#);
        assert_eq!(cfg.eos_token_id.unwrap().to_vec(), vec![151643, 151645]);
    }

    #[test]
    fn activations_parse_by_hf_name() {
        for (name, act) in [
            ("silu", HiddenAct::Silu),
            ("swish", HiddenAct::Silu),
            ("gelu", HiddenAct::Gelu),
            ("gelu_new", HiddenAct::GeluTanh),
            ("gelu_pytorch_tanh", HiddenAct::GeluTanh),
            ("relu", HiddenAct::Relu),
        ] {
            let cfg = parse(&format!(r#"{{"hidden_act": "{name}"}}"#));
            assert_eq!(cfg.hidden_act, act, "{name}");
        }
        assert!(serde_json::from_str::<Qwen2Config>(r#"{"hidden_act": "mish"}"#).is_err());
    }

    #[test]
    fn rope_parameters_form_is_accepted() {
        let cfg =
            parse(r#"{"rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}}"#);
        cfg.validate().unwrap();
        assert_eq!(cfg.rope_theta(), 1e6);
        let cfg = parse(r#"{"rope_theta": 500.0, "rope_scaling": {"type": "default"}}"#);
        cfg.validate().unwrap();
        assert_eq!(cfg.rope_theta(), 500.0);
        let cfg = parse(r#"{"rope_theta": 500.0, "rope_scaling": null}"#);
        cfg.validate().unwrap();
        assert_eq!(cfg.rope_theta(), 500.0);
    }

    #[test]
    fn unknown_rope_type_is_unsupported() {
        let cfg = parse(
            r#"{"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6}}"#,
        );
        let err = cfg.validate().unwrap_err();
        assert!(matches!(
            err,
            LlmError::Unsupported {
                field: "rope_parameters.rope_type",
                ..
            }
        ));
        assert!(err.to_string().contains("yarn"), "{err}");
        let cfg = parse(r#"{"rope_scaling": {"type": "dynamic", "factor": 2.0}}"#);
        let err = cfg.validate().unwrap_err();
        assert!(err.to_string().contains("rope_scaling.rope_type"), "{err}");
        let cfg = parse(r#"{"rope_parameters": {"full_attention": {"rope_type": "default"}}}"#);
        assert!(matches!(
            cfg.validate(),
            Err(LlmError::Unsupported {
                field: "rope_parameters",
                ..
            })
        ));
    }

    #[test]
    fn validate_names_field_and_value() {
        let cases: [(Qwen2Config, &str, &str); 6] = [
            (
                Qwen2Config {
                    hidden_size: 100,
                    num_attention_heads: 3,
                    num_key_value_heads: Some(3),
                    ..Default::default()
                },
                "hidden_size",
                "100",
            ),
            (
                Qwen2Config {
                    num_key_value_heads: Some(5),
                    ..Default::default()
                },
                "num_key_value_heads",
                "5",
            ),
            (
                Qwen2Config {
                    vocab_size: 0,
                    ..Default::default()
                },
                "vocab_size",
                "0",
            ),
            (
                Qwen2Config {
                    head_dim: Some(7),
                    ..Default::default()
                },
                "head_dim",
                "7",
            ),
            (
                Qwen2Config {
                    layer_types: Some(vec!["full_attention".into()]),
                    ..Default::default()
                },
                "layer_types",
                "1 entries",
            ),
            (
                Qwen2Config {
                    rope_theta: -1.0,
                    ..Default::default()
                },
                "rope_theta",
                "-1",
            ),
        ];
        for (cfg, field, value) in cases {
            let err = cfg.validate().unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("`{field}`")) && msg.contains(value),
                "{msg}"
            );
        }
    }

    #[test]
    fn sliding_layers_follow_transformers() {
        let mut cfg = Qwen2Config {
            num_hidden_layers: 4,
            max_window_layers: 2,
            sliding_window: Some(3),
            ..Default::default()
        };
        assert_eq!(
            (0..4).map(|i| cfg.layer_window(i)).collect::<Vec<_>>(),
            vec![None; 4]
        );
        cfg.use_sliding_window = true;
        assert_eq!(
            (0..4).map(|i| cfg.layer_window(i)).collect::<Vec<_>>(),
            vec![None, None, Some(3), Some(3)]
        );
        cfg.layer_types = Some(
            [
                "sliding_attention",
                "full_attention",
                "sliding_attention",
                "full_attention",
            ]
            .map(String::from)
            .to_vec(),
        );
        assert_eq!(
            (0..4).map(|i| cfg.layer_window(i)).collect::<Vec<_>>(),
            vec![Some(3), None, Some(3), None]
        );
        cfg.validate().unwrap();
    }
}
