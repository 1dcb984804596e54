//! The token embedding table: in the checkpoint's dtype, or as GGML `q8_0` blocks when the
//! linears are quantised ([`WeightFormat::embedding_format`]).

use std::sync::Arc;

use auris_kernels::halfgemv::HalfKind;
use auris_kernels::packed::PackedHalf;
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};

use crate::linear::{dequantize_rows, quantize_rows, QUANTIZE_CHUNK_WEIGHTS};
use crate::plan::table_format;
use crate::{LlmError, WeightFormat};

#[derive(Debug, Clone)]
enum Table {
    /// The checkpoint's tensor, gathered by `index_select`.
    Dense(Tensor),
    /// Block-quantised rows on the CPU: row `i` is blocks `i * k / block .. (i + 1) * k / block`,
    /// so a lookup dequantises only the gathered rows.
    Quant {
        qtensor: Arc<QTensor>,
        format: WeightFormat,
    },
    /// The bf16 table of a tied head packed in panels ([`Embedding::share_packed`]): a lookup
    /// gathers a row's values from its panel.
    Packed(Arc<PackedHalf>),
}

/// `embed_tokens`: `(vocab, hidden)` rows looked up by token id.
#[derive(Debug, Clone)]
pub(crate) struct Embedding {
    table: Table,
    vocab: usize,
    hidden: usize,
}

impl Embedding {
    /// Keeps `table` `(vocab, hidden)` as it is, or quantises it to `format` (row chunks at a
    /// time, see [`quantize_rows`]) when [`table_format`] says so (a block format whose block
    /// divides `hidden`) and the table is on the CPU (where the lookup dequantises rows);
    /// otherwise the table keeps its dtype.
    pub(crate) fn new(table: Tensor, format: Option<WeightFormat>) -> Result<Self, LlmError> {
        let (vocab, hidden) = table.dims2()?;
        let table = match table_format(format, hidden) {
            Some(f) if table.device().is_cpu() => Table::Quant {
                qtensor: Arc::new(quantize_rows(&table, f, QUANTIZE_CHUNK_WEIGHTS)?),
                format: f,
            },
            _ => Table::Dense(table),
        };
        Ok(Self {
            table,
            vocab,
            hidden,
        })
    }

    /// A table already quantised to `format` (read and quantised by rows), `(vocab, hidden)`.
    pub(crate) fn from_quant(
        qtensor: Arc<QTensor>,
        format: WeightFormat,
    ) -> Result<Self, LlmError> {
        let (vocab, hidden) = qtensor.shape().dims2()?;
        Ok(Self {
            table: Table::Quant { qtensor, format },
            vocab,
            hidden,
        })
    }

    /// The block format of the table, or `None` when it keeps the checkpoint's dtype.
    pub(crate) fn format(&self) -> Option<WeightFormat> {
        match &self.table {
            Table::Dense(_) | Table::Packed(_) => None,
            Table::Quant { format, .. } => Some(*format),
        }
    }

    /// Bytes the table occupies.
    pub(crate) fn bytes(&self) -> usize {
        match &self.table {
            Table::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Table::Quant { qtensor, .. } => qtensor.storage_size_in_bytes(),
            Table::Packed(p) => 2 * p.n() * p.k(),
        }
    }

    /// The quantised table and its format, to share with a tied head of that format.
    pub(crate) fn quantized(&self) -> Option<(&Arc<QTensor>, WeightFormat)> {
        match &self.table {
            Table::Dense(_) | Table::Packed(_) => None,
            Table::Quant { qtensor, format } => Some((qtensor, *format)),
        }
    }

    /// The whole table as a tensor: the checkpoint's (shared, no copy), or the quantised one
    /// dequantised to f32.
    pub(crate) fn to_dense(&self) -> Result<Tensor, LlmError> {
        match &self.table {
            Table::Dense(t) => Ok(t.clone()),
            Table::Quant { qtensor, .. } => Ok(qtensor.dequantize(&Device::Cpu)?),
            Table::Packed(p) => half_rows(p, p.rows(0..p.n()), p.n(), &Device::Cpu),
        }
    }

    /// The packed table shared with a tied head ([`Embedding::share_packed`]).
    #[cfg(test)]
    pub(crate) fn packed(&self) -> Option<&Arc<PackedHalf>> {
        match &self.table {
            Table::Packed(p) => Some(p),
            _ => None,
        }
    }

    /// Looks rows up in `head`, a tied head's weight packed from this very table, and drops
    /// the table: the model then holds the values once. Only a table on the CPU of the head's
    /// precision (bf16 or f16) and shape is replaced (a head stored in another precision than
    /// the table differs from it); otherwise nothing changes.
    pub(crate) fn share_packed(&mut self, head: &Arc<PackedHalf>) {
        if let Table::Dense(t) = &self.table {
            let dtype = match head.kind() {
                HalfKind::Bf16 => DType::BF16,
                HalfKind::F16 => DType::F16,
            };
            let same = t.dtype() == dtype
                && t.device().is_cpu()
                && (head.n(), head.k()) == (self.vocab, self.hidden);
            if same {
                self.table = Table::Packed(head.clone());
            }
        }
    }

