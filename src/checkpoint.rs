//! Finding a checkpoint (a local folder or a hub id) and reading its weights.
//!
//! A checkpoint has the Hugging Face hub layout: `config.json`, `tokenizer.json`, optional
//! `generation_config.json`, `preprocessor_config.json`, `tokenizer_config.json`, a chat
//! template file, and either `model.safetensors` or `model.safetensors.index.json` with the
//! shards its `weight_map` names. Weights are memory-mapped; a [`WeightStore`] records which
//! tensors the model asked for so that [`WeightStore::coverage`] can prove every tensor was used.

use std::collections::{BTreeSet, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use auris_audio::MelConfig;
use auris_llm::RowReader;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::shards::{ShardIndex, Shards};
use crate::Error;

/// The hub id used when the user names no model.
pub const DEFAULT_MODEL: &str = "Qwen/Qwen2-Audio-7B-Instruct";

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A folder on disk in the hub layout.
    Local(PathBuf),
    /// A hub repository, fetched through `hf-hub` (cache under `HF_HOME`).
    Hub {
        /// `owner/name`.
        id: String,
        /// Branch, tag or commit.
        revision: String,
    },
}

impl ModelSource {
    /// Interprets `--model`: an existing folder, something that looks like a path (starts with
    /// `.`, `/` or `~`, or has more than one `/`), or else a hub id `owner/name`.
    pub fn parse(spec: &str, revision: Option<&str>) -> Result<Self, Error> {
        let path = Path::new(spec);
        let looks_like_path = spec.starts_with('.')
            || spec.starts_with('/')
            || spec.starts_with('~')
            || spec.matches('/').count() != 1;
        if path.is_dir() {
            return Ok(Self::Local(path.to_path_buf()));
        }
        if path.exists() {
            return Err(Error::NotAModelFolder {
                path: path.to_path_buf(),
                reason: "it is a file, not a folder".to_string(),
            });
        }
        if looks_like_path {
            return Err(Error::NotAModelFolder {
                path: path.to_path_buf(),
                reason: "no such folder".to_string(),
            });
        }
        Ok(Self::Hub {
            id: spec.to_string(),
            revision: revision.unwrap_or("main").to_string(),
        })
    }

    /// How the source is shown to users.
    pub fn display(&self) -> String {
        match self {
            Self::Local(p) => p.display().to_string(),
            Self::Hub { id, revision } if revision == "main" => id.clone(),
            Self::Hub { id, revision } => format!("{id}@{revision}"),
        }
    }
}

/// The files of one checkpoint, all resolved to local paths.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// `config.json`.
    pub config: PathBuf,
    /// `generation_config.json`, when the model ships one.
    pub generation_config: Option<PathBuf>,
    /// `preprocessor_config.json` (the hub's flat feature-extractor file), when present.
    pub preprocessor_config: Option<PathBuf>,
    /// `processor_config.json` (transformers 5.x nests the feature extractor in it), when
    /// present.
    pub processor_config: Option<PathBuf>,
    /// `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// `tokenizer_config.json`, when present (it may hold the chat template).
    pub tokenizer_config: Option<PathBuf>,
    /// `chat_template.jinja` or `chat_template.json`, when present.
    pub chat_template: Option<PathBuf>,
    /// `model.safetensors.index.json`, when the weights are sharded.
    pub weight_index: Option<PathBuf>,
    /// The safetensors files holding the weights.
    pub weights: Vec<PathBuf>,
}

impl ModelFiles {
    /// Every file of the checkpoint, configs first, then the weights.
    pub fn paths(&self) -> Vec<&Path> {
        let optional = [
            &self.generation_config,
            &self.preprocessor_config,
            &self.processor_config,
            &self.tokenizer_config,
            &self.chat_template,
            &self.weight_index,
        ];
        [&self.config, &self.tokenizer]
            .into_iter()
            .chain(optional.into_iter().flatten())
            .chain(&self.weights)
            .map(PathBuf::as_path)
            .collect()
    }

