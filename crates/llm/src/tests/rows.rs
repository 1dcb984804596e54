//! Quantised loads by rows: a [`RowReader`] gives the weights a load quantises one chunk of
//! rows at a time, and the blocks are those of quantising each tensor read whole.

use std::sync::{Arc, Mutex};

use candle_nn::var_builder::SimpleBackend;

use super::*;

/// One read of a tensor: its name and the dims read.
type Read = (String, Vec<usize>);

/// A checkpoint in a tensor map, read whole through a `VarBuilder` backend or by ranges of
/// rows through [`RowReader`], recording every read.
#[derive(Clone)]
struct RecordingReads {
    tensors: Arc<HashMap<String, Tensor>>,
    reads: Arc<Mutex<Vec<Read>>>,
}

impl RecordingReads {
    fn new(tensors: HashMap<String, Tensor>) -> Self {
        Self {
            tensors: Arc::new(tensors),
            reads: Arc::default(),
        }
    }

    fn take(&self) -> Vec<Read> {
        std::mem::take(&mut *self.reads.lock().unwrap())
    }

    fn record(&self, name: &str, t: &Tensor) {
        let dims = t.dims().to_vec();
        self.reads.lock().unwrap().push((name.to_string(), dims));
    }

    fn find(&self, name: &str) -> candle_core::Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.into() })
    }
}

impl SimpleBackend for RecordingReads {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        assert_eq!(t.shape(), &s, "{name}");
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.find(name)?;
        self.record(name, t);
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

impl RowReader for RecordingReads {
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        Some(self.tensors.get(name)?.dims().to_vec())
    }

    fn read_rows(&self, name: &str, rows: std::ops::Range<usize>) -> candle_core::Result<Tensor> {
        let t = self.find(name)?.narrow(0, rows.start, rows.len())?.copy()?;
        self.record(name, &t);
        Ok(t)
    }
}

/// A load through a `RowReader` reads every weight it quantises (each `q8_0`/`q4_0`/`q4_k`
/// linear, the `q8_0` head and embedding table) one chunk of rows at a time, never whole (the
/// same recorder sees the reader-less load read the head and table whole), and makes the same
/// blocks, bit for bit, as quantising each tensor read whole; its logits are the same too.
/// Rows of 256 and 512 fit `q4_k`'s super-blocks; the chunks hold 5 or 2 rows, uneven.
#[test]
fn quantised_loads_read_by_rows_make_the_same_blocks() {
    let base = Qwen2Config {
        vocab_size: 48,
        hidden_size: 256,
        intermediate_size: 512,
        ..tiny_cfg()
    };
    let chunk_weights = 5 * 256 + 3;
    let xs = embeds(&base, 1, 3, 46);
    for tied in [false, true] {
        let cfg = Qwen2Config {
            tie_word_embeddings: tied,
            ..base.clone()
        };
        let w: HashMap<String, Tensor> = weights(&cfg, 36)
            .into_iter()
            .map(|(k, t)| (k, t.to_dtype(DType::BF16).unwrap()))
            .collect();
        let reads = RecordingReads::new(w.clone());
        for format in [WeightFormat::Q8_0, WeightFormat::Q4_0, WeightFormat::Q4K] {
            let load = |rows: Option<&dyn RowReader>| {
                let vb =
                    VarBuilder::from_backend(Box::new(reads.clone()), DType::BF16, Device::Cpu);
                let storage = crate::model::Storage {
                    format: Some(format),
                    rows,
                    chunk_weights,
                };
                Qwen2Decoder::load_impl(&cfg, vb.pp(PREFIX), storage).unwrap()
            };
            let what = format!("{format}, tied {tied}");
            // The tensors some read of which held more than a chunk of rows.
            let whole_reads = |reads: &[Read]| -> Vec<String> {
                let mut names: Vec<String> = reads
                    .iter()
                    .filter(|(_, d)| d.len() == 2 && d[0] > (chunk_weights / d[1]).max(1))
                    .map(|(n, _)| n[PREFIX.len() + 1..].to_string())
                    .collect();
                names.sort();
                names
            };
            let whole = load(None);
            // Without a reader every weight, the head and table included, is read whole:
            // what this test catches.
            let listed = whole_reads(&reads.take());
            assert!(
                listed.contains(&"model.embed_tokens.weight".to_string()),
                "{what}"
            );
            assert_eq!(
                listed.contains(&"lm_head.weight".to_string()),
                !tied,
                "{what}"
            );

            let by_rows = load(Some(&reads));
            let seen = reads.take();
            assert_eq!(whole_reads(&seen), Vec::<String>::new(), "{what}");
            let head = format!("{PREFIX}.lm_head.weight");
            let table = format!("{PREFIX}.model.embed_tokens.weight");
            for name in [&table].into_iter().chain((!tied).then_some(&head)) {
                let rows: usize = seen
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, d)| d[0])
                    .sum();
                assert_eq!(rows, cfg.vocab_size, "{what}: {name} read by rows once");
            }
            let (a, b) = (by_rows.quantized_blocks(), whole.quantized_blocks());
            // 2 layers x 4 linears, the head (tied: the table's own blocks) and the table.
            assert_eq!(a.len(), 10, "{what}");
            assert!(a == b, "{what}: blocks differ");
            assert_eq!(by_rows.head_weight_format(), WeightFormat::Q8_0);
            assert_eq!(by_rows.head_shares_embedding(), tied, "{what}");
            let la = by_rows
                .forward_embeds_all(&xs, &mut by_rows.new_cache())
                .unwrap();
            let lb = whole
                .forward_embeds_all(&xs, &mut whole.new_cache())
                .unwrap();
            assert_eq!(max_diff(&la, &lb), 0.0, "{what}");
        }
    }
}