    /// Rows `ids` as `(ids.len(), hidden)` on `device`: in the checkpoint's dtype, or f32
    /// dequantised from the gathered blocks only.
    pub(crate) fn gather(&self, ids: &[u32], device: &Device) -> Result<Tensor, LlmError> {
        let out_of_range = |id: u32| LlmError::TokenOutOfRange {
            id: i64::from(id),
            vocab_size: self.vocab,
        };
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab) {
            return Err(out_of_range(id));
        }
        match &self.table {
            Table::Dense(t) => {
                let flat = Tensor::from_vec(ids.to_vec(), ids.len(), device)?;
                Ok(t.index_select(&flat, 0)?)
            }
            Table::Quant { qtensor, format } => {
                let row_bytes = self.hidden / format.block_len() * format.block_bytes();
                let data = qtensor.data()?;
                let mut bytes = Vec::with_capacity(ids.len() * row_bytes);
                for &id in ids {
                    let start = id as usize * row_bytes;
                    let row = data
                        .get(start..start + row_bytes)
                        .ok_or_else(|| out_of_range(id))?;
                    bytes.extend_from_slice(row);
                }
                let rows = dequantize_rows(*format, &bytes, ids.len(), self.hidden)?;
                Ok(rows.to_device(device)?)
            }
            Table::Packed(p) => {
                let mut rows = Vec::with_capacity(ids.len() * self.hidden);
                for &id in ids {
                    rows.extend(p.row(id as usize).ok_or_else(|| out_of_range(id))?);
                }
                half_rows(p, rows, ids.len(), device)
            }
        }
    }
}

/// `count` rows of `table`'s bit patterns `bits` as a `(count, k)` tensor of its dtype.
fn half_rows(
    table: &PackedHalf,
    bits: Vec<u16>,
    count: usize,
    device: &Device,
) -> Result<Tensor, LlmError> {
    let shape = (count, table.k());
    Ok(match table.kind() {
        HalfKind::Bf16 => {
            let v: Vec<bf16> = bits.into_iter().map(bf16::from_bits).collect();
            Tensor::from_vec(v, shape, device)?
        }
        HalfKind::F16 => {
            let v: Vec<f16> = bits.into_iter().map(f16::from_bits).collect();
            Tensor::from_vec(v, shape, device)?
        }
    })
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::*;

    /// Deterministic values in [-1, 1), with an outlier every 97 weights.
    fn table(vocab: usize, hidden: usize, seed: u64) -> Tensor {
        let data = crate::test_values::with_outliers(vocab * hidden, seed, 5.0);
        Tensor::from_vec(data, (vocab, hidden), &Device::Cpu).unwrap()
    }

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2().unwrap()
    }

    /// A `q8_0` table gathers exactly candle's dequantisation of the whole table at those
    /// rows (repeated and unordered ids included), differs from the source by the rounding,
    /// and takes 34 bytes per 32 weights.
    #[test]
    fn q8_0_rows_equal_the_dequantised_table() {
        let (vocab, hidden) = (37, 96);
        let src = table(vocab, hidden, 5).to_dtype(DType::BF16).unwrap();
        let emb = Embedding::new(src.clone(), Some(WeightFormat::Q8_0)).unwrap();
        assert_eq!(emb.format(), Some(WeightFormat::Q8_0));
        assert_eq!(emb.bytes(), vocab * hidden / 32 * 34);
        let (qtensor, _) = emb.quantized().unwrap();
        let whole = rows(&qtensor.dequantize(&Device::Cpu).unwrap());
        let ids = [36u32, 0, 7, 7, 19];
        let got = emb.gather(&ids, &Device::Cpu).unwrap();
        assert_eq!((got.dims(), got.dtype()), (&[5, hidden][..], DType::F32));
        let got = rows(&got);
        for (row, &id) in got.iter().zip(&ids) {
            assert_eq!(row, &whole[id as usize], "row {id}");
        }
        let exact = rows(&src.to_dtype(DType::F32).unwrap());
        let err = got[0]
            .iter()
            .zip(&exact[36])
            .fold(0.0f32, |m, (a, e)| m.max((a - e).abs()));
        assert!(err > 0.0 && err < 0.05, "q8_0 row error {err}");
        assert_eq!(rows(&emb.to_dense().unwrap()), whole);
    }

    /// Rows that do not fit the block, or no format, keep the checkpoint's tensor and dtype;
    /// an id past the table is an error in both storages.
    #[test]
    fn other_tables_stay_dense_and_bad_ids_are_errors() {
        let src = table(10, 48, 6).to_dtype(DType::BF16).unwrap();
        for format in [Some(WeightFormat::Q8_0), None] {
            let emb = Embedding::new(src.clone(), format).unwrap();
            assert_eq!(emb.format(), None);
            assert_eq!(emb.bytes(), 10 * 48 * 2);
            let got = emb.gather(&[3, 9], &Device::Cpu).unwrap();
            assert_eq!(got.dtype(), DType::BF16);
            let want = src.narrow(0, 3, 1).unwrap();
            assert_eq!(
                rows(&got.narrow(0, 0, 1).unwrap().to_dtype(DType::F32).unwrap()),
                rows(&want.to_dtype(DType::F32).unwrap())
            );
            assert!(matches!(
                emb.gather(&[10], &Device::Cpu),
                Err(LlmError::TokenOutOfRange {
                    id: 10,
                    vocab_size: 10
                })
            ));
        }
        let q = Embedding::new(table(10, 64, 7), Some(WeightFormat::Q8_0)).unwrap();
        assert!(matches!(
            q.gather(&[2, 10], &Device::Cpu),
            Err(LlmError::TokenOutOfRange { id: 10, .. })
        ));
    }
}