    /// The log-mel settings: from `preprocessor_config.json`, else `processor_config.json`, else
    /// Whisper's defaults with `n_mels` bins.
    pub fn mel_config(&self, n_mels: usize) -> Result<MelConfig, Error> {
        Ok(match (&self.preprocessor_config, &self.processor_config) {
            (Some(path), _) => MelConfig::from_preprocessor_json(path)?,
            (None, Some(path)) => MelConfig::from_processor_json(path)?,
            (None, None) => MelConfig::whisper(n_mels),
        })
    }
}

const INDEX_FILE: &str = "model.safetensors.index.json";
const SINGLE_FILE: &str = "model.safetensors";
const CHAT_TEMPLATE_FILES: [&str; 2] = ["chat_template.jinja", "chat_template.json"];

/// Resolves every file of `source`, downloading from the hub when needed (see [`crate::hub`]).
///
/// Honours `HF_HOME` (cache location), `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE=1` (cache
/// only).
pub fn resolve(source: &ModelSource, progress: bool) -> Result<ModelFiles, Error> {
    match source {
        ModelSource::Local(dir) => resolve_with(&LocalFiles { dir: dir.clone() }),
        ModelSource::Hub { id, revision } => {
            resolve_with(crate::hub::source(id, revision, progress)?.as_ref())
        }
    }
}

/// One way of turning a file name of the checkpoint into a local path.
pub(crate) trait FileSource {
    /// `Ok(None)` when the checkpoint has no such file.
    fn optional(&self, name: &str) -> Result<Option<PathBuf>, Error>;
    /// The error for a file the checkpoint must have.
    fn missing(&self, name: &str) -> Error;

    fn required(&self, name: &str) -> Result<PathBuf, Error> {
        self.optional(name)?.ok_or_else(|| self.missing(name))
    }
}

struct LocalFiles {
    dir: PathBuf,
}

impl FileSource for LocalFiles {
    fn optional(&self, name: &str) -> Result<Option<PathBuf>, Error> {
        let path = self.dir.join(name);
        Ok(path.is_file().then_some(path))
    }

    fn missing(&self, name: &str) -> Error {
        Error::MissingFile {
            model: self.dir.display().to_string(),
            file: name.to_string(),
        }
    }
}

fn resolve_with(files: &dyn FileSource) -> Result<ModelFiles, Error> {
    let config = files.required("config.json")?;
    let tokenizer = files.required("tokenizer.json")?;
    let mut chat_template = None;
    for name in CHAT_TEMPLATE_FILES {
        if let Some(path) = files.optional(name)? {
            chat_template = Some(path);
            break;
        }
    }
    let weight_index = files.optional(INDEX_FILE)?;
    let weights = match &weight_index {
        Some(index_path) => {
            let index: ShardIndex = read_json(index_path)?;
            let shards: BTreeSet<&String> = index.weight_map.values().collect();
            if shards.is_empty() {
                return Err(Error::BadFile {
                    path: index_path.clone(),
                    reason: "weight_map is empty".to_string(),
                });
            }
            shards
                .into_iter()
                .map(|shard| files.required(shard))
                .collect::<Result<Vec<_>, _>>()?
        }
        None => vec![files.optional(SINGLE_FILE)?.ok_or_else(|| {
            files.missing(&format!("{SINGLE_FILE} (or {INDEX_FILE} with its shards)"))
        })?],
    };
    Ok(ModelFiles {
        config,
        generation_config: files.optional("generation_config.json")?,
        preprocessor_config: files.optional("preprocessor_config.json")?,
        processor_config: files.optional("processor_config.json")?,
        tokenizer,
        tokenizer_config: files.optional("tokenizer_config.json")?,
        chat_template,
        weight_index,
        weights,
    })
}

/// Reads and parses a JSON file, naming the file in every error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::BadFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Memory-mapped safetensors that remember which tensors were read.
pub struct WeightStore {
    inner: Arc<Recorder>,
}

struct Recorder {
    tensors: Shards,
    used: Mutex<HashSet<String>>,
}

