//! The caller-owned key/value cache.

use candle_core::{Tensor, D};

use crate::LlmError;

/// Positions added to a layer's buffers whenever they run out of room.
const GROW_BY: usize = 512;

/// Keys and values of every layer for the positions seen so far.
///
/// Made by [`crate::Qwen2Decoder::new_cache`] and filled by the decoder's forward calls. Per
/// layer it holds preallocated `(batch, num_kv_heads, capacity, head_dim)` buffers (keys after
/// RoPE) that grow in blocks of 512 positions, so appending a token writes in place instead
/// of reallocating. All layers always hold the same number of positions, [`KvCache::len`],
/// which is also the RoPE position of the next token.
///
/// A cache is one sequence's (the rows of a batch sharing it share its positions): sequences at
/// different positions each have their own, as a [`crate::Sequence`] does, and
/// [`crate::Qwen2Decoder::forward_batch`] runs several of them in one call.
///
/// [`KvCache::truncate`] drops the newest positions, e.g. to score several continuations of
/// one prompt. `clone` copies the buffers, so clones evolve independently.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
}

#[derive(Debug, Default)]
struct LayerKv {
    keys: Option<Tensor>,
    values: Option<Tensor>,
}

impl KvCache {
    pub(crate) fn new(num_layers: usize) -> Self {
        Self {
            layers: (0..num_layers).map(|_| LayerKv::default()).collect(),
            len: 0,
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of layers this cache is for.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Keeps only the first `len` positions; does nothing if `len >= self.len()`. Buffers are
    /// kept, so refilling costs no allocation.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Forgets every position (keeping the buffers).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Batch size of the cached sequences, once something was cached.
    pub(crate) fn batch(&self) -> Option<usize> {
        self.layers
            .first()
            .and_then(|l| l.keys.as_ref())
            .map(|k| k.dims()[0])
    }

    /// Marks `added` more positions as valid, after every layer appended them.
    pub(crate) fn commit(&mut self, added: usize) {
        self.len += added;
    }

    /// Writes `keys`/`values` `(batch, kv_heads, s, head_dim)` of `layer` at position
    /// `self.len()` and returns the layer's keys and values for positions `0..len + s`.
    ///
    /// Does not change [`KvCache::len`]; call `commit` once every layer has appended.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        keys: &Tensor,
        values: &Tensor,
    ) -> Result<(Tensor, Tensor), LlmError> {
        let start = self.len;
        let num_layers = self.layers.len();
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| LlmError::CacheMismatch {
                reason: format!("no layer {layer} in a cache of {num_layers} layers"),
            })?;
        let keys = write(&mut slot.keys, keys, start)?;
        let values = write(&mut slot.values, values, start)?;
        Ok((keys, values))
    }
}

/// Writes `new` at `start` along dim 2 of `buffer`, growing it if needed, and returns the
/// view of positions `0..start + s`.
fn write(buffer: &mut Option<Tensor>, new: &Tensor, start: usize) -> Result<Tensor, LlmError> {
    let (b, h, s, d) = new.dims4()?;
    let needed = start + s;
    let grow = match buffer {
        None => true,
        Some(buf) => {
            let (bb, bh, cap, bd) = buf.dims4()?;
            if (bb, bh, bd) != (b, h, d) || buf.dtype() != new.dtype() {
                return Err(LlmError::CacheMismatch {
                    reason: format!(
                        "cached keys/values are {:?} {:?}, new ones {:?} {:?} (one cache per \
                         batch and model)",
                        buf.dims(),
                        buf.dtype(),
                        new.dims(),
                        new.dtype()
                    ),
                });
            }
            needed > cap
        }
    };
    if grow {
        let capacity = needed.div_ceil(GROW_BY) * GROW_BY;
        let fresh = Tensor::zeros((b, h, capacity, d), new.dtype(), new.device())?;
        if let Some(old) = buffer.as_ref() {
            if start > 0 {
                fresh.slice_set(&old.narrow(D::Minus2, 0, start)?.contiguous()?, 2, 0)?;
            }
        }
        *buffer = Some(fresh);
    }
    let buf = buffer.as_ref().ok_or_else(|| LlmError::CacheMismatch {
        reason: "buffer missing after allocation".into(),
    })?;
    buf.slice_set(&new.contiguous()?, 2, start)?;
    Ok(buf.narrow(2, 0, needed)?)
}

