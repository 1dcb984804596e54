//! The safetensors files of a checkpoint, opened one by one so that a fault names its file:
//! a shard cut short, a tensor stored in two shards, a `weight_map` naming a tensor twice.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::Error;

/// Memory-mapped shards and which one holds each tensor.
pub(crate) struct Shards {
    files: Vec<(PathBuf, MmapedSafetensors)>,
    route: HashMap<String, usize>,
}

/// A stored tensor and the file that holds it.
pub(crate) struct Stored<'a> {
    /// The tensor's bytes in the mapping.
    pub(crate) data: &'a [u8],
    /// Its dtype as the header names it (`None`: one candle does not know).
    pub(crate) dtype: Option<DType>,
    /// Its shape as the header gives it.
    pub(crate) shape: Vec<usize>,
    /// The header's dtype name, for errors.
    pub(crate) dtype_name: String,
    /// Its shard.
    pub(crate) path: &'a Path,
}

impl Shards {
    /// Maps every file; a file that is missing, truncated or has a malformed header, and a
    /// tensor stored in two files, are errors naming the file (and the tensor).
    pub(crate) fn open(paths: &[PathBuf]) -> Result<Self, Error> {
        let mut files = Vec::with_capacity(paths.len());
        let mut route: HashMap<String, usize> = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            if !path.is_file() {
                return Err(Error::BadFile {
                    path: path.clone(),
                    reason: "weights file not found".to_string(),
                });
            }
            // SAFETY: the files are mapped read-only and auris never writes to them; like every
            // mmap-based loader we rely on nobody truncating them while the model runs.
            let file = unsafe { MmapedSafetensors::new(path) }.map_err(|e| Error::BadFile {
                path: path.clone(),
                reason: shard_fault(path, &e),
            })?;
            for (name, _) in file.tensors() {
                if let Some(&first) = route.get(&name) {
                    return Err(Error::BadFile {
                        path: path.clone(),
                        reason: format!(
                            "tensor {name} is also stored in {}",
                            paths[first].display()
                        ),
                    });
                }
                route.insert(name, i);
            }
            files.push((path.clone(), file));
        }
        Ok(Self { files, route })
    }

    /// Checks that `index` (read from `index_path`) places every tensor it names in the shard
    /// that stores it; a loader trusting the index would otherwise read a tensor from the
    /// wrong file, or look for it where it is not.
    pub(crate) fn check_index(&self, index: &ShardIndex, index_path: &Path) -> Result<(), Error> {
        let mut names: Vec<&String> = index.weight_map.keys().collect();
        names.sort();
        for name in names {
            let file = &index.weight_map[name];
            let reason = match self.route.get(name).map(|&i| &self.files[i].0) {
                Some(path) if path.ends_with(file) => continue,
                Some(path) => format!(
                    "weight_map places tensor {name} in {file}, but {} stores it",
                    path.display()
                ),
                None => format!(
                    "weight_map places tensor {name} in {file}, which does not store it (no shard does)"
                ),
            };
            return Err(Error::BadFile {
                path: index_path.to_path_buf(),
                reason,
            });
        }
        Ok(())
    }

    /// The tensor called `name`, if a shard holds it.
    pub(crate) fn get(&self, name: &str) -> Option<Stored<'_>> {
        let (path, file) = &self.files[*self.route.get(name)?];
        let view = file.get(name).ok()?;
        Some(Stored {
            data: view.data(),
            dtype: DType::try_from(view.dtype()).ok(),
            shape: view.shape().to_vec(),
            dtype_name: format!("{:?}", view.dtype()),
            path,
        })
    }

    /// Reads `name` onto `dev` in its stored dtype; weights must be stored as floats.
    pub(crate) fn load(&self, name: &str, dev: &Device) -> candle_core::Result<Tensor> {
        self.stored_float(name)?;
        let (_, file) = &self.files[self.route[name]];
        file.load(name, dev)
    }

    /// Rows `rows` of the 2-D tensor `name`, copied onto the CPU in its stored dtype (floats),
    /// and the bytes of the mapping they came from: only those rows are read.
    pub(crate) fn load_rows(
        &self,
        name: &str,
        rows: Range<usize>,
    ) -> candle_core::Result<(Tensor, &[u8])> {
        let (stored, dtype) = self.stored_float(name)?;
        let fault = |what: String| {
            candle_core::Error::Msg(format!(
                "tensor {name} in {}: {what}",
                stored.path.display()
            ))
        };
        let &[count, columns] = stored.shape.as_slice() else {
            return Err(fault(format!(
                "rows of a {}-D tensor cannot be read",
                stored.shape.len()
            )));
        };
        if rows.start > rows.end || rows.end > count {
            return Err(fault(format!("no rows {rows:?} among {count}")));
        }
        let row_bytes = columns * dtype.size_in_bytes();
        let bytes = stored
            .data
            .get(rows.start * row_bytes..rows.end * row_bytes)
            .ok_or_else(|| fault(format!("the data is shorter than {count} rows")))?;
        let tensor = Tensor::from_raw_buffer(bytes, dtype, &[rows.len(), columns], &Device::Cpu)?;
        Ok((tensor, bytes))
    }

    /// The tensor `name` and its dtype, which must be a float type.
    fn stored_float(&self, name: &str) -> candle_core::Result<(Stored<'_>, DType)> {
        let stored = self
            .get(name)
            .ok_or_else(|| candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            })?;
        match stored.dtype {
            Some(dtype @ (DType::F32 | DType::F16 | DType::BF16 | DType::F64)) => {
                Ok((stored, dtype))
            }
            _ => Err(candle_core::Error::Msg(format!(
                "tensor {name} in {} is stored as {:?}; weights must be F32, F16, BF16 or F64",
                stored.path.display(),
                stored.dtype_name
            ))),
        }
    }

    /// Names of every tensor of every shard.
    pub(crate) fn names(&self) -> Vec<String> {
        self.route.keys().cloned().collect()
    }

    /// Name, shape and dtype of every tensor, from the headers.
    pub(crate) fn infos(&self) -> Vec<crate::checkpoint::TensorInfo> {
        self.files
            .iter()
            .flat_map(|(_, f)| f.tensors())
            .map(|(name, view)| crate::checkpoint::TensorInfo {
                shape: view.shape().to_vec(),
                dtype: DType::try_from(view.dtype()).ok(),
                name,
            })
            .collect()
    }
}

