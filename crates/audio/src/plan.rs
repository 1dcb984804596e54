//! What loading the encoder keeps in memory: the tensors
//! [`Qwen2AudioEncoder::load_with`](crate::encoder::Qwen2AudioEncoder::load_with) reads and
//! the dtype each is kept in, so a memory estimate asks the loader instead of matching names
//! (the tests check this list against what a load actually asks for).

use candle_core::DType;

use crate::config::EncoderConfig;

/// How the encoder keeps a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncoderPart {
    /// A linear layer's weight or bias (attention projections, `fc1`, `fc2`): kept in the
    /// `VarBuilder`'s dtype (the storage dtype).
    Linear,
    /// Convolutions, positions and norms: kept in the compute dtype.
    Other,
}

/// Every tensor the encoder of `cfg` reads, relative to its `VarBuilder`, with its part.
pub fn tensor_parts(cfg: &EncoderConfig) -> Vec<(String, EncoderPart)> {
    let both = |p: &str| ["weight", "bias"].map(|w| format!("{p}.{w}"));
    let mut names: Vec<(String, EncoderPart)> = ["conv1", "conv2"]
        .iter()
        .flat_map(|c| both(c))
        .chain(["embed_positions.weight".to_string()])
        .map(|n| (n, EncoderPart::Other))
        .collect();
    for i in 0..cfg.encoder_layers {
        let p = format!("layers.{i}");
        let mut linear = vec![format!("{p}.self_attn.k_proj.weight")];
        for proj in [
            "self_attn.q_proj",
            "self_attn.v_proj",
            "self_attn.out_proj",
            "fc1",
            "fc2",
        ] {
            linear.extend(both(&format!("{p}.{proj}")));
        }
        names.extend(linear.into_iter().map(|n| (n, EncoderPart::Linear)));
        for norm in ["self_attn_layer_norm", "final_layer_norm"] {
            names.extend(both(&format!("{p}.{norm}")).map(|n| (n, EncoderPart::Other)));
        }
    }
    names.extend(both("layer_norm").map(|n| (n, EncoderPart::Other)));
    names
}

impl EncoderPart {
    /// The dtype the encoder keeps a tensor of this part in when its linear layers are stored
    /// in `linear` and it computes in `compute`.
    pub fn dtype(self, linear: DType, compute: DType) -> DType {
        match self {
            EncoderPart::Linear => linear,
            EncoderPart::Other => compute,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use candle_core::{Device, Shape, Tensor};
    use candle_nn::var_builder::SimpleBackend;
    use candle_nn::{Init, VarBuilder};

    use super::*;
    use crate::encoder::Qwen2AudioEncoder;

    /// Zeros of any name and shape, recording the dtype each name was asked in.
    struct Recorder(Arc<Mutex<HashMap<String, DType>>>);

    impl SimpleBackend for Recorder {
        fn get(
            &self,
            s: Shape,
            name: &str,
            _: Init,
            dtype: DType,
            dev: &Device,
        ) -> candle_core::Result<Tensor> {
            self.0.lock().unwrap().insert(name.to_string(), dtype);
            Tensor::zeros(s, dtype, dev)
        }

        fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
            candle_core::bail!("{name}: no shape")
        }

        fn contains_tensor(&self, _: &str) -> bool {
            true
        }
    }

    /// The list is exactly what a load reads, each tensor in the dtype the list gives it.
    #[test]
    fn the_listed_tensors_are_what_the_load_reads_in_their_dtypes() {
        let cfg = EncoderConfig {
            num_mel_bins: 8,
            encoder_layers: 2,
            encoder_attention_heads: 2,
            encoder_ffn_dim: 16,
            d_model: 8,
            max_source_positions: 4,
            ..EncoderConfig::default()
        };
        let read = Arc::new(Mutex::new(HashMap::new()));
        let vb =
            VarBuilder::from_backend(Box::new(Recorder(read.clone())), DType::BF16, Device::Cpu);
        Qwen2AudioEncoder::load_with(&cfg, vb, DType::F32).unwrap();
        let listed: HashMap<String, DType> = tensor_parts(&cfg)
            .into_iter()
            .map(|(n, part)| (n, part.dtype(DType::BF16, DType::F32)))
            .collect();
        assert_eq!(*read.lock().unwrap(), listed);
    }
}