impl Clone for KvCache {
    fn clone(&self) -> Self {
        // `Tensor::clone` shares storage and `slice_set` writes in place, so a shallow clone
        // would let one copy overwrite the other's positions. `copy` cannot fail for a tensor
        // that exists; should it, the clone starts empty rather than aliasing.
        let deep = |t: &Option<Tensor>| t.as_ref().and_then(|t| t.copy().ok());
        let layers: Vec<LayerKv> = self
            .layers
            .iter()
            .map(|l| LayerKv {
                keys: deep(&l.keys),
                values: deep(&l.values),
            })
            .collect();
        let complete = layers
            .iter()
            .zip(&self.layers)
            .all(|(new, old)| new.keys.is_some() == old.keys.is_some());
        let len = if complete { self.len } else { 0 };
        Self { layers, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn kv(start: f32, s: usize) -> Tensor {
        Tensor::arange(start, start + (s * 2) as f32, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, s, 2))
            .unwrap()
    }

    #[test]
    fn append_grows_and_keeps_old_positions() {
        let mut cache = KvCache::new(1);
        let (k, _) = cache.append(0, &kv(0.0, 3), &kv(0.0, 3)).unwrap();
        assert_eq!(k.dims(), &[1, 1, 3, 2]);
        cache.commit(3);
        let big = GROW_BY;
        let (k, v) = cache.append(0, &kv(6.0, big), &kv(6.0, big)).unwrap();
        cache.commit(big);
        assert_eq!(k.dims(), &[1, 1, 3 + big, 2]);
        let flat: Vec<f32> = k.flatten_all().unwrap().to_vec1().unwrap();
        let expect: Vec<f32> = (0..(3 + big) * 2).map(|x| x as f32).collect();
        assert_eq!(flat, expect);
        assert_eq!(v.flatten_all().unwrap().to_vec1::<f32>().unwrap(), expect);
        assert_eq!(cache.len(), 3 + big);
    }

    #[test]
    fn truncate_then_append_overwrites() {
        let mut cache = KvCache::new(1);
        cache.append(0, &kv(0.0, 4), &kv(0.0, 4)).unwrap();
        cache.commit(4);
        cache.truncate(2);
        assert_eq!(cache.len(), 2);
        let (k, _) = cache.append(0, &kv(100.0, 1), &kv(100.0, 1)).unwrap();
        let flat: Vec<f32> = k.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(flat, vec![0.0, 1.0, 2.0, 3.0, 100.0, 101.0]);
        cache.truncate(10);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn clones_do_not_alias() {
        let mut a = KvCache::new(1);
        a.append(0, &kv(0.0, 2), &kv(0.0, 2)).unwrap();
        a.commit(2);
        let mut b = a.clone();
        a.append(0, &kv(10.0, 1), &kv(10.0, 1)).unwrap();
        let (kb, _) = b.append(0, &kv(20.0, 1), &kv(20.0, 1)).unwrap();
        let (ka, _) = a.append(0, &kv(10.0, 1), &kv(10.0, 1)).unwrap();
        assert_eq!(ka.flatten_all().unwrap().to_vec1::<f32>().unwrap()[4], 10.0);
        assert_eq!(kb.flatten_all().unwrap().to_vec1::<f32>().unwrap()[4], 20.0);
    }

    #[test]
    fn batch_or_dtype_change_is_an_error() {
        let mut cache = KvCache::new(1);
        cache.append(0, &kv(0.0, 2), &kv(0.0, 2)).unwrap();
        cache.commit(2);
        let half = kv(0.0, 1).to_dtype(DType::F16).unwrap();
        assert!(matches!(
            cache.append(0, &half, &half),
            Err(LlmError::CacheMismatch { .. })
        ));
        assert!(matches!(
            cache.append(1, &kv(0.0, 1), &kv(0.0, 1)),
            Err(LlmError::CacheMismatch { .. })
        ));
    }
}
