//! Checkpoints: safetensors files (headers indexed at open) and PyTorch `.pt` files (read
//! without executing anything, see [`Checkpoint::open_torch`]); tensors converted to f32 (or
//! kept f16) on demand.

use super::files;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    range: Range<usize>,
}

/// One or more safetensors files (shards) read into memory, with every tensor indexed by name.
pub struct Checkpoint {
    files: Vec<(PathBuf, Vec<u8>)>,
    index: BTreeMap<String, Entry>,
    /// Answers every request with deterministic random values (see [`Checkpoint::synthetic`]).
    synthetic: Option<u64>,
}

/// A tensor's values as stored: f32, or f16 kept as raw halves.
pub enum Values {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

impl Values {
    /// The values as f32 (f16 widened).
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            Values::F32(v) => v,
            Values::F16(v) => v.into_iter().map(f32::from).collect(),
        }
    }
}

impl Checkpoint {
    /// Opens a PyTorch checkpoint (`torch.save` of a state dict: the ZIP format of PyTorch 1.6
    /// and later, and the legacy formats before it) with `pytorch-reader`, which parses the
    /// pickle without executing it: it builds only dictionaries, lists and tensors
    /// (`torch._utils._rebuild_tensor_v2` over the archive's storages); an unknown global that
    /// would construct a tensor is an error naming it, other objects (a Lightning file's
    /// hyper-parameters, callbacks) are kept opaque and skipped. A Lightning-style file whose
    /// weights sit under `state_dict` is read from there. Tensors are gathered into row-major
    /// little-endian bytes, so strided views load like any tensor.
    pub fn open_torch(path: &Path) -> Result<Self> {
        Self::torch_on_disk(path)?;
        let bad = |e: &dyn std::fmt::Display| {
            Error::file(path, format!("not a readable PyTorch checkpoint: {e}"))
        };
        let reader = pytorch_reader::PytorchReader::new(path).map_err(|e| bad(&e))?;
        let nested =
            !reader.is_empty() && reader.keys().iter().all(|k| k.starts_with("state_dict."));
        let reader = if nested {
            pytorch_reader::PytorchReader::with_top_level_key(path, "state_dict")
                .map_err(|e| bad(&e))?
        } else {
            reader
        };
        let mut tensors: Vec<(String, pytorch_reader::Tensor)> =
            reader.into_tensors().into_iter().collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let mut bytes = Vec::new();
        let mut index = BTreeMap::new();
        for (name, t) in tensors {
            use pytorch_reader::DType as T;
            let dtype = match t.dtype() {
                T::F64 => Dtype::F64,
                T::F32 => Dtype::F32,
                T::F16 => Dtype::F16,
                T::BF16 => Dtype::BF16,
                T::I64 => Dtype::I64,
                T::I32 => Dtype::I32,
                T::I16 => Dtype::I16,
                T::I8 => Dtype::I8,
                T::U64 => Dtype::U64,
                T::U32 => Dtype::U32,
                T::U16 => Dtype::U16,
                T::U8 => Dtype::U8,
                T::Bool => Dtype::BOOL,
            };
            let data = t.read().map_err(|e| bad(&e))?;
            let want = t
                .shape()
                .iter()
                .try_fold(dtype.bitsize() / 8, |acc, &d| acc.checked_mul(d));
            if want != Some(data.len()) {
                return Err(Error::file(
                    path,
                    format!(
                        "tensor {name:?}: shape {:?} does not match its {} bytes",
                        t.shape(),
                        data.len()
                    ),
                ));
            }
            let start = bytes.len();
            bytes.extend_from_slice(&data);
            index.insert(
                name,
                Entry {
                    file: 0,
                    dtype,
                    shape: t.shape().to_vec(),
                    range: start..bytes.len(),
                },
            );
        }
        Ok(Self {
            files: vec![(path.to_owned(), bytes)],
            index,
            synthetic: None,
        })
    }