/// Why a safetensors file could not be opened, in words: a file shorter than its header
/// declares is called truncated with both sizes.
fn shard_fault(path: &Path, err: &candle_core::Error) -> String {
    let declared = header_bytes(path).and_then(|b| declared_len(&b));
    let actual = std::fs::metadata(path).map(|m| m.len()).ok();
    match (declared, actual) {
        (Some(declared), Some(actual)) if actual < declared => format!(
            "truncated safetensors file: its header declares {declared} bytes, the file has {actual}"
        ),
        _ => format!("cannot read safetensors: {err}"),
    }
}

/// The length prefix and JSON header of a safetensors file (not its data), when the prefix
/// fits the file.
fn header_bytes(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix).ok()?;
    let n = u64::from_le_bytes(prefix);
    if n > len.saturating_sub(8) {
        return None;
    }
    let mut bytes = prefix.to_vec();
    file.take(n).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// The file length a safetensors header declares (8-byte length, JSON header, then the data
/// up to the largest `data_offsets` end), when the header parses.
pub fn declared_len(bytes: &[u8]) -> Option<u64> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let header = bytes.get(8..8usize.checked_add(usize::try_from(n).ok()?)?)?;
    let entries: HashMap<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    let end = entries
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    8u64.checked_add(n)?.checked_add(end)
}

/// `model.safetensors.index.json`: which shard holds each tensor.
#[derive(Debug, Deserialize)]
pub struct ShardIndex {
    /// Tensor name to shard file name; a name given twice is an error.
    #[serde(deserialize_with = "unique_map")]
    pub weight_map: HashMap<String, String>,
}

fn unique_map<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<String, String>, D::Error> {
    struct Unique;
    impl<'de> Visitor<'de> for Unique {
        type Value = HashMap<String, String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map from tensor names to shard files")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = HashMap::new();
            while let Some((name, file)) = map.next_entry::<String, String>()? {
                if let Some(first) = out.insert(name.clone(), file) {
                    return Err(serde::de::Error::custom(format!(
                        "weight_map names tensor {name} twice (first in {first})"
                    )));
                }
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_naming_a_tensor_twice_is_rejected() {
        let text = r#"{"weight_map": {"a.weight": "x.safetensors", "a.weight": "y.safetensors"}}"#;
        let err = serde_json::from_str::<ShardIndex>(text).unwrap_err();
        assert!(
            err.to_string().contains("names tensor a.weight twice"),
            "{err}"
        );
        let ok = r#"{"metadata": {}, "weight_map": {"a": "x", "b": "x"}}"#;
        assert_eq!(
            serde_json::from_str::<ShardIndex>(ok)
                .unwrap()
                .weight_map
                .len(),
            2
        );
    }

    #[test]
    fn declared_length_comes_from_the_largest_offset() {
        let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        assert_eq!(declared_len(&bytes), Some(8 + header.len() as u64 + 12));
        assert_eq!(declared_len(&bytes[..4]), None);
        // A length prefix claiming terabytes is not read past the buffer.
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert_eq!(declared_len(&huge), None);
    }
}