/// A tensor as the checkpoint's header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Full name, e.g. `language_model.model.layers.0.mlp.up_proj.weight`.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Element type in the file (`None` for a type candle cannot load).
    pub dtype: Option<DType>,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Which checkpoint tensors the model did not read.
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    /// Tensors in the files that no stage asked for, sorted.
    pub unused: Vec<String>,
    /// Number of tensors in the files.
    pub total: usize,
}

impl WeightStore {
    /// Memory-maps the given safetensors files.
    ///
    /// A missing or truncated file, a malformed header and a tensor stored in two files are
    /// errors naming the file.
    pub fn open(paths: &[PathBuf]) -> Result<Self, Error> {
        Self::open_indexed(paths, None)
    }

    /// [`WeightStore::open`] on a model's weights, checking that its
    /// `model.safetensors.index.json` (when sharded) places every tensor in the shard that
    /// holds it: a misplaced or missing tensor is an error naming the index, the tensor and
    /// the files.
    pub fn open_model(files: &ModelFiles) -> Result<Self, Error> {
        Self::open_indexed(&files.weights, files.weight_index.as_deref())
    }

    fn open_indexed(paths: &[PathBuf], index: Option<&Path>) -> Result<Self, Error> {
        let tensors = Shards::open(paths)?;
        if let Some(index_path) = index {
            let index: ShardIndex = read_json(index_path)?;
            tensors.check_index(&index, index_path)?;
        }
        Ok(Self {
            inner: Arc::new(Recorder {
                tensors,
                used: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// A `VarBuilder` over the store, converting every tensor to `dtype` on `device`.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(
            Box::new(RecordingBackend(self.inner.clone())),
            dtype,
            device.clone(),
        )
    }

    /// Names of every tensor in the files.
    pub fn names(&self) -> Vec<String> {
        self.inner.tensors.names()
    }

    /// Name, shape and stored dtype of every tensor, read from the file headers only (no
    /// weight is touched): what a memory estimate needs before loading. A dtype candle does
    /// not know is `None`.
    pub fn infos(&self) -> Vec<TensorInfo> {
        let mut infos = self.inner.tensors.infos();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }

    /// Fails when a tensor nobody read remains, besides the `allowed` ones: a prefix mistake or a
    /// checkpoint of a different model.
    pub fn check_coverage(&self, allowed: &[&str]) -> Result<(), Error> {
        let coverage = self.coverage(allowed);
        if coverage.unused.is_empty() {
            return Ok(());
        }
        Err(Error::UnusedTensors {
            count: coverage.unused.len(),
            examples: coverage
                .unused
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The tensors nobody read so far; `allowed` names may stay unused (e.g. a tied head).
    pub fn coverage(&self, allowed: &[&str]) -> Coverage {
        let used = self
            .inner
            .used
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default();
        let names = self.names();
        let mut unused: Vec<String> = names
            .iter()
            .filter(|n| !used.contains(*n) && !allowed.contains(&n.as_str()))
            .cloned()
            .collect();
        unused.sort();
        Coverage {
            unused,
            total: names.len(),
        }
    }
}

/// Row ranges straight from the mapping, for the weights a quantised load converts a chunk of
/// rows at a time ([`auris_llm::Qwen2Decoder::load_with_rows`]): a tensor so read is never
/// whole in memory, and the mapped pages of each chunk are released once copied, so the
/// process's resident memory grows by the quantised blocks and one chunk only. Reads count
/// as uses for [`WeightStore::coverage`].
impl RowReader for WeightStore {
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.inner.tensors.get(name).map(|stored| stored.shape)
    }

    fn read_rows(&self, name: &str, rows: Range<usize>) -> candle_core::Result<Tensor> {
        let (tensor, bytes) = self.inner.tensors.load_rows(name, rows)?;
        self.inner.mark_used(name);
        release_pages(bytes);
        Ok(tensor)
    }
}

impl Recorder {
    fn mark_used(&self, name: &str) {
        if let Ok(mut used) = self.used.lock() {
            used.insert(name.to_string());
        }
    }
}

struct RecordingBackend(Arc<Recorder>);

impl RecordingBackend {
    fn read(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let tensor = self.0.tensors.load(name, dev)?;
        self.0.mark_used(name);
        if let Some(stored) = self.0.tensors.get(name) {
            release_pages(stored.data);
        }
        tensor.to_dtype(dtype)
    }
}

/// Tells the kernel the process no longer needs the mapped file pages of `bytes`: the tensor has
/// been copied out, and without this the mapping's resident pages would count against the
/// process a second time (peak RSS twice the weights). Safe for a read-only file mapping: a page
/// touched again (a neighbouring tensor sharing it) is simply read back from the page cache.
#[cfg(unix)]
fn release_pages(bytes: &[u8]) {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => return,
    };
    let start = bytes.as_ptr() as usize;
    let aligned = start - start % page;
    let len = start + bytes.len() - aligned;
    // SAFETY: the range lies within the read-only file mapping the bytes belong to (extended down
    // to its page boundary, still inside the mapping); MADV_DONTNEED on a shared file mapping
    // only drops this process's page-table entries, the contents stay readable.
    unsafe {
        libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_DONTNEED);
    }
}

#[cfg(not(unix))]
fn release_pages(_bytes: &[u8]) {}

impl SimpleBackend for RecordingBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.read(name, dtype, dev)?;
        if tensor.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!(
                    "tensor {name}{} has the wrong shape",
                    self.0
                        .tensors
                        .get(name)
                        .map(|s| format!(" in {}", s.path.display()))
                        .unwrap_or_default()
                ),
                expected: s,
                got: tensor.shape().clone(),
            });
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.read(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.tensors.get(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(
            ModelSource::parse("Qwen/Qwen2-Audio-7B", None).unwrap(),
            ModelSource::Hub {
                id: "Qwen/Qwen2-Audio-7B".into(),
                revision: "main".into()
            }
        );
        let err = ModelSource::parse("./no/such/model", None).unwrap_err();
        assert!(err.to_string().contains("no such folder"), "{err}");
        let err = ModelSource::parse("missing-model-folder", None).unwrap_err();
        assert!(err.to_string().contains("no such folder"), "{err}");
    }

    fn tiny_chat_store() -> WeightStore {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-chat");
        let mut shards: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        shards.sort();
        WeightStore::open(&shards).unwrap()
    }

    /// Rows read from the mapping are those rows of the whole tensor, in its stored dtype,
    /// and count as a use; a range past the rows, a 1-D tensor and a missing one are errors
    /// naming the tensor.
    #[test]
    fn rows_come_straight_from_the_mapping() {
        let store = tiny_chat_store();
        let name = "language_model.model.embed_tokens.weight";
        assert_eq!(store.shape(name), Some(vec![512, 64]));
        let whole = store.inner.tensors.load(name, &Device::Cpu).unwrap();
        let rows = store.read_rows(name, 7..300).unwrap();
        assert_eq!((rows.dims(), rows.dtype()), (&[293, 64][..], DType::BF16));
        let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(f32s(&rows), f32s(&whole.narrow(0, 7, 293).unwrap()));
        assert!(!store.coverage(&[]).unused.iter().any(|n| n == name));
        let norm = "language_model.model.norm.weight";
        for (name, range) in [(name, 500..513), (norm, 0..1), ("no.such.weight", 0..1)] {
            let err = store.read_rows(name, range).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        assert_eq!(store.shape("no.such.weight"), None);
    }

    #[test]
    fn infos_come_from_the_headers() {
        let store = tiny_chat_store();
        let infos = store.infos();
        assert_eq!(infos.len(), store.names().len());
        let embed = infos
            .iter()
            .find(|i| i.name == "language_model.model.embed_tokens.weight")
            .unwrap();
        assert_eq!(embed.shape, vec![512, 64]);
        assert_eq!(embed.dtype, Some(DType::BF16));
        assert_eq!(embed.numel(), 512 * 64);
        // Nothing was read, so nothing counts as used.
        assert_eq!(store.coverage(&[]).unused.len(), infos.len());
    }
}