    /// The tensor names of a checkpoint file without reading its data: a safetensors header,
    /// or a PyTorch pickle's keys (a Lightning file's `state_dict.` prefix removed).
    ///
    /// # Errors
    /// Unreadable files and headers.
    pub fn keys(path: &Path) -> Result<Vec<String>> {
        let head = files::read_prefix(path, 8).map_err(|e| Error::file(path, e.to_string()))?;
        if Self::looks_like_torch(&head) {
            Self::torch_on_disk(path)?;
            let reader = pytorch_reader::PytorchReader::new(path).map_err(|e| {
                Error::file(path, format!("not a readable PyTorch checkpoint: {e}"))
            })?;
            return Ok(reader
                .keys()
                .iter()
                .map(|k| k.strip_prefix("state_dict.").unwrap_or(k).to_owned())
                .collect());
        }
        let bad = || Error::file(path, "not a safetensors or PyTorch checkpoint");
        let Ok(head) = <[u8; 8]>::try_from(&head[..]) else {
            return Err(bad());
        };
        let len = u64::from_le_bytes(head);
        let size = files::size(path).map_err(|e| Error::file(path, e.to_string()))?;
        if len > size.saturating_sub(8) || len > 100 << 20 {
            return Err(bad());
        }
        let bytes = files::read_prefix(path, 8 + len as usize).map_err(|_| bad())?;
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(bytes.get(8..).ok_or_else(bad)?).map_err(|_| bad())?;
        Ok(map
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k != "__metadata__")
            .collect())
    }

    /// PyTorch files are parsed from disk: one served from memory ([`files::mount`], e.g. in the
    /// browser) is refused with the way out.
    fn torch_on_disk(path: &Path) -> Result<()> {
        if files::is_mounted(path) {
            return Err(Error::file(
                path,
                "a PyTorch checkpoint is read from disk only; convert it to safetensors \
                 (tessera convert IN.pt OUT.safetensors)",
            ));
        }
        Ok(())
    }

    /// Whether `bytes` start like a PyTorch checkpoint (a ZIP archive, or a pickle stream as the
    /// legacy format writes) rather than a safetensors file.
    pub fn looks_like_torch(bytes: &[u8]) -> bool {
        bytes.starts_with(b"PK\x03\x04") || bytes.first() == Some(&0x80)
    }

    /// Opens the given files (shards of one checkpoint): safetensors, or one PyTorch file
    /// (recognised by its content, see [`Self::open_torch`]).
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        if let [one] = paths {
            let head = files::read_prefix(one, 4).map_err(|e| Error::file(one, e))?;
            if Self::looks_like_torch(&head) {
                return Self::open_torch(one);
            }
        }
        let shards = paths
            .iter()
            .map(|p| Ok((p.clone(), files::read(p).map_err(|e| Error::file(p, e))?)))
            .collect::<Result<Vec<_>>>()?;
        Self::from_bytes(shards)
    }

    /// The checkpoint held by these files' bytes (`(name for errors, contents)` per shard).
    /// Every tensor's byte range must lie inside its file and match its shape and dtype.
    pub fn from_bytes(shards: Vec<(PathBuf, Vec<u8>)>) -> Result<Self> {
        let mut files = Vec::new();
        let mut index = BTreeMap::new();
        for (fi, (path, bytes)) in shards.into_iter().enumerate() {
            let path = &path;
            let (n, meta) = SafeTensors::read_metadata(&bytes)
                .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
            let data_start = 8 + n;
            for (name, info) in meta.tensors() {
                let (a, b) = info.data_offsets;
                let range = data_start.saturating_add(a)..data_start.saturating_add(b);
                if range.start > range.end || range.end > bytes.len() {
                    return Err(Error::file(
                        path,
                        format!("tensor {name:?} runs past the end of the file"),
                    ));
                }
                let elems = info
                    .shape
                    .iter()
                    .try_fold(1usize, |acc, &d| acc.checked_mul(d));
                let want = elems.and_then(|e| e.checked_mul(info.dtype.bitsize() / 8));
                if want != Some(range.len()) {
                    return Err(Error::file(
                        path,
                        format!(
                            "tensor {name:?}: shape {:?} of {:?} does not match its {} bytes",
                            info.shape,
                            info.dtype,
                            range.len()
                        ),
                    ));
                }
                index.insert(
                    name,
                    Entry {
                        file: fi,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        range,
                    },
                );
            }
            files.push((path.clone(), bytes));
        }
        Ok(Self {
            files,
            index,
            synthetic: None,
        })
    }

    /// A checkpoint that holds every tensor asked for, filled with seeded random values (norm
    /// weights near 1, biases near 0, other weights uniform in ±1/√fan_in): runs a published
    /// configuration at full size without its multi-gigabyte download.
    pub fn synthetic(seed: u64) -> Self {
        Self {
            files: Vec::new(),
            index: BTreeMap::new(),
            synthetic: Some(seed),
        }
    }

    fn synthetic_values(seed: u64, name: &str, shape: &[usize]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let mut s = name.bytes().fold(seed ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        }) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let normish = name.contains("norm") || leaf == "gamma";
        if leaf == "bias" || leaf == "beta" {
            (0..n).map(|_| 0.02 * next()).collect()
        } else if normish && shape.len() <= 1 {
            (0..n).map(|_| 1.0 + 0.1 * next()).collect()
        } else {
            let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
            let a = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| a * next()).collect()
        }
    }

    /// Where to say a tensor was looked for.
    pub fn describe(&self) -> String {
        if self.synthetic.is_some() {
            return "<synthetic random weights>".into();
        }
        match self.files.as_slice() {
            [(p, _)] => p.display().to_string(),
            _ => self
                .files
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    fn file_of(&self, name: &str) -> String {
        self.index.get(name).map_or_else(
            || self.describe(),
            |e| self.files[e.file].0.display().to_string(),
        )
    }

    pub fn contains(&self, name: &str) -> bool {
        self.synthetic.is_some() || self.index.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Every tensor in safetensors form, dtypes and bytes as stored (what `tessera convert`
    /// writes for a PyTorch checkpoint).
    ///
    /// # Errors
    /// A synthetic checkpoint (nothing stored), or safetensors refusing a tensor.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        if self.synthetic.is_some() {
            return Err(Error::shape(
                "convert",
                "a synthetic checkpoint stores nothing",
            ));
        }
        let views = self
            .index
            .iter()
            .map(|(name, e)| {
                let bytes = &self.files[e.file].1[e.range.clone()];
                safetensors::tensor::TensorView::new(e.dtype, e.shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::shape("convert", e.to_string()))?;
        safetensors::serialize(views, None).map_err(|e| Error::shape("convert", e.to_string()))
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.index.get(name).map(|e| e.shape.as_slice())
    }

    /// Checks presence, shape and dtype of `name` without converting anything.
    pub fn check(&self, name: &str, shape: &[usize]) -> Result<()> {
        if self.synthetic.is_some() {
            return Ok(());
        }
        let e = self.index.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_owned(),
            file: self.describe(),
        })?;
        if e.shape != shape {
            return Err(Error::TensorShape {
                name: name.to_owned(),
                file: self.file_of(name),
                got: e.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        if !matches!(e.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(Error::TensorDType {
                name: name.to_owned(),
                file: self.file_of(name),
                dtype: format!("{:?}", e.dtype),
            });
        }
        Ok(())
    }

    /// The tensor's values: f16 stays f16 when `keep_f16`, everything else becomes f32.
    pub fn values(&self, name: &str, shape: &[usize], keep_f16: bool) -> Result<Values> {
        self.check(name, shape)?;
        if let Some(seed) = self.synthetic {
            let v = Self::synthetic_values(seed, name, shape);
            return Ok(if keep_f16 {
                Values::F16(v.into_iter().map(half::f16::from_f32).collect())
            } else {
                Values::F32(v)
            });
        }
        let e = &self.index[name];
        let bytes = &self.files[e.file].1[e.range.clone()];
        Ok(match e.dtype {
            Dtype::F16 if keep_f16 => Values::F16(bytemuck::pod_collect_to_vec(bytes)),
            Dtype::F16 => Values::F32(
                bytemuck::pod_collect_to_vec::<u8, half::f16>(bytes)
                    .into_iter()
                    .map(f32::from)
                    .collect(),
            ),
            Dtype::BF16 => Values::F32(
                bytemuck::pod_collect_to_vec::<u8, half::bf16>(bytes)
                    .into_iter()
                    .map(f32::from)
                    .collect(),
            ),
            _ => Values::F32(bytemuck::pod_collect_to_vec(bytes)),
        })
    }

    /// The tensor as f32 values.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        match self.values(name, shape, false)? {
            Values::F32(v) => Ok(v),
            Values::F16(_) => unreachable!("keep_f16 is false"),
        }
    }
}

/// The weight files of one model component in `dir`: a sharded safetensors index if present,
/// else the single safetensors file, preferring full precision over the `.fp16` variant; else
/// the PyTorch `.bin` file older diffusers and transformers folders hold.
pub fn component_files(dir: &Path, stems: &[&str]) -> Result<Vec<PathBuf>> {
    for stem in stems {
        for variant in ["", ".fp16"] {
            let idx = dir.join(format!("{stem}{variant}.safetensors.index.json"));
            if files::is_file(&idx) {
                return shard_files(&idx);
            }
            let single = dir.join(format!("{stem}{variant}.safetensors"));
            if files::is_file(&single) {
                return Ok(vec![single]);
            }
        }
    }
    for stem in stems {
        for variant in ["", ".fp16"] {
            let bin = dir.join(format!("{stem}{variant}.bin"));
            if files::is_file(&bin) {
                return Ok(vec![bin]);
            }
        }
    }
    Err(Error::file(
        dir,
        format!(
            "no weights found (looked for {}.safetensors, .fp16.safetensors, sharded index \
             files and .bin)",
            stems.join(".safetensors / ")
        ),
    ))
}

fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let idx: Index = super::read_config(index)?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = idx.weight_map.values().map(|f| dir.join(f)).collect();
    files.sort();
    files.dedup();
    Ok(files)
}