/// The size plan's transient buffer of a quantised load is one chunk of rows (its mapped
/// pages and copy in the read dtype, and f32), not the tensor: 64 MiB for the 7B's
/// 156032 x 4096 bf16 head in q8_0 rather than its 1.3 GB; a tensor smaller than a chunk is
/// read at once, and float storage quantises nothing (bf16 and f16 pack a linear at a time).
#[test]
fn the_size_plan_transient_is_one_chunk_of_rows() {
    let cfg = storage_cfg();
    let transient = |read: DType, format, shape: &[usize]| {
        SizePlan::new(&cfg, read, Some(format))
            .bytes([("lm_head.weight", shape)])
            .transient
    };
    let chunk = crate::linear::QUANTIZE_CHUNK_WEIGHTS as u64;
    let head = [156_032, 4096];
    assert_eq!(transient(DType::BF16, WeightFormat::Q8_0, &head), chunk * 8);
    assert_eq!(transient(DType::F32, WeightFormat::Q4K, &head), chunk * 12);
    assert_eq!(
        transient(DType::BF16, WeightFormat::Q8_0, &[48, 64]),
        48 * 64 * 8
    );
    // bf16 and f16 pack each linear for the decode kernels beside its row-major copy; f32
    // keeps its own.
    for half in [WeightFormat::Bf16, WeightFormat::F16] {
        assert_eq!(transient(DType::BF16, half, &head), 156_032 * 4096 * 2);
    }
    assert_eq!(transient(DType::F32, WeightFormat::F32, &head), 0);
}

/// A quantised load by rows names a missing or misshapen weight as a whole read does.
#[test]
fn rows_of_missing_or_misshapen_weights_are_named() {
    let cfg = storage_cfg();
    let mut w = weights(&cfg, 37);
    let name = format!("{PREFIX}.model.layers.1.mlp.up_proj.weight");
    w.insert(name.clone(), Rng(3).tensor(&[96, 32], 0.3, 0.0));
    let reads = RecordingReads::new(w.clone());
    let vb = VarBuilder::from_backend(Box::new(reads.clone()), DType::F32, Device::Cpu);
    let options = LoadOptions {
        weights: WeightFormat::Q8_0,
        compute: auris_kernels::round::Compute::F32,
    };
    let err = Qwen2Decoder::load_with_rows(&cfg, vb.pp(PREFIX), &options, &reads).unwrap_err();
    assert!(
        matches!(&err, LlmError::Load { name: n, .. } if n == &name),
        "{err}"
    );
    w.remove(&name);
    let reads = RecordingReads::new(w);
    let vb = VarBuilder::from_backend(Box::new(reads.clone()), DType::F32, Device::Cpu);
    let err = Qwen2Decoder::load_with_rows(&cfg, vb.pp(PREFIX), &options, &reads).unwrap_err();
    assert!(
        matches!(&err, LlmError::MissingTensor { name: n } if n == &name),
        "{err}"
    );
}
